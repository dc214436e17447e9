"""The contract between the log engine and the per-framework line families, and helpers they share.

A *family* knows one framework's line formats (HF Trainer dicts, Megatron iteration lines, Keras bars ...).
The engine (``engine.py``) cleans each physical line (\\r redraws, ANSI codes, rank/host/glog/timestamp
prefixes) and hands the cleaned text to families; a family returns a :class:`Hit` or None. Families are
instantiated once per log file, so a family may keep state across lines (a Keras ``Epoch 3/10`` header
followed by its bar, an Ultralytics column header followed by value rows).

Speed matters (the engine must read >= 250k lines/s): ``gate`` lets the engine skip a family with a cheap
substring test before any regex runs, and a family may offer ``for_shape`` (:class:`ShapeAwareFamily`) to
be read, for every line of one shape, by a cheaper function than ``parse``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol


@dataclass(slots=True)
class Hit:
    """What a family read from one cleaned line. Fields left None were not on the line."""

    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    total_epochs: int | None = None
    batch: int | None = None
    batches_per_epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    timestamp: float | None = None
    rank: int | None = None

    def is_empty(self) -> bool:
        return (
            self.step is None
            and self.total_steps is None
            and self.epoch is None
            and self.total_epochs is None
            and self.batch is None
            and self.batches_per_epoch is None
            and not self.metrics
        )


class LineFamily(Protocol):
    """One framework's line formats. Instantiated once per file; may keep state between lines."""

    #: Format name reported by parse-log (e.g. "hf_trainer", "megatron", "keras").
    name: ClassVar[str]
    #: Substrings of which at least one must occur in a line for ``parse`` to be worth calling.
    #: An empty tuple means "always call".
    gate: ClassVar[tuple[str, ...]]

    def parse(self, text: str) -> Hit | None:
        """Read one cleaned line; None when the line is not this family's."""
        ...


class ShapeAwareFamily(LineFamily, Protocol):
    """A family that can tell, from one line, a cheaper way to read every line of the same *shape* (the line
    with every ASCII digit masked: lines that differ only in their numbers). The engine calls ``for_shape``
    once per shape whose gate the family passes, and then calls what it returned instead of ``parse``.

    This holds only where no decision of ``parse`` depends on which digits a line holds: its patterns match
    ``\\d``, never a particular digit, and what a value decides (a placeholder value, a NaN) is still decided
    per line by the reader. A family's state (a header read earlier) is read by the reader as it is then.
    """

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A function giving exactly what ``parse`` gives (state changes included) for every line of
        ``text``'s shape; ``parse`` itself when there is nothing to save."""
        ...


_NUMBER_CLEAN = str.maketrans("", "", ",_")


def parse_number(text: str) -> float | None:
    """A number as logs print it: ``1,234.5``, ``1.0E-04``, ``nan``, ``-inf``, ``12%``, ``3.2G`` -> float.

    Returns None when the text is not a number. ``nan``/``inf`` are returned as float NaN/inf because a loss
    that became NaN is exactly what a monitor must show.
    """
    s = text.strip().rstrip("%").translate(_NUMBER_CLEAN)
    if not s:
        return None
    try:
        return float(s)
    except ValueError:
        pass
    low = s.lower()
    if low in ("nan", "-nan", "+nan"):
        return math.nan
    if low in ("inf", "+inf", "infinity", "+infinity"):
        return math.inf
    if low in ("-inf", "-infinity"):
        return -math.inf
    # Memory sizes printed with a unit suffix (Ultralytics "13.1G"): keep the number in the printed unit.
    if low[-1:] in ("g", "m", "k") and low[:-1]:
        try:
            return float(low[:-1])
        except ValueError:
            return None
    return None


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")

# Raw names (after snake_casing) that mean one of the canonical metrics.
_CANONICAL: dict[str, str] = {
    "loss": "loss",
    "train_loss": "loss",
    "training_loss": "loss",
    "lm_loss": "loss",
    "train_loss_step": "loss",
    "loss_step": "loss",
    "train_lm_loss": "loss",
    "val_loss": "val_loss",
    "valid_loss": "val_loss",
    "validation_loss": "val_loss",
    "eval_loss": "val_loss",
    "val_lm_loss": "val_loss",
    "validation_lm_loss": "val_loss",
    "lr": "lr",
    "learning_rate": "lr",
    "train_lr": "lr",
    "grad_norm": "grad_norm",
    "gradnorm": "grad_norm",
    "gnorm": "grad_norm",
    "train_grad_norm": "grad_norm",
    "grad_norm_total": "grad_norm",
}

_name_cache: dict[str, str] = {}


def snake_case(raw: str) -> str:
    """``train/loss_step`` -> ``train_loss_step``; ``learningRate`` -> ``learning_rate``; ``mAP50-95`` ->
    ``m_ap50_95``."""
    s = _CAMEL.sub("_", raw.strip())
    s = _NON_WORD.sub("_", s).strip("_").lower()
    return s or "value"


def canonical_metric_name(raw: str) -> str:
    """The name a metric is stored under: canonical for loss/val_loss/lr/grad_norm, else snake_case.

    Cached: the same few dozen names repeat on every line of a log.
    """
    cached = _name_cache.get(raw)
    if cached is not None:
        return cached
    snake = snake_case(raw)
    name = _CANONICAL.get(snake, snake)
    if len(_name_cache) < 4096:
        _name_cache[raw] = name
    return name


#: (start, end) of a piece of a line, or None where the piece is absent.
Span = tuple[int, int]


def group_span(match: re.Match[str], group: int | str) -> Span | None:
    """Where ``group`` of ``match`` is, None when it took no part: a line of the same shape (its digits
    masked) has it at the same place when the pattern tells no digit from another."""
    start, end = match.span(group)
    return None if start < 0 else (start, end)


def group_spans(match: re.Match[str], groups: range | tuple[int, ...]) -> tuple[Span | None, ...]:
    """:func:`group_span` of each of ``groups``."""
    return tuple(group_span(match, group) for group in groups)


def texts_at(text: str, spans: tuple[Span | None, ...]) -> tuple[str | None, ...]:
    """The pieces of ``text`` at ``spans`` (see :func:`group_spans`), as ``match.groups()`` gives them."""
    return tuple(None if span is None else text[span[0] : span[1]] for span in spans)


_DIGIT_RE = re.compile(r"[0-9]")


def has_digit(text: str) -> bool:
    """Whether ``text`` holds an ASCII digit. A key without one reads the same on every line of a shape, so
    a per-shape reader may name its metric once."""
    return _DIGIT_RE.search(text) is not None


def never_reads(text: str) -> Hit | None:
    """The per-shape reader (see :class:`ShapeAwareFamily`) of a shape none of whose lines a family reads."""
    return None
