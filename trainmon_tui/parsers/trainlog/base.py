"""The contract between the log engine and the per-framework line families, and helpers they share.

A *family* knows one framework's line formats (HF Trainer dicts, Megatron iteration lines, Keras bars ...).
The engine (``engine.py``) cleans each physical line (\\r redraws, ANSI codes, rank/host/glog/timestamp
prefixes) and hands the cleaned text to families; a family returns a :class:`Hit` or None. Families are
instantiated once per log file, so a family may keep state across lines (a Keras ``Epoch 3/10`` header
followed by its bar, an Ultralytics column header followed by value rows).

Speed matters (the engine must read >= 250k lines/s): ``gate`` lets the engine skip a family with a cheap
substring test before any regex runs, and a family may offer ``for_shape`` (:class:`ShapeAwareFamily`) to
be read, for every line of one shape, by a cheaper function than ``parse``, and, for the commonest shapes, to
read all the lines of one shape in a block column by column (``columns_for_shape``, :class:`ColumnFamily`),
each column sliced and converted by one C-level ``map`` instead of a Python call per line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import ClassVar, NamedTuple, Protocol, overload


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
    """One framework's line formats. Instantiated once per file; may keep state between lines, in its
    attributes and nowhere else, and no caches there (LogParser.resume_state compares them to tell whether two
    parsers read what follows alike)."""

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


class Columns(NamedTuple):
    """What a family read from many lines of one shape at once: what ``Hit``s of those lines would hold,
    column by column. A progress field is a list (one value per line) or one value shared by every line
    (None included); ``values`` holds one list per metric name, in the order the names enter each line's
    metrics dict (as ``parse`` fills it)."""

    step: list[int] | int | None
    total_steps: list[int] | int | None
    epoch: list[float] | float | None
    total_epochs: list[int] | int | None
    batch: list[int] | int | None
    batches_per_epoch: list[int] | int | None
    names: tuple[str, ...]
    values: tuple[Sequence[float], ...]
    #: The timestamps the family reads from the lines themselves (a logger's date inside the text), one per
    #: line (None where a line has none), computed only when asked for; None when it reads none.
    timestamps: Callable[[], list[float | None]] | None = None


#: Reads the lines of one shape (raw lines, the shape's text starting at the given offset in each) column by
#: column; None when some line needs the per-line reader (a value only that reader can spell out).
ColumnReader = Callable[[Sequence[str], int], Columns | None]


class ColumnFamily(ShapeAwareFamily, Protocol):
    """A family that can read every line of some shapes column-wise, a block at a time.

    ``columns_for_shape`` is asked once per shape whose reader (``for_shape``) is the family's; it returns
    None, or a :data:`ColumnReader` that holds to this: for lines of that shape, whatever the family's state
    then, the per-line reader returns a Hit with some progress field or metric (never None, never empty),
    with no ``rank`` (and a ``timestamp`` only as ``Columns.timestamps`` gives it), and neither reads nor
    changes any state of the family; and the
    column reader gives, column by column, exactly what those Hits hold, or None. The engine reads the lines
    of such a shape together at the end of a block, after lines it read one by one that came later.
    """

    def columns_for_shape(self, text: str) -> ColumnReader | None: ...


class QuietFamily(ShapeAwareFamily, Protocol):
    """A family whose per-shape reader for some shapes reads nothing while the family is in a quiet state
    (the generic family outside an indented metrics block). ``quiet_for_shape`` returns, for such a shape, a
    function telling whether the family is quiet now: then the reader returns None and changes nothing for
    every line of that shape, so the engine may pass such lines by without calling it."""

    def quiet_for_shape(self, text: str) -> Callable[[], bool] | None: ...


def int_column(lines: Sequence[str], start: int, span: Span) -> list[int]:
    """``int()`` of the text at ``span`` (relative to ``start``) of every line, in one C-level loop."""
    texts = list(map(itemgetter(slice(start + span[0], start + span[1])), lines))
    # A total (steps, batches per epoch) or a rank is often the same on every line: compared, not read.
    if texts and texts[0] == texts[-1] and texts.count(texts[0]) == len(texts):
        return [int(texts[0])] * len(texts)
    return list(map(int, texts))


def float_column(lines: Sequence[str], start: int, span: Span) -> list[float]:
    """``float()`` of the text at ``span`` (relative to ``start``) of every line; raises ValueError where a
    line's text is no float literal."""
    return list(map(float, map(itemgetter(slice(start + span[0], start + span[1])), lines)))


