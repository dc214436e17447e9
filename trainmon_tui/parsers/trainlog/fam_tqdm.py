"""Read bare tqdm progress bars (step n of total, postfix metrics); hold the bar reader other families share.

Shapes handled (one bar state each; the engine has already split ``\\r`` redraws)::

     45%|####5     | 450/1000 [01:02<01:10,  7.20it/s, loss=0.31]
      8%|███▍      | 1999/24128 [1:52:09<20:27:23,  3.33s/it]
    Training:  12%|█▏        | 120/1000 [2 days, 01:02:03<14:02:11, 1.20s/it]
    100%██████████████████| 3000001/3000001 [03:33<00:00, 14061.26it/s]
    Epoch 0:  97% 1651/1702 [13:00<00:24,  2.11it/s, loss=0.158]            (no bar glyphs, as in notebooks)

Not every bar is the training loop. A bar counting something other than iterations (``examples/s``,
``image/s``) or named for another job (``Map``, ``Loading checkpoint shards``, ``Test``, ``Evaluating``) is
claimed but gives no record. HF Trainer's evaluation bar has no name: while the training bar is unfinished,
a bar with a smaller total is taken for such a nested loop and ignored too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import partial
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import (
    Hit,
    Span,
    canonical_metric_name,
    has_digit,
    never_reads,
    parse_number,
    snake_case,
)

# The percentage, the bar (|glyphs|, glyphs| when the left pipe was overwritten, or nothing), then n/total and
# the bracketed [elapsed<remaining, rate, postfix] (possibly cut off at the end of a truncated line).
BAR_RE = re.compile(r"(\d{1,3})%(?:\|[^|]*\||[^|\s\d]*\||\s)\s*(\d{1,15})/(\d{1,15})(?:\s*\[([^\]]*)\]?)?")
# "7.20it/s", "?it/s", "3.33s/it", "5349.52 examples/s", "1.30s/image": the unit the bar counts.
_RATE_RE = re.compile(r"\s*(?:[\d.]+|\?)\s*(?:s/(\w+)|(\w+)/s)\s*$")
# Bar names that mark a loop other than training (data preparation, evaluation, I/O).
_OTHER_LOOP_WORDS = (
    "map",
    "load",
    "download",
    "upload",
    "token",
    "filter",
    "generat",
    "eval",
    "valid",
    "test",
    "predict",
    "infer",
    "sampl",
    "shard",
    "convert",
    "process",
    "sav",
    "writ",
    "extract",
    "prepar",
    "build",
    "compil",
    "sanity",
)
_STEP_KEYS = frozenset({"step", "global_step"})
# Postfix keys that are not metrics: Lightning's logger version, and progress echoed as a postfix.
_NOT_METRICS = frozenset({"v_num"}) | _STEP_KEYS


def last_bar(text: str) -> re.Match[str] | None:
    """The last bar state on the line: tqdm redraws that lost their ``\\r`` pile up left to right."""
    match = BAR_RE.search(text)
    if match is None:
        return None
    later = BAR_RE.search(text, match.end())
    while later is not None:
        match = later
        later = BAR_RE.search(text, match.end())
    return match


def bar_unit(inner: str | None) -> str | None:
    """The unit of a bar's rate (``it`` for iterations); None when the bracket shows no rate."""
    if not inner:
        return None
    parts = inner.split(",")
    if len(parts) < 2:
        return None
    match = _RATE_RE.match(parts[1])
    if match is None:
        return None
    return match[1] or match[2]


