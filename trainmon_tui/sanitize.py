"""Make text that came from a remote host safe to show or store: no terminal control, no secrets.

Every layer that displays, logs or writes remote text passes it through :func:`clean_remote_text`.
:func:`make_inert` removes anything that could drive a terminal (escape sequences, C0/C1 controls);
:func:`mask_secrets` replaces credentials (API keys, tokens, passwords) with ``***`` and leaves the rest of
the line as it was. Both functions are pure, standard library only, and return their input unchanged (the
same object) when there is nothing to do, which is the common case and the fast path.
"""

from __future__ import annotations

import re

# Marker that replaces a secret value. Must not itself look like a secret, so masking is idempotent.
MASK = "***"

# --- terminal control -------------------------------------------------------------------------------------

# Escape sequences, longest forms first. String-type sequences (OSC, DCS, SOS, PM, APC) run to their string
# terminator (BEL for OSC, ESC \ or the 8-bit ST for all); an unterminated one swallows the rest of the text,
# because a terminal would too. The final alternatives catch a lone or malformed introducer.
_ESCAPE_SEQUENCE = re.compile(
    r"""
      (?:\x1b\]|\x9d) .*? (?:\x07|\x1b\\|\x9c|\Z)           # OSC: titles, ESC]52 clipboard, ESC]8 links
    | (?:\x1b[PX^_]|[\x90\x98\x9e\x9f]) .*? (?:\x1b\\|\x9c|\Z)  # DCS, SOS, PM, APC
    | (?:\x1b\[|\x9b) [0-?]* [\x20-/]* [@-~]?               # CSI incl. private modes; final byte optional
    | \x1b [\x20-/]* [0-~]?                                  # two-byte (and nF) escapes, or a lone ESC
    """,
    re.VERBOSE | re.DOTALL,
)

# Control characters left after sequences are gone: C0 except TAB, DEL, C1, and the Unicode bidirectional
# embedding/override/isolate controls, which can make a line display in an order other than its content.
_CONTROL_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


# 8-bit introducers of CSI, OSC, DCS, SOS, PM and APC.
_HAS_C1_INTRODUCER = re.compile("[\x90\x98\x9b\x9d\x9e\x9f]")


def make_inert(text: str) -> str:
    """Remove terminal escape sequences and control characters (TAB is kept; CR and LF are dropped)."""
    # isprintable() is a single C pass; almost every log line is printable and leaves here untouched.
    if text.isprintable():
        return text
    if "\t" in text and text.replace("\t", " ").isprintable():
        return text
    if "\x1b" in text or _HAS_C1_INTRODUCER.search(text) is not None:
        text = _ESCAPE_SEQUENCE.sub("", text)
    return _CONTROL_CHAR.sub("", text)


# --- secrets ----------------------------------------------------------------------------------------------
#
# Masking is driven by hints: lower-case substrings that every kind of secret needs nearby (a name such as
# "token", a provider prefix such as "hf_", a URL's "://"). A line without any hint is returned as it is
# after a few substring scans. Where a hint occurs, one regular expression is matched *anchored* at that
# place, which stays cheap however long the line is; unanchored searches over whole lines were orders of
# magnitude slower.