class LazyFloatColumn(Sequence[float]):
    """``float()`` of the text at a span of every line, each value converted when it is first read, all of
    them when the column is iterated. A consumer that needs a few of a block's values (parse-log's text
    summary takes a block's first and last lines) then converts those few. Made by :func:`lazy_float_column`,
    which makes sure none can fail."""

    __slots__ = ("_lines", "_slice", "_values")

    def __init__(self, lines: Sequence[str], start: int, span: Span) -> None:
        self._lines = lines
        self._slice = slice(start + span[0], start + span[1])
        self._values: list[float] | None = None

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> list[float]: ...

    def __getitem__(self, index: int | slice) -> float | list[float]:
        if self._values is None and isinstance(index, int):
            return float(self._lines[index][self._slice])
        return self.values()[index]

    def __iter__(self) -> Iterator[float]:
        return iter(self.values())

    def __eq__(self, other: object) -> bool:
        """Equal to a list (or another such column) of the same values, as the list it stands for is."""
        if isinstance(other, LazyFloatColumn):
            other = other.values()
        return isinstance(other, list) and self.values() == other

    __hash__ = None  # type: ignore[assignment]  # compared by value, like the list it stands for

    def __repr__(self) -> str:
        return f"LazyFloatColumn({self.values()!r})"

    def values(self) -> list[float]:
        """Every value, converted once."""
        if self._values is None:
            self._values = list(map(float, map(itemgetter(self._slice), self._lines)))
        return self._values


def lazy_float_column(lines: Sequence[str], start: int, span: Span) -> LazyFloatColumn:
    """What :func:`float_column` gives, converted only as it is read. Raises ValueError as float_column does,
    from the first line alone: ``float()``'s grammar tells no digit from another, so a text at the same place
    of lines of one shape is a float literal on all of them or on none."""
    if lines:
        # Where this raises, float_column raises on every line.
        float(lines[0][start + span[0] : start + span[1]])
    return LazyFloatColumn(lines, start, span)


def joined_float_column(lines: Sequence[str], start: int, spans: Sequence[Span]) -> list[float]:
    """``float()`` of the texts at ``spans`` of every line joined (a number with its thousands separators
    cut out: ``10,050`` read from ``10`` and ``050``); raises ValueError as :func:`float_column` does."""
    if len(spans) == 1:
        return float_column(lines, start, spans[0])
    pieces = [map(itemgetter(slice(start + span[0], start + span[1])), lines) for span in spans]
    return list(map(float, map("".join, zip(*pieces, strict=True))))


def all_finite(values: Iterable[float]) -> bool:
    """Whether no value is NaN or infinite (their sum is finite; an overflow of finite values only gives a
    false "no", which costs a per-line read)."""
    total = sum(values)
    return total - total == 0


_FLOAT_LITERAL_CHARS = frozenset("0123456789.eE+-")


def plain_float_shape(text: str) -> bool:
    """Whether a shape's number text holds only digits, a point, an exponent and signs: ``float()`` then
    reads every line's text there as ``parse``'s ``float()`` does, or raises, never "nan" or a unit."""
    return bool(text) and _FLOAT_LITERAL_CHARS.issuperset(text) and any(c.isdigit() for c in text)


def float_word(raw: str) -> bool:
    """Whether a value without a digit is one ``float()`` reads (``nan``, ``inf``): the same on every line of
    a shape, so a metric's column may hold it (a NaN loss is what a monitor must show)."""
    if has_digit(raw):
        return False
    try:
        float(raw)
    except ValueError:
        return False
    return True


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


#: Where an ETA's days (None: not printed), hours, minutes and seconds are in a line (see :func:`eta_spans`).
EtaSpans = tuple[Span | None, Span, Span, Span]


def eta_seconds(match: re.Match[str]) -> float:
    """The seconds of a ``[D day(s), ]H:MM:SS`` ETA (MetricLogger, MMEngine) whose pattern has the days
    (optional), hours, minutes and seconds in groups 1-4."""
    days = int(match[1]) if match[1] else 0
    return float(((days * 24 + int(match[2])) * 60 + int(match[3])) * 60 + int(match[4]))


def eta_spans(match: re.Match[str]) -> EtaSpans:
    """Where the days (group 1, optional), hours, minutes and seconds (groups 2-4) of an ETA ``match`` are."""
    days = match.span(1) if match.start(1) >= 0 else None
    return days, match.span(2), match.span(3), match.span(4)


def eta_column(lines: Sequence[str], start: int, spans: EtaSpans) -> list[float]:
    """:func:`eta_seconds` of the ETA at ``spans`` of every line, column by column."""
    days, hours, minutes, seconds = spans
    hour_column = int_column(lines, start, hours)
    if days is not None:
        hour_column = [
            day * 24 + hour for day, hour in zip(int_column(lines, start, days), hour_column, strict=True)
        ]
    return [
        float((hour * 60 + minute) * 60 + second)
        for hour, minute, second in zip(
            hour_column, int_column(lines, start, minutes), int_column(lines, start, seconds), strict=True
        )
    ]


def never_reads(text: str) -> Hit | None:
    """The per-shape reader (see :class:`ShapeAwareFamily`) of a shape none of whose lines a family reads."""
    return None