def read_postfix(inner: str | None, metrics: dict[str, float]) -> int | None:
    """Add the ``key=value`` postfix of a bar's bracket to ``metrics``; returns a ``global_step`` if shown."""
    if not inner:
        return None
    first = inner.find("=")
    if first < 0:
        return None
    step: int | None = None
    names = METRIC_NAMES
    # Start at the pair holding the first "=": what comes before it is the elapsed time and the rate.
    for pair in inner[inner.rfind(",", 0, first) + 1 :].split(","):
        key, sep, raw = pair.partition("=")
        if not sep:
            continue
        key = key.strip()
        if key in _NOT_METRICS:
            if key in _STEP_KEYS:
                # NeMo prints global_step=3.2e+4: a float spelling of an integer step.
                number = to_number(raw)
                step = None if number is None else to_int(number)
            continue
        try:
            value = float(raw)
        except ValueError:
            parsed = parse_number(raw)
            if parsed is None:
                continue
            value = parsed
        name = names.get(key) or metric_name(key)
        if name in metrics:
            name = own_name(key)
        metrics[name] = value
    return step


def postfix_spans(inner: str, inner_at: int) -> PairSpans:
    """Where :func:`read_postfix` finds the pairs of a bar's bracket ``inner`` that starts at ``inner_at``."""
    first = inner.find("=")
    if first < 0:
        return ()
    start = inner.rfind(",", 0, first) + 1
    parts, starts = split_starts(inner, start, ",")
    return pair_spans(parts, [inner_at + at for at in starts], "=")


def read_postfix_spans(text: str, spans: PairSpans, metrics: dict[str, float]) -> int | None:
    """What :func:`read_postfix` reads from the postfix pairs at ``spans`` (see :func:`postfix_spans`)."""
    step: int | None = None
    names = METRIC_NAMES
    for key_at, key_end, raw_at, raw_end, fixed in spans:
        if fixed is None:
            key = text[key_at:key_end]
            name = ""
        else:
            key, name = fixed
        raw = text[raw_at:raw_end]
        if key in _NOT_METRICS:
            if key in _STEP_KEYS:
                number = to_number(raw)
                step = None if number is None else to_int(number)
            continue
        try:
            value = float(raw)
        except ValueError:
            parsed = parse_number(raw)
            if parsed is None:
                continue
            value = parsed
        if not name:
            name = names.get(key) or metric_name(key)
        if name in metrics:
            name = own_name(key)
        metrics[name] = value
    return step


def to_number(raw: str) -> float | None:
    """A printed value as float; the fast path is plain ``float`` (which also reads nan/inf and padding)."""
    try:
        return float(raw)
    except ValueError:
        return parse_number(raw)


def to_int(value: float) -> int | None:
    """A count printed as a float (``3.2e+4``) as int; None for nan/inf and absurd magnitudes."""
    if math.isfinite(value) and abs(value) < 1e15:
        return int(value)
    return None


# Raw metric name -> stored name. canonical_metric_name caches too, but a dict lookup here saves a call per
# value, and logs repeat the same few names on every line.
METRIC_NAMES: dict[str, str] = {}
_MAX_METRIC_NAMES = 4096


def metric_name(raw_name: str) -> str:
    """The canonical name of a raw metric key (``train/loss_step`` -> ``loss``), cached."""
    name = METRIC_NAMES.get(raw_name)
    if name is None:
        name = canonical_metric_name(raw_name)
        if len(METRIC_NAMES) < _MAX_METRIC_NAMES:
            METRIC_NAMES[raw_name] = name
    return name


_OWN_NAMES: dict[str, str] = {}


def own_name(raw_name: str) -> str:
    """A raw metric key in snake_case without the canonical mapping (``train_loss`` stays ``train_loss``)."""
    name = _OWN_NAMES.get(raw_name)
    if name is None:
        name = snake_case(raw_name)
        if len(_OWN_NAMES) < _MAX_METRIC_NAMES:
            _OWN_NAMES[raw_name] = name
    return name


def add_metric(metrics: dict[str, float], raw_name: str, value: float) -> None:
    """Store a metric under its canonical name without letting an alias overwrite an earlier value.

    Lightning shows both ``loss`` (its running mean) and a user-logged ``train_loss``: both mean ``loss``; the
    first keeps the canonical name and the second keeps its own.
    """
    name = METRIC_NAMES.get(raw_name) or metric_name(raw_name)
    if name in metrics:
        name = own_name(raw_name)
    metrics[name] = value


