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
from collections.abc import Callable, Sequence
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit, canonical_metric_name
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


def _count(text: str | None) -> int | None:
    return None if text is None else int(text.replace(",", ""))


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
        # Spelled out rather than any(...): this runs on every line no family claimed.
        if "epoch" in low or "iter" in low or "step" in low or "batch" in low:
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
        """What to call for every line of ``text``'s shape (its digits masked): ``parse``, or for a line that
        names no progress and opens no block, only the check for an open block's line, which is all that
        ``parse`` can find in it. No test here tells one digit from another, so the answer holds for the
        whole shape."""
        low = text.lower()
        if "epoch" in low or "iter" in low or "step" in low or "batch" in low or _opens_block(low):
            return self.parse
        return self._block_line_only

    def quiet_for_shape(self, text: str) -> Callable[[], bool] | None:
        """For a shape ``for_shape`` reads only as an open block's line (see base.QuietFamily): whether no
        block is open, when such a line reads as nothing and changes nothing."""
        low = text.lower()
        if "epoch" in low or "iter" in low or "step" in low or "batch" in low or _opens_block(low):
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
        hit = Hit()
        # "epoch: 3", "Epoch[1]", "iter 5/100" are counters; "traces at step 200" is a sentence.
        counters = False
        epoch = _counter(low, ("epoch",), _EPOCH_RE) if "epoch" in low else None
        if epoch is not None:
            hit.epoch = float(epoch[2])
            hit.total_epochs = _count(epoch[3])
            hit.batch = _count(epoch[4])
            hit.batches_per_epoch = _count(epoch[5])
            counters = epoch[1] is not None or epoch[3] is not None
        step = _counter(low, ("step", "iter"), _STEP_RE)
        if step is not None:
            hit.step = _count(step[2])
            hit.total_steps = _count(step[3])
            counters = counters or step[1] is not None or step[3] is not None
        if hit.batch is None:
            batch = _counter(low, ("batch",), _BATCH_RE) if "batch" in low else None
            if batch is not None:
                hit.batch = int(batch[1])
                hit.batches_per_epoch = int(batch[2])
        total = _counter(low, ("max_epochs",), _MAX_EPOCHS_RE) if "max_epochs" in low else None
        if total is not None:
            hit.total_epochs = int(total[1])
        if hit.is_empty():
            return None
        metrics = hit.metrics
        for key, raw in _PAIR_RE.findall(text):
            if key.lower() in _PROGRESS_KEYS:
                continue
            value = to_number(raw)
            if value is not None:
                add_metric(metrics, key, value)
        if not metrics and counters:
            # Custom prints such as "Loss 0.5844 MAE 0.6568": read what follows the progress counters.
            after = max(epoch.end() if epoch else 0, step.end() if step else 0)
            for key, raw in _SPACED_PAIR_RE.findall(text, after):
                if key.lower() in _PROGRESS_KEYS:
                    continue
                value = to_number(raw)
                if value is not None:
                    add_metric(metrics, key, value)
        if not metrics and not counters and hit.total_epochs is None:
            # Only an epoch named in a header ("Epoch 14 - Evaluation ... metrics:") is worth keeping.
            return hit if _opens_block(low) else None
        return hit


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
