"""Tests for trainmon_tui.sanitize: terminal control removal and secret masking on real and crafted text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.sanitize import (
    _ANCHORED_RULES,
    _NAME_HINTS,
    MASK,
    _may_hold_secret,
    clean_remote_text,
    make_inert,
    mask_secrets,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Every error sample and every training log (tests/fixtures/logs/errors links to errors/: skip the link).
ALL_FIXTURES = sorted([*(FIXTURES / "errors").glob("*.txt"), *(FIXTURES / "logs").glob("[!e]*/*.txt")])

ESC = "\x1b"
# A made-up key in the format of a W&B API key (40 lower-case hex digits).
FAKE_WANDB_KEY = "3f9a1c2e4b5d6a7f8091a2b3c4d5e6f708192a3b"


def _fixture_lines() -> list[str]:
    lines: list[str] = []
    for path in ALL_FIXTURES:
        with path.open(encoding="utf-8", newline="") as handle:
            text = handle.read()
        for line in text.split("\n"):
            lines.extend(line.split("\r"))
    return lines


def _has_control(text: str) -> bool:
    return any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) <= 0x9F for c in text)


# --- make_inert -------------------------------------------------------------------------------------------


def test_fixture_count_matches_the_corpus_copy() -> None:
    assert len(ALL_FIXTURES) == 82


def test_printable_text_is_returned_as_the_same_object() -> None:
    line = "{'loss': 0.2051, 'grad_norm': nan, 'learning_rate': 9.774074342405685e-06, 'epoch': 0.53}"
    assert make_inert(line) is line
    with_tab = "Epoch: [0][415/1736]\t Loss 0.5844 MAE 0.6568 RMSE 0.7644"
    assert make_inert(with_tab) is with_tab


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"{ESC}[31mred{ESC}[0m plain", "red plain"),
        (f"{ESC}[1;32;40mloss{ESC}[m=1.0", "loss=1.0"),
        (f"{ESC}[?25lhidden cursor{ESC}[?25h", "hidden cursor"),
        (f"{ESC}[?1049halt screen", "alt screen"),
        (f"{ESC}[2J{ESC}[Hcleared", "cleared"),
        (f"{ESC}]0;evil title\x07after", "after"),
        (f"{ESC}]0;evil title{ESC}\\after", "after"),
        (f"{ESC}]52;c;ZWNobyBoaQ==\x07clipboard", "clipboard"),
        (f"{ESC}]8;;https://example.com{ESC}\\link text{ESC}]8;;{ESC}\\", "link text"),
        (f"{ESC}P1$r0m{ESC}\\dcs", "dcs"),
        (f"{ESC}_application program command{ESC}\\apc", "apc"),
        (f"{ESC}^privacy message{ESC}\\pm", "pm"),
        (f"{ESC}Xstart of string{ESC}\\sos", "sos"),
        (f"{ESC}cterminal reset", "terminal reset"),
        (f"{ESC}7saved{ESC}8", "saved"),
        (f"{ESC}(Bcharset", "charset"),
        ("\x9b31m8-bit CSI\x9b0m", "8-bit CSI"),
        ("\x9d0;title\x9cafter 8-bit OSC", "after 8-bit OSC"),
        ("\x90dcs body\x9cafter 8-bit DCS", "after 8-bit DCS"),
        (f"unterminated title {ESC}]0;rest of the line", "unterminated title "),
        (f"lone escape at the end{ESC}", "lone escape at the end"),
        (f"truncated CSI {ESC}[31", "truncated CSI "),
        ("bell\x07 backspace\x08 null\x00 del\x7f", "bell backspace null del"),
        ("carriage\r return and\n newline", "carriage return and newline"),
        ("tab\tstays", "tab\tstays"),
        ("bidi \u202eoverride\u202c and \u2066isolate\u2069", "bidi override and isolate"),
        ("C1 \x85next line \x84index", "C1 next line index"),
    ],
)
def test_control_sequences_are_removed(raw: str, expected: str) -> None:
    assert make_inert(raw) == expected


def test_printable_non_ascii_is_kept() -> None:
    # tqdm block characters, CJK, an NBSP and a curly quote are text, not control.
    line = "错误信息：Loading 57%|█████▋ | 4/7 couldn‘t\u00a0x"
    assert make_inert(line) == line


def test_every_corpus_line_is_unchanged_apart_from_its_own_control_characters() -> None:
    for line in _fixture_lines():
        inert = make_inert(line)
        assert not _has_control(inert)
        if not _has_control(line):
            assert inert == line


@given(st.text())
def test_make_inert_never_leaves_control_characters(text: str) -> None:
    result = make_inert(text)
    assert ESC not in result
    assert not _has_control(result)


@given(
    st.lists(
        st.sampled_from([ESC, "[", "]", "\x07", "\\", "P", "_", "0;", "?25", "m", "\x9b", "\x9c", "a", "\t"])
    )
)
def test_make_inert_handles_escape_fragments(parts: list[str]) -> None:
    result = make_inert("".join(parts))
    assert not _has_control(result)
    assert make_inert(result) == result


# --- mask_secrets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"export WANDB_API_KEY={FAKE_WANDB_KEY}", "export WANDB_API_KEY=***"),
        (f"wandb login {FAKE_WANDB_KEY}", "wandb login ***"),
        (f"wandb login --relogin {FAKE_WANDB_KEY}", "wandb login --relogin ***"),
        (f"wandb.login(key='{FAKE_WANDB_KEY}')", "wandb.login(key='***')"),
        (
            f"machine api.wandb.ai login user password {FAKE_WANDB_KEY}",
            "machine api.wandb.ai login user password ***",
        ),
        ("login with hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345 done", "login with hf_*** done"),
        ("HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345 python train.py", "HF_TOKEN=*** python train.py"),
        ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "aws_access_key_id = AKIA***"),
        ("using ASIAY34FZKBOKMUTVV7A for the session", "using ASIA*** for the session"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = ***"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY=***"),
        (
            "clone https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/x/y",
            "clone https://ghp_***@github.com/x/y",
        ),
        ("GH token gho_abcdefghijklmnopqrstuvwxyz0123456789", "GH token gho_***"),
        ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "pat github_pat_***"),
        ("OPENAI_API_KEY='sk-proj-abcdefghijklmnopqrstuvwxyz0123'", "OPENAI_API_KEY='***'"),
        ("client = OpenAI(api_key=sk-abcdefghijklmnopqrstuvwxyz012345)", "client = OpenAI(api_key=***)"),
        ("using sk-abcdefghijklmnopqrstuvwxyz012345 now", "using sk-*** now"),
        ("slack xoxb-123456789012-1234567890123-abcdefghijklmn", "slack xoxb-***"),
        (
            "curl -H 'Authorization: Bearer abcdefghijklmnop.qrstu' http://x",
            "curl -H 'Authorization: Bearer ***' http://x",
        ),
        ('curl -H "authorization: token abc123def"', 'curl -H "authorization: token ***"'),
        ("header bearer abcdefghijkl0123", "header bearer ***"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8",
            "jwt eyJ***",
        ),
        ("git clone https://user:s3cr3t@github.com/x/y", "git clone https://user:***@github.com/x/y"),
        ("postgres://admin:hunter2@db:5432/runs", "postgres://admin:***@db:5432/runs"),
        ("{'api_key': 'abc123', 'password': \"pa ss\"}", "{'api_key': '***', 'password': \"***\"}"),
        ('{"hf_token": "abc", "secret": "x y"}', '{"hf_token": "***", "secret": "***"}'),
        ("train.py --password hunter2 --epochs 3", "train.py --password *** --epochs 3"),
        (
            "train.py --hf_token=abc --hf-token abc --api-key abc",
            "train.py --hf_token=*** --hf-token *** --api-key ***",
        ),
        ("db passwd: foo", "db passwd: ***"),
        ("db_password = foo bar", "db_password = *** bar"),
        ("MY_SERVICE_TOKEN=abc.def", "MY_SERVICE_TOKEN=***"),
        ("token: abc123", "token: ***"),
        ('password: "unclosed value', "password: ***"),
    ],
)
def test_secrets_are_masked_and_the_rest_kept(raw: str, expected: str) -> None:
    assert mask_secrets(raw) == expected


def test_a_wandb_key_pasted_into_a_status_report_is_masked() -> None:
    # The line shape of /work/shared/seeds/004 (a DDP status report that once carried the key itself).
    leaked = f"- Key: `{FAKE_WANDB_KEY}`"
    assert mask_secrets(leaked) == "- Key: `***`"
    assert FAKE_WANDB_KEY not in clean_remote_text(f"{ESC}[1m{leaked}{ESC}[0m")
    # The rest of that report holds no secret and must come through untouched.
    for line in (
        "- Successfully added your W&B API key to Kubernetes secret `hybrid-llm-secrets`",
        "kubectl logs -n ucsdfutures pure-transformer-8xa100-0-z9bkn -c trainer --tail=100 -f",
        "PYTORCH_CUDA_ALLOC_CONF: max_split_size_mb:512  # Optimize memory allocator",
        "- URL: https://wandb.ai/your-username/pure-transformer",
    ):
        assert mask_secrets(line) == line


@pytest.mark.parametrize(
    "line",
    [
        # Training metrics and settings that look a little like secrets but are not.
        "step: 14  loss:  3.24405  grad_norm:  0.8319  memory:  9.46GiB(64.99%)  tps: 7,282  tflops: 0.52",
        " iteration     5426/  250000 | consumed tokens:     88899584 | grad norm: nan ",
        "tokens/sec: 12345 num_tokens=5 tokens_per_sec=99 max_new_tokens: 128",
        "eos_token: </s> pad_token=<pad> bos_token_id=1 tokenizer: LlamaTokenizerFast",
        "KeyboardInterrupt",
        "keys: ['loss', 'lr'] monkey=1 keyword=x",
        "Found cached dataset at /root/.cache/huggingface/0.0.0/8507c2783eb25157e7dc66e775ad7b20a926da52 (x)",
        "task-abcdefghijklmnopqrstuvwxyz0123 finished",
        "https://huggingface.co/meta-llama/Llama-2-7b-hf/resolve/main/config.json",
        "passed 12 checks, 0 failed",
    ],
)
def test_ordinary_lines_are_not_masked(line: str) -> None:
    assert mask_secrets(line) is line or mask_secrets(line) == line


def test_no_corpus_log_line_is_masked() -> None:
    # None of the real logs and error messages holds a secret; masking must leave every line as it is.
    for line in _fixture_lines():
        assert mask_secrets(line) == line


def test_a_bare_hex_commit_id_without_any_secret_word_is_left() -> None:
    line = "checked out 8507c2783eb25157e7dc66e775ad7b20a926da52"
    assert mask_secrets(line) == line


def test_every_rule_hint_passes_the_pre_check() -> None:
    # The pre-check decides whether the rules run at all; each rule's hint must get through it.
    for hint, _ in _ANCHORED_RULES:
        assert _may_hold_secret(f"x {hint} y"), hint
    for hint in _NAME_HINTS:
        assert _may_hold_secret(f"x {hint}= y"), hint


def test_non_ascii_letters_that_grow_when_lower_cased_do_not_shift_the_mask() -> None:
    # "İ".lower() is two characters; positions found in the lower-cased text must still fit the original.
    assert mask_secrets("İİİ token=abc password=xyz tail") == "İİİ token=*** password=*** tail"


_SECRET_PIECES = st.sampled_from(
    [
        "token",
        "HF_TOKEN",
        "password",
        "--password",
        "api_key",
        "Authorization",
        "Bearer",
        "wandb login",
        "://",
        "user:",
        "@",
        "hf_",
        "ghp_",
        "sk-",
        "xoxb-",
        "eyJ",
        "AKIA",
        "=",
        ": ",
        " ",
        "'",
        '"',
        ",",
        MASK,
        "abcdefghij0123456789",
        "ABCDEFGHIJKLMNOP",
        FAKE_WANDB_KEY,
        "loss=0.5",
    ]
)


@settings(max_examples=300)
@given(st.lists(_SECRET_PIECES | st.text(max_size=8), max_size=14))
def test_masking_is_idempotent(parts: list[str]) -> None:
    once = mask_secrets("".join(parts))
    assert mask_secrets(once) == once


@given(st.text())
def test_mask_secrets_never_raises_and_is_idempotent_on_any_text(text: str) -> None:
    once = mask_secrets(text)
    assert mask_secrets(once) == once


@given(st.text())
def test_clean_remote_text_is_inert(text: str) -> None:
    assert not _has_control(clean_remote_text(text))


def test_clean_remote_text_removes_control_then_masks() -> None:
    raw = f"{ESC}[33mexport HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345{ESC}[0m\r"
    assert clean_remote_text(raw) == "export HF_TOKEN=***"
    # A key split by an escape sequence is joined by make_inert first, then masked.
    split = f"wandb login {FAKE_WANDB_KEY[:20]}{ESC}[0m{FAKE_WANDB_KEY[20:]}"
    assert clean_remote_text(split) == "wandb login ***"