def read_pairs(pairs: list[str], separator: str, metrics: dict[str, float], skip: frozenset[str]) -> None:
    """Add every ``key<separator>number`` item of ``pairs`` to ``metrics``; keys in ``skip`` and values that
    are not numbers are left out."""
    names = METRIC_NAMES
    for pair in pairs:
        key, sep, raw = pair.partition(separator)
        if not sep:
            continue
        key = key.strip()
        if key in skip:
            continue
        try:
            value = float(raw)
        except ValueError:
            parsed = parse_number(raw)
            if parsed is None:
                continue
            value = parsed
        name = names.get(key) or metric_name(key)
        if name in metrics:
            name = own_name(key)
        metrics[name] = value


#: Where :func:`read_pairs` finds each pair's key (stripped) and value in a line: (key start, key end, value
#: start, value end, and for a key without a digit, which reads the same on every line of the shape, the key
#: and its metric name).
PairSpans = tuple[tuple[int, int, int, int, tuple[str, str] | None], ...]


def pair_spans(pairs: list[str], starts: list[int], separator: str) -> PairSpans:
    """Where the keys and values of ``pairs`` (each starting at the position in ``starts``) are, for
    :func:`read_pair_spans` to read every line of the same shape; pairs without ``separator`` are left out."""
    spans: list[tuple[int, int, int, int, tuple[str, str] | None]] = []
    for pair, at in zip(pairs, starts, strict=True):
        key, sep, _ = pair.partition(separator)
        if not sep:
            continue
        stripped = key.strip()
        fixed = None if has_digit(stripped) else (stripped, metric_name(stripped))
        key_at = at + len(key) - len(key.lstrip())
        spans.append((key_at, key_at + len(stripped), at + len(key) + len(sep), at + len(pair), fixed))
    return tuple(spans)


def split_starts(text: str, start: int, separator: str) -> tuple[list[str], list[int]]:
    """``text[start:].split(separator)`` and where each part starts in ``text``."""
    parts = text[start:].split(separator)
    starts: list[int] = []
    for part in parts:
        starts.append(start)
        start += len(part) + len(separator)
    return parts, starts


def read_pair_spans(text: str, spans: PairSpans, metrics: dict[str, float], skip: frozenset[str]) -> None:
    """What :func:`read_pairs` adds to ``metrics`` for the pairs at ``spans`` (see :func:`pair_spans`)."""
    names = METRIC_NAMES
    for key_at, key_end, raw_at, raw_end, fixed in spans:
        if fixed is None:
            key = text[key_at:key_end]
            name = names.get(key) or metric_name(key)
        else:
            key, name = fixed
        if key in skip:
            continue
        raw = text[raw_at:raw_end]
        try:
            value = float(raw)
        except ValueError:
            parsed = parse_number(raw)
            if parsed is None:
                continue
            value = parsed
        if name in metrics:
            name = own_name(key)
        metrics[name] = value


#: (metric name, value start, value end) of each pair a reader stores, for a shape whose keys are fixed (see
#: :func:`fixed_pairs`).
FixedPairs = tuple[tuple[str, int, int], ...]


def fixed_pairs(spans: PairSpans, skip: frozenset[str]) -> FixedPairs | None:
    """For a shape whose pairs (at ``spans``) all have fixed keys, the pairs :func:`read_pair_spans` stores
    (those not in ``skip``) with the names it stores them under on a line where ``float()`` reads every
    value: storing ``float()`` of each value under its name, in order, is then what it does. (Where a value
    is no float literal, the name of a later one may differ: such a line must be read by it.) None when some
    key holds a digit, so that its name may differ per line."""
    pairs: list[tuple[str, int, int]] = []
    stored: set[str] = set()
    for _key_at, _key_end, raw_at, raw_end, fixed in spans:
        if fixed is None:
            return None
        key, name = fixed
        if key in skip:
            continue
        if name in stored:
            name = own_name(key)
        stored.add(name)
        pairs.append((name, raw_at, raw_end))
    return tuple(pairs)