# Names whose value is a credential, matched case-insensitively as a whole word. The list is closed on
# purpose for tokens and keys: tokenizer settings (``eos_token``), counters (``tokens``, ``num_tokens``) and
# metrics stay visible. Anything named a password or a secret (``db_password``) is one.
_SECRET_NAME = r"""(?i:
      (?:(?:hf|hub|huggingface|access|auth|api|bearer|refresh|id|session|github|gh|gitlab|wandb|slack|bot
          |personal|oauth|private|client|app)[_-]?)?token
    | (?:[a-z0-9]+[_-])*(?:pass(?:word|wd|phrase)|secret(?:[_-]?(?:access[_-]?)?key)?)
    | (?:api|access|private|wandb[_-]?api|openai[_-]?api|aws[_-]?access)[_-]?key
    | apikey
)"""
# Environment-variable style names (WANDB_API_KEY, HF_TOKEN, MY_SERVICE_PASSWORD); case-sensitive.
_ENV_SECRET_NAME = r"[A-Z][A-Z0-9_]*_(?:TOKEN|KEY|SECRET|PASSWORD|PASSWD|PASS|APIKEY)"
# A quoted value keeps its quotes around the mask (an unclosed quote runs to the end of the line); a bare
# value ends at whitespace, a separator or a closing bracket (``f(api_key=abc)``, ``{'token': abc}``).
_VALUE = r"""(?P<value>"[^"]*"?|'[^']*'?|[^\s"',;)\]}]+)"""

# ``name: value``, ``name=value``, ``"name": "value"``, ``--name value``, ``--name=value``; anchored at the
# start of the word holding the name.
_NAMED_VALUE = re.compile(
    rf"""(?P<flag>--?)?(?:{_SECRET_NAME}|{_ENV_SECRET_NAME})(?![\w-])
         (?(flag)(?:\s*=\s*|\s+)|["']?\s*[:=]\s*){_VALUE}""",
    re.VERBOSE,
)
_NAME_HINTS = ("token", "secret", "password", "passwd", "passphrase", "key", "_pass")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

# Other rules, each anchored where its hint starts.
_ANCHORED_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # scheme://user:password@host
    ("://", re.compile(r"://[^\s/:@]*:(?P<value>[^\s/@]+)@")),
    (
        "authoriz",
        re.compile(
            r"""(?i:authorization)["']?\s*[:=]\s*["']?"""
            r"""(?:(?i:bearer|basic|token|digest)\s+)?(?P<value>[^\s"',;]+)"""
        ),
    ),
    ("bearer", re.compile(r"(?i:bearer)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})")),
    ("wandb", re.compile(r"wandb\s+login\s+(?:--?\w[\w-]*\s+)*(?P<value>[\w-]{20,})")),
    # Provider token formats: the provider prefix stays as a hint, the rest goes.
    ("hf_", re.compile(r"hf_(?P<value>[A-Za-z0-9]{20,})")),
    ("ghp_", re.compile(r"ghp_(?P<value>[A-Za-z0-9]{20,})")),
    ("gho_", re.compile(r"gho_(?P<value>[A-Za-z0-9]{20,})")),
    ("ghu_", re.compile(r"ghu_(?P<value>[A-Za-z0-9]{20,})")),
    ("ghs_", re.compile(r"ghs_(?P<value>[A-Za-z0-9]{20,})")),
    ("ghr_", re.compile(r"ghr_(?P<value>[A-Za-z0-9]{20,})")),
    ("github_pat_", re.compile(r"github_pat_(?P<value>[A-Za-z0-9_]{20,})")),
    ("sk-", re.compile(r"sk-(?P<value>(?:[A-Za-z0-9]+-)?[A-Za-z0-9_-]{20,})")),
    ("xox", re.compile(r"xox[abeoprs]-(?P<value>[A-Za-z0-9-]{10,})")),
    ("eyj", re.compile(r"eyJ(?P<value>[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)")),
    # AWS access key ids: long-term (AKIA) and temporary (ASIA).
    ("akia", re.compile(r"AKIA(?P<value>[A-Z0-9]{16})(?![A-Za-z0-9])")),
    ("asia", re.compile(r"ASIA(?P<value>[A-Z0-9]{16})(?![A-Za-z0-9])")),
)
# Rules whose hint must start a word: "hf_" inside "pdhf_x", "sk-" inside "task-abc" are not tokens.
_WORD_START_HINTS = frozenset(hint for hint, _ in _ANCHORED_RULES if hint[0].isalpha())

