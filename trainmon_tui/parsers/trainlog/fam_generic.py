"""Read training lines no framework family claims (custom prints, Ignite, BasicSR); apply the user's patterns.

Shapes handled (one cleaned line each)::

    [basel..][epoch:  1, iter:   1,000, lr:(2.999e-05,)] [eta: 2:37:00, time (data): 2.06 (0.52)] l_mos: 2e-3
    Epoch: [0][415/1736]	 Loss 0.5844 MAE 0.6568 RMSE 0.7644                    (no separator: "Key value")
    epoch=3 step=1200 loss=0.25 lr=1e-4
    Epoch[1] Complete. Time taken: 00:00:07.221                                   (Ignite)
    Engine run starting with max_epochs=1.
    Epoch 14 - Evaluation time (seconds): 7.51 - Vis metrics:                     (opens an indented block)
                abs_rel: 0.08523062198386379
    Validation koniq10k                                                            (BasicSR; opens a block)
             # srcc: 0.9193	Best: 0.9193 @ 800 iter

A line is read only when it names its progress (``epoch``, ``iter``/``iteration``, ``step``/``global_step``,
``batch n/N``), so a number in an arbitrary message ("num decayed parameter tensors: 26") is not taken for a
metric. The exception is an indented ``key: value`` block under a header that announces metrics or a
validation; its lines carry the header's epoch. ``iter``/``step`` give the step, ``epoch`` the epoch as
printed.

:class:`MetricPatterns` applies the user's own regexes (each with a ``(?P<value>...)`` group) to every line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import ClassVar, NamedTuple

from trainmon_tui.parsers.trainlog.base import (
    Hit,
    Span,
    canonical_metric_name,
    group_span,
    has_digit,
)
from trainmon_tui.parsers.trainlog.fam_tqdm import add_metric, to_number

# Bounded so int() never meets a number longer than Python's digit limit.
_INT = r"\d{1,3}(?:,\d{3}){1,4}|\d{1,15}"
_NUMBER = (
    r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,30}(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,3})?|[-+]?(?i:nan|inf)"
)
# Patterns below run on the lower-cased line, each anchored where str.find saw its keyword: a regex search for
# a word costs a try at every position of the line, which is most of a long warning's time.
_EPOCH_RE = re.compile(
    r"epoch\s*([:=\[])?\s*\[?\s*(\d{1,9}(?:\.\d+)?)(?:\s*/\s*(\d{1,9}))?\s*\]?"
    r"(?:\s*\[\s*(\d{1,15})\s*/\s*(\d{1,15})\s*\])?"
)
_STEP_RE = re.compile(
    r"(?:step|iter(?:ation)?)\s*([:=\[])?\s*\[?\s*(" + _INT + r")(?:\s*/\s*(" + _INT + r"))?(?![\d.])"
)
_BATCH_RE = re.compile(r"batch\s*[:=]?\s*\[?\s*(\d{1,15})\s*/\s*(\d{1,15})")
_MAX_EPOCHS_RE = re.compile(r"max_epochs\s*[:=]\s*(\d{1,9})")
_BLOCK_HEADER_RE = re.compile(r"(?:^|:\s)(?:validation|evaluation|eval|test)\b[^:=]*$")
# Patterns below run on the line as printed. A key starts only where a word starts and is never given back
# (possessive "*+"): without both, a long dotted name costs a retry per character, quadratic in its length.
_PAIR_RE = re.compile(
    r"(?<![\w./\-])([A-Za-z_][\w./\-]*+)\s*+[:=]\s*+[(\[]?\s*+(" + _NUMBER + r")(?![\w.:/])"
)
_SPACED_PAIR_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z_]*+)\s++(" + _NUMBER + r")(?![\w.:/])")
_BLOCK_LINE_RE = re.compile(r"\s+#?\s*([A-Za-z_][\w./\-]*+)\s*+[:=]\s*+(" + _NUMBER + r")(?![\w.:/])")
_PROGRESS_KEYS = frozenset(
    {"epoch", "iter", "iteration", "step", "global_step", "batch", "max_epochs", "eta"}
)
_MAX_BLOCK_LINES = 64


def _counter(low: str, words: tuple[str, ...], pattern: re.Pattern[str]) -> re.Match[str] | None:
    """The first match of ``pattern`` at a whole-word occurrence of one of ``words`` (``global_step`` counts
    as ``step``; ``max_epochs`` or ``current_iteration`` do not count)."""
    found: re.Match[str] | None = None
    for word in words:
        at = low.find(word)
        while at >= 0 and (found is None or at < found.start()):
            before = low[at - 1 : at] if at else ""
            whole = not (before.isalnum() or before == "_") or low[max(0, at - 7) : at] == "global_"
            match = pattern.match(low, at) if whole else None
            if match is not None:
                found = match
                break
            at = low.find(word, at + 1)
    return found


def _opens_block(low: str) -> bool:
    """Whether a lower-cased line announces an indented block of metrics under it."""
    if low[-1:] == ":" and low.endswith(("metrics:", "metric:", "results:")):
        return True
    return ("valid" in low or "eval" in low or "test" in low) and _BLOCK_HEADER_RE.search(low) is not None


def _names_progress(low: str) -> bool:
    """Whether a lower-cased line names an epoch, iteration, step or batch."""
    # Spelled out rather than any(...): this runs on every line no family claimed.
    return "epoch" in low or "iter" in low or "step" in low or "batch" in low


class GenericFamily:
    """``key: value`` / ``key=value`` lines naming their epoch, iteration or step; indented metric blocks."""

    name: ClassVar[str] = "generic"
    # Called for every line no other family claimed: a block's lines carry no keyword to gate on.
    gate: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._block_left = 0
        self._block_epoch: float | None = None

    def parse(self, text: str) -> Hit | None:
        if self._block_left:
            hit = self._block_line(text)
            if hit is not None:
                return hit
        low = text.lower()
        hit = None
        if _names_progress(low):
            hit = self._progress_line(text, low)
        elif "max_epochs" in low:
            total = _counter(low, ("max_epochs",), _MAX_EPOCHS_RE)
            if total is not None:
                hit = Hit(total_epochs=int(total[1]))
        if _opens_block(low):
            self._block_left = _MAX_BLOCK_LINES
            self._block_epoch = None if hit is None else hit.epoch
            return hit or Hit()
        return hit

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """What to call for every line of ``text``'s shape (its digits masked): a reader of the progress
        line's counters and pairs where they are in ``text`` (see _ProgressPlan), or for a line that opens
        no block and reads as nothing (it names no progress, or only in a sentence: "traces at step 200"),
        only the check for an open block's line, which is all that ``parse`` can find in it. Whether a line
        opens a block tells no digit from another either."""
        low = text.lower()
        opens_block = _opens_block(low)
        plan = _progress_plan(text, low) if _names_progress(low) else None
        if plan is not None:
            return partial(self._read_shape, plan, opens_block)
        return self.parse if opens_block else self._block_line_only

    def quiet_for_shape(self, text: str) -> Callable[[], bool] | None:
        """For a shape ``for_shape`` reads only as an open block's line (see base.QuietFamily): whether no
        block is open, when such a line reads as nothing and changes nothing."""
        low = text.lower()
        if _opens_block(low) or (_names_progress(low) and _progress_plan(text, low) is not None):
            return None
        return self._quiet

    def _quiet(self) -> bool:
        return not self._block_left

    def _block_line_only(self, text: str) -> Hit | None:
        return self._block_line(text) if self._block_left else None

    def _block_line(self, text: str) -> Hit | None:
        line = _BLOCK_LINE_RE.match(text)
        if line is None:
            self._block_left = 0
            return None
        self._block_left -= 1
        value = to_number(line[2])
        if value is None:
            return Hit()
        metrics: dict[str, float] = {}
        add_metric(metrics, line[1], value)
        return Hit(epoch=self._block_epoch, metrics=metrics)

    @staticmethod
    def _progress_line(text: str, low: str) -> Hit | None:
        plan = _progress_plan(text, low)
        return None if plan is None else _read_progress(plan, text)

    def _read_shape(self, plan: _ProgressPlan, opens_block: bool, text: str) -> Hit | None:
        """What parse reads from a line of the shape ``plan`` was made for (see for_shape)."""
        if self._block_left:
            hit = self._block_line(text)
            if hit is not None:
                return hit
        hit = _read_progress(plan, text)
        if opens_block:
            self._block_left = _MAX_BLOCK_LINES
            self._block_epoch = hit.epoch
        return hit


#: Where a pair's key and value are in a line (key start, key end, value start, value end), and the key
#: itself where it holds no digit (it then reads the same on every line of the shape).
_PairAt = tuple[int, int, int, int, str | None]


class _ProgressPlan(NamedTuple):
    """Where ``_progress_line`` reads its counters (in the lower-cased line) and its metrics' pairs (in the
    line as printed), the same places on every line of one shape: no pattern or test there tells one digit
    from another, and every number its patterns match reads as one."""

    #: Epoch, total epochs, batch and batches per epoch of "epoch 3/10 [20/500]".
    epoch: tuple[Span, Span | None, Span | None, Span | None] | None
    #: Step and total steps.
    step: tuple[Span, Span | None] | None
    #: Batch and batches per epoch of "batch 20/500" (when the epoch gave none).
    batch: tuple[Span, Span] | None
    #: max_epochs.
    total_epochs: Span | None
    pairs: tuple[_PairAt, ...]
    #: Whether lower-casing changes where things are (a character that lower-cases to two): the counters are
    #: then read in the lower-cased line.
    lowered: bool


def _progress_plan(text: str, low: str) -> _ProgressPlan | None:
    """Where a line naming its progress has what it reads (``low``: ``text.lower()``); None when it reads
    nothing."""
    epoch = _counter(low, ("epoch",), _EPOCH_RE) if "epoch" in low else None
    step = _counter(low, ("step", "iter"), _STEP_RE)
    batch = None
    if epoch is None or epoch.start(4) < 0:
        batch = _counter(low, ("batch",), _BATCH_RE) if "batch" in low else None
    total = _counter(low, ("max_epochs",), _MAX_EPOCHS_RE) if "max_epochs" in low else None
    if epoch is None and step is None and batch is None and total is None:
        return None
    # "epoch: 3", "Epoch[1]", "iter 5/100" are counters; "traces at step 200" is a sentence.
    counters = (epoch is not None and (epoch[1] is not None or epoch[3] is not None)) or (
        step is not None and (step[1] is not None or step[3] is not None)
    )
    pairs = _pairs_at(_PAIR_RE.finditer(text))
    if not pairs and counters:
        # Custom prints such as "Loss 0.5844 MAE 0.6568": read what follows the progress counters.
        after = max(epoch.end() if epoch else 0, step.end() if step else 0)
        pairs = _pairs_at(_SPACED_PAIR_RE.finditer(text, after))
    if not pairs and not counters and total is None and not _opens_block(low):
        # Only an epoch named in a header ("Epoch 14 - Evaluation ... metrics:") is worth keeping.
        return None
    return _ProgressPlan(
        None
        if epoch is None
        else (epoch.span(2), group_span(epoch, 3), group_span(epoch, 4), group_span(epoch, 5)),
        None if step is None else (step.span(2), group_span(step, 3)),
        None if batch is None else (batch.span(1), batch.span(2)),
        None if total is None else total.span(1),
        pairs,
        len(low) != len(text),
    )


def _pairs_at(matches: Iterator[re.Match[str]]) -> tuple[_PairAt, ...]:
    """The pairs of ``matches`` (key, value) that name no progress. (Each value is a number its pattern
    matched, which ``to_number`` reads on every line.)"""
    pairs: list[_PairAt] = []
    for match in matches:
        key = match[1]
        if key.lower() not in _PROGRESS_KEYS:
            pairs.append((*match.span(1), *match.span(2), None if has_digit(key) else key))
    return tuple(pairs)


def _read_progress(plan: _ProgressPlan, text: str) -> Hit:
    """What ``_progress_line`` reads from a line of the shape ``plan`` was made for."""
    low = text.lower() if plan.lowered else text
    hit = Hit()
    if plan.epoch is not None:
        epoch, total_epochs, batch, batches = plan.epoch
        hit.epoch = float(low[epoch[0] : epoch[1]])
        hit.total_epochs = _count_at(low, total_epochs)
        hit.batch = _count_at(low, batch)
        hit.batches_per_epoch = _count_at(low, batches)
    if plan.step is not None:
        hit.step = _count_at(low, plan.step[0])
        hit.total_steps = _count_at(low, plan.step[1])
    if plan.batch is not None:
        hit.batch = _count_at(low, plan.batch[0])
        hit.batches_per_epoch = _count_at(low, plan.batch[1])
    if plan.total_epochs is not None:
        hit.total_epochs = _count_at(low, plan.total_epochs)
    metrics = hit.metrics
    for key_at, key_end, value_at, value_end, key in plan.pairs:
        value = to_number(text[value_at:value_end])
        if value is not None:
            add_metric(metrics, key or text[key_at:key_end], value)
    return hit


def _count_at(text: str, span: Span | None) -> int | None:
    return None if span is None else int(text[span[0] : span[1]].replace(",", ""))


class MetricPatterns:
    """The user's ``metrics`` patterns: (name, regex with a ``(?P<value>...)`` group), tried on every line."""

    def __init__(self, patterns: Sequence[tuple[str, str]]) -> None:
        compiled: list[tuple[str, re.Pattern[str]]] = []
        for name, regex in patterns:
            try:
                pattern = re.compile(regex)
            except re.error as exc:
                raise ValueError(f"metric {name!r}: invalid regex: {exc}") from None
            if "value" not in pattern.groupindex:
                raise ValueError(f"metric {name!r}: the regex needs a (?P<value>...) group")
            compiled.append((canonical_metric_name(name), pattern))
        self._patterns = tuple(compiled)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def read(self, text: str) -> dict[str, float]:
        """The user's metrics found on one cleaned line (empty when none matched)."""
        found: dict[str, float] = {}
        for name, pattern in self._patterns:
            match = pattern.search(text)
            if match is None:
                continue
            raw = match.group("value")
            value = None if raw is None else to_number(raw)
            if value is not None:
                found[name] = value
        return found


FAMILIES = (GenericFamily,)