def fixed_postfix_pairs(spans: PairSpans) -> tuple[FixedPairs, Span | None] | None:
    """:func:`fixed_pairs` for the postfix pairs at ``spans`` as :func:`read_postfix_spans` reads them, and
    where the value it takes the step from is (the last step key's: each one read replaces the step), None
    when the postfix shows no step. On a line where ``float()`` reads every one of those values, the step is
    ``to_int(float(value))``."""
    pairs = fixed_pairs(spans, _NOT_METRICS)
    if pairs is None:
        return None
    step: Span | None = None
    for _key_at, _key_end, raw_at, raw_end, fixed in spans:
        if fixed is not None and fixed[0] in _STEP_KEYS:
            step = (raw_at, raw_end)
    return pairs, step


def is_training_loop(name: str) -> bool:
    """Whether a bar's name (text before the percentage) could be the training loop."""
    if not name:
        return True
    low = name.lower()
    return not any(word in low for word in _OTHER_LOOP_WORDS)


_CLAIMED = Hit()


def _claimed(text: str) -> Hit:
    """The reader of a shape of bars that are not the training loop's: claimed, without a record."""
    return _CLAIMED


class TqdmFamily:
    """Bare tqdm bars: the training loop's ``n/total`` gives step/total_steps, its postfix the metrics."""

    name: ClassVar[str] = "tqdm"
    gate: ClassVar[tuple[str, ...]] = ("%",)

    def __init__(self) -> None:
        # The training bar's total, and how far it has got; other bars are judged against it.
        self._main_total: int | None = None
        self._main_done = 0

    def parse(self, text: str) -> Hit | None:
        bar = last_bar(text)
        if bar is None:
            return None
        previous_end = text.rfind("]", 0, bar.start()) + 1
        name = text[previous_end : bar.start()].strip().rstrip(":").strip()
        inner = bar[4]
        unit = bar_unit(inner)
        if (unit is not None and unit != "it") or not is_training_loop(name):
            return _CLAIMED
        done, total = int(bar[2]), int(bar[3])
        if not self._is_main(done, total):
            return _CLAIMED
        metrics: dict[str, float] = {}
        step = read_postfix(inner, metrics)
        return Hit(step=done if step is None else step, total_steps=total, metrics=metrics)

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the last bar, its name and unit,
        and its counts and postfix pairs sit at the same places on all of them (see parse); whether the bar
        is the training loop's is still judged per line, against the bars read before."""
        bar = last_bar(text)
        if bar is None:
            return never_reads
        previous_end = text.rfind("]", 0, bar.start()) + 1
        name = text[previous_end : bar.start()].strip().rstrip(":").strip()
        unit = bar_unit(bar[4])
        if (unit is not None and unit != "it") or not is_training_loop(name):
            # Another loop's bar, whatever its numbers (a name's digits decide nothing here).
            return _claimed
        postfix = () if bar.start(4) < 0 else postfix_spans(bar[4], bar.start(4))
        return partial(self._read_bar, postfix, bar.span(2), bar.span(3))

    def _read_bar(
        self, postfix: PairSpans, done_span: tuple[int, int], total_span: tuple[int, int], text: str
    ) -> Hit:
        done = int(text[done_span[0] : done_span[1]])
        total = int(text[total_span[0] : total_span[1]])
        if not self._is_main(done, total):
            return _CLAIMED
        metrics: dict[str, float] = {}
        step = read_postfix_spans(text, postfix, metrics)
        return Hit(step=done if step is None else step, total_steps=total, metrics=metrics)

    def _is_main(self, done: int, total: int) -> bool:
        main = self._main_total
        if main is None or total == main or total > main or self._main_done >= main:
            self._main_total = total
            self._main_done = done
            return True
        # A smaller loop inside the unfinished training loop (HF Trainer's unnamed evaluation bar).
        return False


FAMILIES = (TqdmFamily,)