# The pre-check: at least one of these substrings occurs wherever any rule above can match. A hint with a
# rare letter is looked for only when that letter occurs (a one-character test is memchr-fast), which makes
# the check about three times cheaper than testing every hint. "token" and "key" count only when no letter
# follows, so "tokens/s", "tokenizer" and "KeyboardInterrupt" do not pass.
_GATE_HINTS_BY_LETTER = (
    ("k", ("sk-", "akia")),
    ("z", ("authoriz",)),
    ("j", ("eyj",)),
    ("x", ("xox",)),
    ("w", ("wandb",)),
)
_GATE_HINTS = ("secret", "pass", "://", "bearer", "hf_", "asia", "github_pat_")
_GATE_WORD_HINTS = ("token", "key")
_GITHUB_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")


def _may_hold_secret(lowered: str) -> bool:
    """Whether the lower-cased line has any hint of a secret (false for nearly every log line)."""
    for letter, hints in _GATE_HINTS_BY_LETTER:
        if letter in lowered:
            for hint in hints:
                if hint in lowered:
                    return True
    for hint in _GATE_HINTS:
        if hint in lowered:
            return True
    if "k" in lowered:
        for hint in _GATE_WORD_HINTS:
            at = lowered.find(hint)
            while at >= 0:
                end = at + len(hint)
                if end == len(lowered) or lowered[end] not in _LETTERS:
                    return True
                at = lowered.find(hint, end)
    return "gh" in lowered and any(prefix in lowered for prefix in _GITHUB_PREFIXES)


# A bare 40-hex word is what a W&B API key looks like. It is masked only on a line that has a hint (a key,
# token or wandb line, "Key: `...`" in a pasted report): alone it cannot be told from a git commit id. Hex
# inside a path (a commit id in a cache directory) is never masked: it is bounded by '/' there.
_HEX40 = re.compile(r"(?<![\w/.-])[0-9a-f]{40}(?![\w/.-])")

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _spans_to_mask(text: str, lowered: str) -> list[tuple[int, int]]:
    """(start, end) of every secret value in ``text``, sorted and without overlaps."""
    spans: list[tuple[int, int]] = []
    for hint in _NAME_HINTS:
        at = lowered.find(hint)
        while at >= 0:
            start = at
            while start > 0 and text[start - 1] in _NAME_CHARS:
                start -= 1
            match = _NAMED_VALUE.match(text, start)
            if match is not None:
                spans.append(match.span("value"))
            at = lowered.find(hint, at + len(hint))
    for hint, rule in _ANCHORED_RULES:
        at = lowered.find(hint)
        while at >= 0:
            if (
                hint not in _WORD_START_HINTS
                or at == 0
                or not (text[at - 1].isalnum() or text[at - 1] == "_")
            ):
                match = rule.match(text, at)
                if match is not None:
                    spans.append(match.span("value"))
            at = lowered.find(hint, at + len(hint))
    spans.sort(key=lambda span: (span[0], -span[1]))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            continue
        merged.append((start, end))
    return merged


def _masked(value: str) -> str:
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[0] + MASK + value[0]
    return MASK


def mask_secrets(text: str) -> str:
    """Replace credential values in ``text`` with ``***``, keeping names, provider prefixes and the rest."""
    lowered = text.lower()
    if len(lowered) != len(text):
        # A few non-ASCII letters lower-case to two characters; positions must match the original.
        lowered = text.translate(_ASCII_LOWER)
    if not _may_hold_secret(lowered):
        return text
    spans = _spans_to_mask(text, lowered)
    if spans:
        pieces: list[str] = []
        done = 0
        for start, end in spans:
            pieces.append(text[done:start])
            pieces.append(_masked(text[start:end]))
            done = end
        pieces.append(text[done:])
        text = "".join(pieces)
    return _HEX40.sub(MASK, text)


def clean_remote_text(text: str) -> str:
    """Text from a host, ready to display or store: :func:`make_inert`, then :func:`mask_secrets`."""
    return mask_secrets(make_inert(text))
