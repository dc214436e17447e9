"""Turn the physical lines of one training log into LogRecords and LogEvents, a line or a block at a time.

For each physical line the engine:

1. keeps what a terminal would have kept of ``\\r`` redraws: the last progress-bar state, plus every piece
   that is not a bar redraw (a loss dict, a warning, a traceback line), in order;
2. removes ANSI/terminal control sequences;
3. reads and removes line prefixes: markdown ``> ``, a viewer's ``[1745]`` line number, torchrun's
   ``[rank3]:``, ``[default0]:`` and ``[host:3]``, glog ``I0204 16:43:58.892892 758648 file.py:793]`` (also
   bracketed, as PyTorch prints it after a rank prefix), and leading timestamps (``2023-03-22 10:11:12``,
   ``[2025-04-13 23:41:12]``, ``[05:50:11.624892]``, ``10/30 22:18:02``); a timestamp with a date becomes
   the record's ``timestamp`` (UTC unless the log printed an offset);
4. splits a log line glued to the end of a bar (``...3.33s/it][2021-11-26 03:07:16,494] [INFO] ...``);
5. joins a dict hard-wrapped over lines (a line opening ``{'`` without closing it is held, a few lines at
   most);
6. feeds the cleaned text to the event detector and to the line families whose gate it passes: the family
   that read the last line first (the file's format, in a log of one format), then the others in registry
   order, the fallbacks (bare tqdm, generic) last.

Speed: ``feed_block`` reads many lines per call and tests the whole block once for redraws and terminal
codes. The decisions that depend only on which substrings a line holds (the families whose gate it passes,
whether the event detector could report anything, whether it opens a dict) are made once per line *shape*,
the line with every ASCII digit masked, and cached: a log's lines differ mostly in their numbers, so a log
has a handful of shapes and a line pays one dict lookup for all of them. No pattern that decides a shape
tells one digit from another, so the places of things are the shape's too: where the prefixes end and
where their rank and timestamp are (one plan per raw line shape, the masks of a whole block computed in one
C pass), and, for a family that offers it (``for_shape``, see ``base.ShapeAwareFamily``), a reader that
takes each value from where the shape has it instead of parsing the line again. For the commonest shapes a
family may go further (``columns_for_shape``, see ``base.ColumnFamily``): the block's lines of such a shape
wait until the block ends and are then read together, column by column, each column sliced and converted by
one C-level ``map``; ``feed_block_columns`` hands them over as columns (:class:`ColumnBlock`) to a consumer
that needs no LogRecords (parse-log), ``feed_block`` makes them into records.

Memory stays constant whatever the length of the log: only counters, a few held lines, a bounded shape cache
and the families' own small state are kept. The reader must split lines on ``\\n`` only
(``newline="\\n"``), or the redraws and the line numbers are lost.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import date
from itertools import compress, repeat
from operator import add, and_, attrgetter, contains, itemgetter, mul, not_, sub

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.base import (
    ColumnReader,
    Columns,
    Hit,
    LineFamily,
    Span,
    group_span,
    int_column,
    never_reads,
)
from trainmon_tui.parsers.trainlog.events import GATE_PHRASES as EVENT_GATE_PHRASES
from trainmon_tui.parsers.trainlog.events import EventDetector, could_report
from trainmon_tui.parsers.trainlog.fam_generic import MetricPatterns
from trainmon_tui.parsers.trainlog.fam_tqdm import BAR_RE
from trainmon_tui.parsers.trainlog.registry import ALL_FAMILIES, FALLBACK_NAMES

# CSI/OSC/two-character escapes, a lone ESC, and other C0 controls except tab (Keras erases with backspaces).
_CONTROL_RE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])?|[\x00-\x08\x0b-\x1f\x7f]"
)

_BRACKET_PREFIX_RE = re.compile(
    r"\[(?:"
    r"rank(?P<rank>\d{1,6})\]:?"  # [rank3]:  torchrun --tee / log_line_prefix_template
    r"|[A-Za-z][\w-]*?(?P<role>\d{1,6})\]:"  # [default0]:  role name + local rank
    r"|[A-Za-z][\w-]*:(?P<host>\d{1,6})\]"  # [host1:0]  --role $(hostname -s):
    r"|(?P<viewer>\d{1,9})\]"  # [1745]  line number added by a log viewer
    r"|(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)[ T](?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?P<f>[.,]\d{1,9})?\]"
    r"|\d\d:\d\d:\d\d(?:[.,]\d{1,9})?\]"  # [05:50:11.624892]  time without a date
    r"|[IWEF]\d{0,4}[ \d:.]* [\w./-]+:\d{1,7}\]"  # [W1206 07:13:29.087800751 reducer.cpp:1431]
    r")[ \t]*"
)
_DATE_PREFIX_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)([.,]\d{1,9})?(Z|[+-]\d\d:?\d\d)?(?::(?= ))?(?:[ \t]+|$)"
    r"|\d\d/\d\d \d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:[ \t]+|$)"  # MM/DD HH:MM:SS (MMEngine): no year
)
_GLOG_PREFIX_RE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{1,9} +\d{1,10} [^\]\s]+\] ?")
_RANK_GROUPS = frozenset({"rank", "role", "host"})
_DATE_GROUPS = frozenset({"s", "f"})
_DIGITS = frozenset("0123456789")
_GLOG_LEVELS = frozenset("IWEF")
_PREFIX_STARTS = frozenset("[> \t0123456789") | _GLOG_LEVELS
_MAX_PREFIXES = 5

# A Keras progress line starts with "n/total " (it has no closing bracket to be recognised by, unlike tqdm).
_KERAS_BAR_RE = re.compile(r"\s*\d+/(?:\d+|Unknown)\s")
_MAX_HELD_LINES = 6
_MAX_HELD_CHARS = 16384
_MAX_RANKS = 4096


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_day_cache: dict[str, int] = {}


def _utc_seconds(
    day: str, hour: str, minute: str, second: str, *, fraction: str | None, offset: str | None = None
) -> float | None:
    """Seconds since the epoch of a printed date and time; None when they are not a real date and time."""
    days = _day_cache.get(day)
    if days is None:
        try:
            days = date(int(day[0:4]), int(day[5:7]), int(day[8:10])).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            return None
        if len(_day_cache) < 4096:
            _day_cache[day] = days
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 60:
        return None
    seconds = float(days * 86400 + h * 3600 + m * 60 + s)
    if fraction:
        seconds += float("0." + fraction[1:])
    if offset and offset != "Z":
        sign = -1 if offset[0] == "+" else 1
        digits = offset[1:].replace(":", "")
        seconds += sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


# Where a timestamp's parts are in a line: the date (YYYY-MM-DD), hour, minute, second, and the fraction and
# UTC offset when printed, as (start, end) spans.
_StampSpans = tuple[Span, Span, Span, Span, Span | None, Span | None]


def _prefix_spans(text: str) -> tuple[int, Span | None, _StampSpans | None]:
    """Read the prefixes at the start of a piece (see the module docstring): where the text after them starts,
    and where the rank and the timestamp they give are (the last prefix that gives one wins).

    Positions only, so the answer is the same for every line of the same shape (the line with its digits
    masked): no pattern here tells one digit from another. :meth:`LogParser._strip_prefixes` reads the values.
    """
    start = 0
    rank: Span | None = None
    stamp: _StampSpans | None = None
    quoted = False
    for _ in range(_MAX_PREFIXES):
        at = start
        first = text[at : at + 1]
        if first in {" ", "\t"}:
            at = len(text) - len(text[at:].lstrip())
            first = text[at : at + 1]
        if first == "[":
            match = _BRACKET_PREFIX_RE.match(text, at)
            if match is None:
                break
            kind = match.lastgroup
            if kind in _RANK_GROUPS:
                rank = match.span(kind)
            elif kind in _DATE_GROUPS:
                stamp = (
                    (match.start("y"), match.end("d")),
                    match.span("h"),
                    match.span("mi"),
                    match.span("s"),
                    group_span(match, "f"),
                    None,
                )
        elif first in _DIGITS:
            # Most lines that start with a digit are counts ("6072/6072 [===", "  1/Unknown"), not dates: look
            # at where a date's "-" or "/" would be before running the regex.
            if text[at + 4 : at + 5] != "-" and text[at + 2 : at + 3] != "/":
                break
            match = _DATE_PREFIX_RE.match(text, at)
            if match is None:
                break
            if match.start(1) >= 0:
                stamp = (
                    (at, at + 10),
                    match.span(4),
                    match.span(5),
                    match.span(6),
                    group_span(match, 7),
                    group_span(match, 8),
                )
        elif first == ">" and not quoted:
            # A markdown quote of a pasted log ("> " before every line).
            quoted = True
            start = at + 2 if text[at + 1 : at + 2] == " " else at + 1
            continue
        elif first in _GLOG_LEVELS:
            match = _GLOG_PREFIX_RE.match(text, at)
            if match is None:
                break
        else:
            break
        start = match.end()
    return start, rank, stamp


def _stamp_at(text: str, spans: _StampSpans) -> float | None:
    """The timestamp whose parts :func:`_prefix_spans` found in ``text``."""
    day, hour, minute, second, fraction, offset = spans
    return _utc_seconds(
        text[day[0] : day[1]],
        text[hour[0] : hour[1]],
        text[minute[0] : minute[1]],
        text[second[0] : second[1]],
        fraction=None if fraction is None else text[fraction[0] : fraction[1]],
        offset=None if offset is None else text[offset[0] : offset[1]],
    )


def _stamps_at(lines: Sequence[str], spans: _StampSpans) -> list[float | None]:
    """:func:`_stamp_at` of each of ``lines`` (all of one shape): each part of the date and time sliced and
    converted, and the seconds added up, by C-level maps over all the lines, with the same arithmetic in the
    same order. Lines are read one by one where that would not give the same: a day not yet seen (its number
    is cached as it is first read), a time out of range, a UTC offset."""
    day, hour, minute, second, fraction, offset = spans
    if offset is None:
        days = list(map(_day_cache.get, map(itemgetter(slice(*day)), lines)))
        if None not in days:
            hours = list(map(int, map(itemgetter(slice(*hour)), lines)))
            minutes = list(map(int, map(itemgetter(slice(*minute)), lines)))
            seconds = list(map(int, map(itemgetter(slice(*second)), lines)))
            if lines and max(hours) <= 23 and max(minutes) <= 59 and max(seconds) <= 60:
                whole = map(add, map(mul, days, repeat(86400)), map(mul, hours, repeat(3600)))
                whole = map(add, map(add, whole, map(mul, minutes, repeat(60))), seconds)
                stamps: list[float | None] = list(map(float, whole))
                if fraction is not None:
                    digits = map(itemgetter(slice(fraction[0] + 1, fraction[1])), lines)
                    stamps = list(map(add, stamps, map(float, map("0.".__add__, digits))))
                return stamps
    return [_stamp_at(line, spans) for line in lines]


def _is_redraw(piece: str) -> bool:
    """Whether a ``\\r``-separated piece is only a progress-bar state (so a later redraw supersedes it)."""
    end = piece.rstrip()
    if end.endswith("]") and "%" in end:
        return True
    return _KERAS_BAR_RE.match(piece) is not None and ("/step" in piece or " - " in piece)


def _has_bar(piece: str) -> bool:
    return BAR_RE.search(piece) is not None or _is_redraw(piece)


def _redraw_flags(parts: list[str]) -> list[bool]:
    """:func:`_is_redraw` of each part. A line of bar redraws holds thousands of them: their common test runs
    in C-level maps over all of them, the rest of it only on the parts that fail it."""
    ends = list(map(str.rstrip, parts))
    flags = list(map(and_, map(str.endswith, ends, repeat("]")), map(contains, ends, repeat("%"))))
    for index in compress(range(len(flags)), map(not_, flags)):
        flags[index] = _is_redraw(parts[index])
    return flags


def _current_pieces(line: str) -> list[str]:
    """The pieces of a ``\\r``-redrawn line worth reading: non-bar pieces and the last bar state, in order."""
    parts = line.split("\r")
    last = parts.pop()
    redraw_flags = _redraw_flags(parts)
    keep = list(map(not_, redraw_flags))
    if True in redraw_flags and not _has_bar(last):
        keep[len(redraw_flags) - 1 - redraw_flags[::-1].index(True)] = True
    pieces = [part for part in compress(parts, keep) if part and not part.isspace()]
    if last and not last.isspace():
        pieces.append(last)
    return pieces


def _unclosed_dict_at(text: str) -> int:
    """Where a dict opens (``{'`` or ``{"``) that the line does not close, else -1."""
    start = text.find("{'")
    if start < 0:
        start = text.find('{"')
    if start < 0 or text.find("}", start) >= 0:
        return -1
    return start


def _glued_cut(text: str) -> int:
    """Where a log line glued to a progress bar's closing bracket starts (``...s/it][2021-...``), else -1."""
    at = text.find("][")
    while at >= 0:
        opening = text.rfind("[", 0, at)
        if opening > 0:
            # A tqdm bracket ("[01:02<01:10, 7.2it/s]") right after the bar's "n/total".
            inside = text[opening:at]
            counts = text[max(0, opening - 24) : opening]
            if ("<" in inside or "it/s" in inside or "s/it" in inside) and "/" in counts:
                return at + 1
        at = text.find("][", at + 1)
    return -1


_RECORD_FIELDS = (
    "line",
    "rank",
    "step",
    "total_steps",
    "epoch",
    "total_epochs",
    "batch",
    "batches_per_epoch",
    "metrics",
    "timestamp",
)


class _RecordDraft:
    """A mutable twin of LogRecord: the same slots in the same order, so a draft filled in with plain
    attribute stores can become a LogRecord by having its class set. See :func:`_record_factory`."""

    __slots__ = _RECORD_FIELDS
    line: int
    rank: int | None
    step: int | None
    total_steps: int | None
    epoch: float | None
    total_epochs: int | None
    batch: int | None
    batches_per_epoch: int | None
    metrics: dict[str, float]
    timestamp: float | None


def _make_from_draft(  # noqa: PLR0917 - the same positional order as LogRecord's own constructor
    line: int,
    rank: int | None,
    step: int | None,
    total_steps: int | None,
    epoch: float | None,
    total_epochs: int | None,
    batch: int | None,
    batches_per_epoch: int | None,
    metrics: dict[str, float],
    timestamp: float | None,
) -> LogRecord:
    record = _RecordDraft()
    record.line = line
    record.rank = rank
    record.step = step
    record.total_steps = total_steps
    record.epoch = epoch
    record.total_epochs = total_epochs
    record.batch = batch
    record.batches_per_epoch = batches_per_epoch
    record.metrics = metrics
    record.timestamp = timestamp
    # Same layout: CPython allows the switch; from then on it is a frozen LogRecord like any other.
    record.__class__ = LogRecord  # type: ignore[assignment]
    return record  # type: ignore[return-value]


def _record_factory() -> Callable[..., LogRecord]:
    """A maker of LogRecords equal to ``LogRecord(*fields)``, about 4x cheaper.

    A frozen dataclass's ``__init__`` goes through ``object.__setattr__`` once per field; at one record per
    line that is a large part of the per-line budget. A mutable twin with the same slots is filled in with
    plain attribute stores and then given LogRecord as its class, which builds the same object. If LogRecord's
    fields ever differ from the twin's, or the switch is refused, the real constructor is used.
    """
    names = tuple(f.name for f in fields(LogRecord))
    if names != _RECORD_FIELDS or tuple(getattr(LogRecord, "__slots__", ())) != _RECORD_FIELDS:
        return LogRecord
    sample = (7, 1, 20, 100, 0.5, 3, 4, 50, {"loss": 1.0}, 12.5)
    try:
        made = _make_from_draft(*sample)
    except TypeError:
        return LogRecord
    if type(made) is not LogRecord or made != LogRecord(*sample):
        return LogRecord
    return _make_from_draft


_make_record = _record_factory()

_new_object = object.__new__
_LINE = attrgetter("line")


def _column_records_maker() -> Callable[[int, Sequence[object]], list[LogRecord]]:
    """A maker of ``n`` LogRecords from their fields given column by column (a list per field, or one value
    for all), each field stored into every record by one C-level ``map`` over the slot's descriptor: the
    records are the ones ``LogRecord(*fields)`` makes, at a fraction of a Python call per record. If the
    slots cannot be stored this way (another layout), the records are made one by one."""
    descriptors = [LogRecord.__dict__.get(name) for name in _RECORD_FIELDS]
    setters = tuple(getattr(descriptor, "__set__", None) for descriptor in descriptors)

    def by_slots(n: int, columns: Sequence[object]) -> list[LogRecord]:
        records: list[LogRecord] = list(map(_new_object, repeat(LogRecord, n)))
        for setter, column in zip(setters, columns, strict=True):
            values = column if type(column) is list else repeat(column, n)
            deque(map(setter, records, values), 0)  # type: ignore[arg-type]
        return records

    def one_by_one(n: int, columns: Sequence[object]) -> list[LogRecord]:
        per_field = [column if type(column) is list else [column] * n for column in columns]
        return [_make_record(*fields_) for fields_ in zip(*per_field, strict=True)]

    if (
        any(setter is None for setter in setters)
        or tuple(f.name for f in fields(LogRecord)) != _RECORD_FIELDS
    ):
        return one_by_one
    sample = [[7, 8], 1, [20, 21], 100, 0.5, 3, 4, 50, [{"loss": 1.0}, {}], 12.5]
    try:
        made = by_slots(2, sample)
    except (TypeError, AttributeError):
        return one_by_one
    if made != one_by_one(2, sample) or type(made[0]) is not LogRecord:
        return one_by_one
    return by_slots


_column_records = _column_records_maker()


class ColumnBlock:
    """The records of a block's lines of one shape, read column-wise and not yet made into LogRecords: their
    line numbers (ascending), their rank (one per line, or one for all), what the family read
    (:class:`~trainmon_tui.parsers.trainlog.base.Columns`), and the lines themselves, for the timestamps
    their prefixes may hold (read only when asked for)."""

    __slots__ = ("columns", "lines", "numbers", "rank", "stamp_spans")

    def __init__(
        self,
        numbers: list[int],
        rank: list[int] | int | None,
        columns: Columns,
        lines: list[str],
        stamp_spans: _StampSpans | None,
    ) -> None:
        self.numbers = numbers
        self.rank = rank
        self.columns = columns
        self.lines = lines
        self.stamp_spans = stamp_spans

    def has_timestamps(self) -> bool:
        """Whether the lines may carry timestamps (in a prefix, or read by the family)."""
        return self.stamp_spans is not None or self.columns.timestamps is not None

    def timestamps(self) -> list[float | None] | None:
        """Each line's timestamp: the family's where it read one, else its prefix's (as ``_read`` gives it);
        None when the shape's lines have none."""
        spans = self.stamp_spans
        from_prefix = None if spans is None else _stamps_at(self.lines, spans)
        read_by_family = self.columns.timestamps
        if read_by_family is None:
            return from_prefix
        own = read_by_family()
        if from_prefix is None:
            return own
        return [prefix if stamp is None else stamp for stamp, prefix in zip(own, from_prefix, strict=True)]

    def records(self, at: Sequence[int] | None = None) -> list[LogRecord]:
        """The LogRecords of the lines (only those at the indexes ``at``, when given), in line order."""
        columns = self.columns
        fields: list[object] = [self.numbers, self.rank, *columns[:6], None, self.timestamps()]
        values: Sequence[Sequence[float]] = columns.values
        if at is not None:
            pick = itemgetter(*at) if len(at) > 1 else (lambda column: (column[at[0]],))
            fields = [list(pick(field)) if type(field) is list else field for field in fields]
            values = [list(pick(column)) for column in values]
        count = len(fields[0])  # type: ignore[arg-type]
        names = columns.names
        if names:
            fields[8] = list(map(dict, map(zip, repeat(names), zip(*values, strict=True))))
        else:
            fields[8] = [{} for _ in range(count)]
        return _column_records(count, fields)


# A family's parse method and its index in the registry order.
_Slot = tuple[Callable[[str], Hit | None], int]


class _Shape:
    """What the engine decides from a line's shape alone (its text with every digit masked): which families'
    gates and which event phrases occur in it, whether it opens a dict. Cached per shape, so a line costs one
    dict lookup for all of it.
    """

    __slots__ = (
        "by_preferred",
        "column_family",
        "columns",
        "maybe_event",
        "opens_dict",
        "quiet",
        "slots",
    )

    def __init__(  # noqa: PLR0917 - built in one place
        self,
        slots: tuple[_Slot, ...],
        maybe_event: bool,
        opens_dict: bool,
        family_count: int,
        columns: tuple[ColumnReader, int] | None = None,
        quiet: Callable[[], bool] | None = None,
    ) -> None:
        #: The families whose gate occurs in the line, in registry order (specific ones, then fallbacks).
        self.slots = slots
        #: Whether the event detector could report anything on the line (see events.could_report).
        self.maybe_event = maybe_event
        #: Whether the line opens a dict without closing it (it may be hard-wrapped over the next lines).
        self.opens_dict = opens_dict
        #: The order to try ``slots`` in, per preferred family index (the last entry: no preferred family).
        self.by_preferred: list[tuple[_Slot, ...] | None] = [None] * (family_count + 1)
        #: The one family that reads lines of this shape and can read them column-wise (see
        #: base.ColumnFamily), and its column reader; None otherwise.
        self.columns = None if columns is None else columns[0]
        self.column_family = -1 if columns is None else columns[1]
        #: When no family can read the shape's lines while this says so: then they change nothing.
        self.quiet = quiet

    def order(self, preferred: int) -> tuple[_Slot, ...]:
        """``slots`` with the preferred family first (when its gate occurs), then the others in registry
        order."""
        first = tuple(slot for slot in self.slots if slot[1] == preferred)
        order = first + tuple(slot for slot in self.slots if slot[1] != preferred)
        self.by_preferred[preferred] = order
        return order


# Every ASCII digit becomes "0": no gate or event phrase holds a digit, so masking them changes no substring
# test, and the lines of a log, which differ mostly in their numbers, share a handful of shapes.
_MASK_DIGITS = bytes.maketrans(b"123456789", b"000000000")
# Longer lines are rare (progress-bar redraw piles); they are examined uncached. The cache is emptied when it
# reaches _MAX_SHAPES shapes or _MAX_SHAPE_BYTES of keys, so it stays small (well under a MB per parser)
# whatever the log holds; a log has a few hundred shapes.
_MAX_SHAPE_CHARS = 2048
_MAX_SHAPES = 2048
_MAX_SHAPE_BYTES = 1 << 18


def _keys_from_encoded(encoded: bytes, count: int) -> list[bytes] | None:
    """The shape keys of ``count`` lines from the bytes they were decoded from (see feed_block_columns); None
    when those bytes hold another number of lines.

    The digits masked in the bytes are the digits masked in the text: UTF-8 spells an ASCII digit with its
    own byte only, and a decoder that replaces undecodable bytes never takes a digit into the replacement.
    So two lines with equal keys have equal shapes (a line's kept ``\\r`` or undecodable bytes only make
    lines of one shape use more than one key).
    """
    keys = encoded.translate(_MASK_DIGITS).split(b"\n")
    if len(keys) == count + 1 and not keys[-1]:
        keys.pop()
    return keys if len(keys) == count else None


# A \r that does not end a line (in a \r\n): a redraw, or one of several \r before a line's end.
_BARE_CR_RE = re.compile(rb"\r(?!\n)")


def _redraws_in(encoded: bytes) -> bool:
    """Whether a ``\\r`` in ``encoded`` may be inside a line rather than end a ``\\r\\n`` (which a reader
    drops): a line read from there may hold redraws. Errs towards yes (``\\r\\r\\n``), which only costs a
    test per line. (The search stops at the first such \\r; a copy of the block without its \\r\\n
    searched for one cost five times as much on the benchmark's mix.)"""
    return b"\r" in encoded and _BARE_CR_RE.search(encoded) is not None


class _LinePlan:
    """How :meth:`LogParser.feed_block` reads a plain physical line (no ``\\r``, no terminal codes) of one
    shape, decided once per raw line shape: where its text starts after the prefixes, where the rank and the
    timestamp are in them, and the text's own :class:`_Shape`. ``shape`` is None for a line that needs the
    general path (a log line glued to a bar) or that is blank (which only ends a held dict)."""

    __slots__ = (
        "blank",
        "family",
        "kind",
        "maybe_event",
        "pending",
        "quiet",
        "rank_span",
        "shape",
        "stamp_spans",
        "start",
    )

    def __init__(
        self,
        start: int,
        rank_span: Span | None,
        stamp_spans: _StampSpans | None,
        shape: _Shape | None,
        blank: bool,
    ) -> None:
        self.start = start
        self.rank_span = rank_span
        self.stamp_spans = stamp_spans
        self.shape = shape
        self.blank = blank
        #: How feed_block may pass a line of this shape by while no dict is held and no traceback is open:
        #: _COLUMNS (read with its shape's other lines, column-wise), _QUIET (nothing reads it while its
        #: shape's ``quiet`` says so), _BLANK (it changes nothing), or _ONE_BY_ONE.
        self.kind = _ONE_BY_ONE
        #: For _QUIET and _BLANK: whether the line may be passed by now.
        self.quiet: Callable[[], bool] = _always
        if shape is None:
            if blank:
                self.kind = _BLANK
        elif shape.columns is not None:
            self.kind = _COLUMNS
        elif shape.quiet is not None and rank_span is None:
            # (A rank prefix counts even on a line nothing reads: such lines are read one by one.)
            self.kind = _QUIET
            self.quiet = shape.quiet
        #: For _COLUMNS: the index of the family that reads the shape's lines, and whether the event detector
        #: must see them.
        self.family = -1 if shape is None else shape.column_family
        self.maybe_event = shape is not None and shape.maybe_event
        #: Line numbers of this block's lines of this shape waiting to be read column-wise.
        self.pending: list[int] = []


_ONE_BY_ONE = 0
_COLUMNS = 1
_MIN_COLUMN_LINES = 8
_QUIET = 2
_BLANK = 3


def _always() -> bool:
    return True


def _attributes(family: object) -> tuple[tuple[str, object], ...]:
    """A family's state: every attribute it holds (families keep no caches of their own, see
    base.LineFamily)."""
    names: list[str] = []
    for cls in type(family).__mro__:
        names += getattr(cls, "__slots__", ())
    pairs = [(name, getattr(family, name)) for name in names if hasattr(family, name)]
    pairs += sorted(getattr(family, "__dict__", {}).items())
    return tuple(pairs)


class LogParser:
    """Streaming parser for one log file: feed physical lines, get records and events as they complete.

    ``feed`` takes one line (the live collectors' way); ``feed_block`` takes many at once and returns exactly
    what feeding them one by one would have, with less work per line.
    """

    def __init__(
        self,
        *,
        extra_metrics: Sequence[tuple[str, str]] = (),
        default_rank: int | None = None,
        families: Sequence[type[LineFamily]] = ALL_FAMILIES,
        lines_before: int = 0,
    ) -> None:
        """``extra_metrics``: (name, regex with a ``(?P<value>...)`` group) read from every line, raising
        ValueError for a bad pattern. ``default_rank``: the rank of lines without a rank prefix (e.g. from the
        file name, see :func:`~trainmon_tui.parsers.trainlog.paths.rank_from_path`). ``families``: the line
        families to try, in order. ``lines_before``: how many lines of the file come before the first one
        fed (a parser that starts mid-file numbers its lines from there)."""
        self._default_rank = default_rank
        patterns = MetricPatterns(extra_metrics)
        self._extra_metrics = patterns if patterns else None
        self._events = EventDetector()
        self._feed_events = self._events.feed
        # The detector's open tracebacks (a live view): while one is open, every line goes to the detector.
        self._open_tracebacks = self._events.open_tracebacks
        instances: list[LineFamily] = [family() for family in families]
        self._families = tuple(instances)
        self._names = tuple(family.name for family in instances)
        self._fallback = tuple(family.name in FALLBACK_NAMES for family in instances)
        self._gates = tuple(family.gate for family in instances)
        # Specific families first, so the fallbacks only see what no framework claimed.
        slots = [(family.parse, index) for index, family in enumerate(instances)]
        # Families that can name a cheaper reader per line shape (see base.ShapeAwareFamily).
        self._for_shape: tuple[Callable[[str], Callable[[str], Hit | None]] | None, ...] = tuple(
            getattr(family, "for_shape", None) for family in instances
        )
        # Families that can read some shapes column-wise (base.ColumnFamily), or pass them by while quiet
        # (base.QuietFamily).
        self._columns_for: tuple[Callable[[str], ColumnReader | None] | None, ...] = tuple(
            getattr(family, "columns_for_shape", None) for family in instances
        )
        self._quiet_for: tuple[Callable[[str], Callable[[], bool] | None] | None, ...] = tuple(
            getattr(family, "quiet_for_shape", None) for family in instances
        )
        self._slots = tuple(slot for slot in slots if not self._fallback[slot[1]]) + tuple(
            slot for slot in slots if self._fallback[slot[1]]
        )
        # Shapes can be cached only while no substring test involves a digit.
        phrases = [gate for gates in self._gates for gate in gates] + list(EVENT_GATE_PHRASES)
        digit_free = not any(char.isdigit() for phrase in phrases for char in phrase)
        self._max_shape_chars = _MAX_SHAPE_CHARS if digit_free else -1
        self._shapes: dict[bytes, _Shape] = {}
        self._shape_bytes = 0
        self._line_plans: dict[bytes, _LinePlan] = {}
        self._line_plan_bytes = 0
        self._counts = [0] * len(instances)
        # The index of the last specific family that read a line: tried first. -1 (the last slot): none yet.
        self._preferred = -1
        self._line_no = lines_before
        self._ranks: set[int] = set()
        if default_rank is not None:
            self._ranks.add(default_rank)
        # A dict hard-wrapped over several lines: (raw text, line number, rank, timestamp) of each line.
        self._held: list[tuple[str, int, int | None, float | None]] | None = None
        self._held_chars = 0

    @property
    def format(self) -> str | None:
        """The family that matched most lines; a fallback only when no specific family matched any."""
        return self.format_for(self._counts)

    def format_for(self, counts: Sequence[int]) -> str | None:
        """What :attr:`format` would say had the families matched ``counts`` lines (as :meth:`line_counts`
        lists them): for parsers that each read a part of one file."""
        for want_fallback in (False, True):
            best: str | None = None
            best_count = 0
            for index, count in enumerate(counts):
                if self._fallback[index] == want_fallback and count > best_count:
                    best, best_count = self._names[index], count
            if best is not None:
                return best
        return None

    def line_counts(self) -> tuple[int, ...]:
        """How many lines each family has read so far, in the order of the families."""
        return tuple(self._counts)

    def resume_state(self) -> tuple[object, ...]:
        """Everything that decides how the lines still to come are read, as a value to compare: two parsers at
        the same line whose states are equal give the same records and events from there on. Left out: the
        caches (they change how fast, never what), and what only adds up (:meth:`line_counts`,
        :attr:`ranks`). A file can thus be read in parts by several parsers, each part's parser checked
        against the one before it (see ``parselog_parallel``)."""
        held = None if self._held is None else (tuple(self._held), self._held_chars)
        families = tuple(_attributes(family) for family in self._families)
        return (
            self._line_no,
            self._preferred,
            held,
            self._events.resume_state(self._line_no),
            families,
        )

    @property
    def ranks(self) -> frozenset[int]:
        """Every rank seen: line prefixes, ranks the families read, and the default rank."""
        return frozenset(self._ranks)

    def feed(self, line: str) -> tuple[list[LogRecord], list[LogEvent]]:
        """One physical line as read from the file (without the trailing newline; may contain \\r redraws,
        ANSI codes, prefixes). Line numbers are counted internally, 1-based."""
        self._line_no += 1
        records: list[LogRecord] = []
        events: list[LogEvent] = []
        if "\r" in line:
            for part in _current_pieces(line):
                self._piece(part, self._line_no, records, events)
        else:
            self._piece(line, self._line_no, records, events)
        return records, events

    def feed_block(
        self, lines: Sequence[str], encoded: bytes | None = None
    ) -> tuple[list[LogRecord], list[LogEvent]]:
        """Many physical lines at once, as :meth:`feed` takes them: the records and events of all of them, in
        the order feeding them one by one would have given. ``encoded``: see :meth:`feed_block_columns`."""
        return self._feed_block(lines, None, encoded)

    def feed_block_columns(
        self, lines: Sequence[str], encoded: bytes | None = None
    ) -> tuple[list[LogRecord], list[LogEvent], list[ColumnBlock]]:
        """What :meth:`feed_block` gives, with the records of the lines read column-wise left as columns: the
        records (in line order) and events of the other lines, and one :class:`ColumnBlock` per shape read
        column-wise, whose lines never hold one of those records. For consumers that turn many records into
        text or totals cheaper from columns than from LogRecords (``parse-log``).

        ``encoded``, when given, is what a reader decoded ``lines`` from: their UTF-8 bytes (undecodable bytes
        included), each line followed by ``\\n`` (the last one may not be), a line's ending ``\\r`` kept or
        not. The lines' shapes are then masked from those bytes, which spares encoding the lines again."""
        blocks: list[ColumnBlock] = []
        records, events = self._feed_block(lines, blocks, encoded)
        return records, events, blocks

    def _feed_block(
        self, lines: Sequence[str], blocks: list[ColumnBlock] | None, encoded: bytes | None = None
    ) -> tuple[list[LogRecord], list[LogEvent]]:
        """feed_block, the lines read column-wise made into records, or (``blocks`` given) left in blocks
        appended there."""
        records: list[LogRecord] = []
        events: list[LogEvent] = []
        piece = self._piece
        read = self._read
        plans = self._line_plans
        ranks = self._ranks
        default_rank = self._default_rank
        max_chars = self._max_shape_chars
        line_no = self._line_no
        # Redraws and terminal codes are rare: one test over the whole block spares three per line. The shape
        # of every line (digits masked) comes from one C pass over the block too.
        keys = None if encoded is None else _keys_from_encoded(encoded, len(lines))
        if keys is not None:
            assert encoded is not None
            plain = not (b"\x1b" in encoded or b"\x08" in encoded or _redraws_in(encoded))
        else:
            block = "\n".join(lines)
            plain = not ("\r" in block or "\x1b" in block or "\x08" in block)
            if not plain:
                # The lines with redraws or terminal codes take the general path and need no shape; they may
                # be hundreds of kilobytes of bar redraws, not worth encoding.
                block = "\n".join(
                    ["" if ("\r" in line or "\x1b" in line or "\x08" in line) else line for line in lines]
                )
            keys = block.encode("utf-8", "surrogatepass").translate(_MASK_DIGITS).split(b"\n")
        if len(keys) != len(lines):
            # A line holding a newline of its own: no shape per line, every line takes the general path.
            keys = [b""] * len(lines)
            max_chars = -1
        first_no = line_no + 1
        # Lines of shapes read column-wise wait in their plan's ``pending`` until the block ends, then each
        # shape's are read at once. Their readers use no family state and change none (base.ColumnFamily),
        # so only two things could differ from reading them in turn: the preferred family, set here as the
        # line comes, and the order of the records, restored by sorting on the line number at the end (the
        # records of the lines read one by one come in line order: a held dict's lines are read before any
        # later line). They wait only while no dict is held and no traceback is open, and so do quiet and
        # blank lines passed by; only a line read one by one can change either.
        waiting: list[_LinePlan] = []
        passable = self._held is None and not self._open_tracebacks
        # Which ranks a full rank set holds depends on the order they came in: near the cap, a waiting line's
        # rank is added as it comes (and again, with no effect, when its shape's lines are read).
        ranks_in_order = len(ranks) + len(lines) >= _MAX_RANKS
        # The last line's key and plan (the plan is bound before the key first matches).
        last_key: bytes | None = None
        last_plan: _LinePlan
        for line, key in zip(lines, keys, strict=True):
            line_no += 1
            if not plain and ("\r" in line or "\x1b" in line or "\x08" in line):
                self._line_no = line_no
                if "\r" in line:
                    for part in _current_pieces(line):
                        piece(part, line_no, records, events)
                else:
                    piece(line, line_no, records, events)
                passable = self._held is None and not self._open_tracebacks
                continue
            # A run of lines of one shape is common: comparing two keys costs less than hashing one.
            if key != last_key:
                plan = plans.get(key)
                if plan is None:
                    self._line_no = line_no
                    if len(line) > max_chars:
                        piece(line, line_no, records, events)
                        passable = self._held is None and not self._open_tracebacks
                        continue
                    plan = self._new_line_plan(line, key)
                last_key = key
                last_plan = plan
            else:
                plan = last_plan
            kind = plan.kind
            if kind and passable:
                if kind == _COLUMNS:
                    if ranks_in_order and plan.rank_span is not None and len(ranks) < _MAX_RANKS:
                        ranks.add(int(line[plan.rank_span[0] : plan.rank_span[1]]))
                    if plan.maybe_event:
                        # The event detector reads it now, in line order, as _read would first; what it
                        # finds changes nothing the family reads.
                        self._feed_waiting_line_events(plan, line, line_no, events)
                        passable = not self._open_tracebacks
                    pending = plan.pending
                    if not pending:
                        waiting.append(plan)
                    pending.append(line_no)
                    # What reading it would do to the preferred family (its reader always reads it).
                    self._preferred = plan.family
                    continue
                elif plan.quiet():
                    continue
            self._line_no = line_no
            shape = plan.shape
            if shape is None:
                if not plan.blank:
                    piece(line, line_no, records, events)
                elif self._held is not None:
                    self._flush_held(records)
                passable = self._held is None and not self._open_tracebacks
                continue
            # What _piece does with the line, with every decision that depends on its shape already made.
            start = plan.start
            raw = line[start:] if start else line
            rank = default_rank
            rank_span = plan.rank_span
            if rank_span is not None:
                rank = int(line[rank_span[0] : rank_span[1]])
                if len(ranks) < _MAX_RANKS:
                    ranks.add(rank)
            stamp_spans = plan.stamp_spans
            stamp = None if stamp_spans is None else _stamp_at(line, stamp_spans)
            read(raw.rstrip(), raw, line_no, rank, stamp, start > 0, records, events, shape)
            passable = self._held is None and not self._open_tracebacks
        self._line_no = line_no
        if waiting:
            # The preferred family is already what reading them in turn gives (see above).
            preferred = self._preferred
            for plan in waiting:
                numbers = plan.pending
                plan.pending = []
                column_block = self._read_plan_lines(plan, numbers, lines, first_no, records)
                if column_block is None:
                    continue
                if blocks is None:
                    records += column_block.records()
                else:
                    blocks.append(column_block)
            self._preferred = preferred
            records.sort(key=_LINE)
        return records, events

    def _feed_waiting_line_events(
        self, plan: _LinePlan, line: str, line_no: int, events: list[LogEvent]
    ) -> None:
        """Feed the event detector a line read column-wise later, as _read feeds it (see feed_block)."""
        start = plan.start
        rank_span = plan.rank_span
        rank = self._default_rank if rank_span is None else int(line[rank_span[0] : rank_span[1]])
        found = self._feed_events((line[start:] if start else line).rstrip(), line_no, rank)
        if found:
            events.extend(found)

    def _read_plan_lines(
        self,
        plan: _LinePlan,
        numbers: list[int],
        lines: Sequence[str],
        first_no: int,
        records: list[LogRecord],
    ) -> ColumnBlock | None:
        """Read the lines numbered ``numbers`` (all of ``plan``'s shape; line ``first_no`` is ``lines[0]``):
        column-wise into the block returned, or (few lines, or a value only the line reader spells out) one by
        one, their records appended to ``records`` and None returned."""
        shape = plan.shape
        assert shape is not None and shape.columns is not None
        start = plan.start
        group = list(map(lines.__getitem__, map(sub, numbers, repeat(first_no))))
        rank_span = plan.rank_span
        rank: list[int] | int | None = self._default_rank
        if rank_span is not None:
            rank = int_column(group, 0, rank_span)
            ranks = self._ranks
            if len(ranks) + len(rank) < _MAX_RANKS:
                ranks.update(rank)
            else:
                for one in rank:
                    if len(ranks) < _MAX_RANKS:
                        ranks.add(one)
        stamp_spans = plan.stamp_spans
        # Reading column-wise costs a few microseconds per shape: a few lines are read faster one by one.
        columns = shape.columns(group, start) if len(group) >= _MIN_COLUMN_LINES else None
        if columns is None:
            for at, (line, number) in enumerate(zip(group, numbers, strict=True)):
                raw = line[start:] if start else line
                self._read(
                    raw.rstrip(),
                    raw,
                    number,
                    rank[at] if type(rank) is list else rank,  # type: ignore[arg-type]
                    None if stamp_spans is None else _stamp_at(line, stamp_spans),
                    start > 0,
                    records,
                    None,
                    shape,
                )
            return None
        self._counts[shape.column_family] += len(group)
        return ColumnBlock(numbers, rank, columns, group, stamp_spans)

    def _new_line_plan(self, line: str, key: bytes) -> _LinePlan:
        """The plan for every plain line of ``line``'s shape (see :class:`_LinePlan`), cached by ``key``."""
        start, rank_span, stamp_spans = 0, None, None
        first = line[:1]
        # The same test as _piece's: glog's letter counts only before a digit.
        if first in _PREFIX_STARTS and (first not in _GLOG_LEVELS or line[1:2] in _DIGITS):
            start, rank_span, stamp_spans = _prefix_spans(line)
        text = line[start:].rstrip()
        # (_glued_cut tells no digit from another: its answer holds for the whole shape.)
        if not text or ("][" in text and _glued_cut(text) >= 0):
            # A blank line (prefixes only, none naming a rank, count as none) only ends a held dict; one with
            # a rank prefix (whose rank counts) and a log line glued to a bar take the general path.
            plan = _LinePlan(start, rank_span, stamp_spans, None, not text and rank_span is None)
        else:
            plan = _LinePlan(start, rank_span, stamp_spans, self._shape_of(text), False)
        self._line_plan_bytes += len(key)
        if self._line_plan_bytes > _MAX_SHAPE_BYTES or len(self._line_plans) >= _MAX_SHAPES:
            self._line_plans.clear()
            self._line_plan_bytes = len(key)
        self._line_plans[key] = plan
        return plan

    def finish(self) -> tuple[list[LogRecord], list[LogEvent]]:
        """Flush what is held at the end of the input: a wrapped dict that never closed, an open traceback."""
        records: list[LogRecord] = []
        if self._held is not None:
            self._flush_held(records)
        return records, self._events.finish()

    def _piece(self, piece: str, line_no: int, records: list[LogRecord], events: list[LogEvent]) -> None:
        """Read one ``\\r``-separated piece of a physical line: terminal codes, prefixes, a glued log line."""
        if "\x1b" in piece or "\x08" in piece:
            piece = _CONTROL_RE.sub("", piece)
        # A piece may hold a log line glued after a bar's closing bracket: read both, bar first.
        while True:
            rank = self._default_rank
            stamp: float | None = None
            prefixed = False
            first = piece[:1]
            # glog's letter counts only before a digit: "Epoch 3:" is common and is no prefix.
            if first in _PREFIX_STARTS and (first not in _GLOG_LEVELS or piece[1:2] in _DIGITS):
                stripped, found_rank, stamp = self._strip_prefixes(piece)
                if stripped is not piece:
                    prefixed = True
                    piece = stripped
                if found_rank is not None:
                    rank = found_rank
                    if len(self._ranks) < _MAX_RANKS:
                        self._ranks.add(found_rank)
            text = piece.rstrip()
            if not text:
                if self._held is not None:
                    self._flush_held(records)
                return
            cut = _glued_cut(text) if "][" in text else -1
            if cut < 0:
                self._text(text, piece, line_no, rank, stamp, prefixed, records, events)
                return
            self._text(text[:cut], text[:cut], line_no, rank, stamp, prefixed, records, events)
            piece = text[cut:]

    def _new_shape(self, text: str, *, cached: bool = True) -> _Shape:
        """The decisions for ``text``'s shape. A shape that is not ``cached`` serves one line only: its
        families read it with ``parse``, since a per-shape reader would cost more than it saves."""
        gates = self._gates
        slots: list[_Slot] = []
        for parse, index in self._slots:
            if gates[index] and not any(gate in text for gate in gates[index]):
                continue
            reader_for = self._for_shape[index]
            slots.append((parse if reader_for is None or not cached else reader_for(text), index))
        maybe_event = could_report(text)
        opens_dict = _unclosed_dict_at(text) >= 0
        columns: tuple[ColumnReader, int] | None = None
        quiet: Callable[[], bool] | None = None
        if cached and not opens_dict and self._extra_metrics is None:
            columns, quiet = self._passes_for(text, slots)
            if maybe_event:
                # The detector must see such a line as it comes: feed_block feeds it one a column-wise line.
                quiet = None
        return _Shape(tuple(slots), maybe_event, opens_dict, len(self._counts), columns, quiet)

    def _passes_for(
        self, text: str, slots: list[_Slot]
    ) -> tuple[tuple[ColumnReader, int] | None, Callable[[], bool] | None]:
        """For a cached shape that opens no dict: the column reader of the
        one family that reads its lines (whatever family is preferred: no other specific family reads any
        line of the shape, and that one reads every line, so no fallback is reached), or when only a quiet
        family might read them, its test of quiet (base.QuietFamily)."""
        live = [slot for slot in slots if slot[0] is not never_reads]
        specific = [slot for slot in live if not self._fallback[slot[1]]]
        if len(specific) == 1:
            index = specific[0][1]
            columns_for = self._columns_for[index]
            reader = None if columns_for is None else columns_for(text)
            return (None if reader is None else (reader, index)), None
        if specific:
            return None, None
        if not live:
            return None, _always
        if len(live) == 1:
            quiet_for = self._quiet_for[live[0][1]]
            return None, None if quiet_for is None else quiet_for(text)
        return None, None

    def _shape_of(self, text: str) -> _Shape:
        """The decisions that depend only on the shape of a cleaned line, cached per shape."""
        if len(text) > self._max_shape_chars:
            return self._new_shape(text, cached=False)
        key = text.encode("utf-8", "surrogatepass").translate(_MASK_DIGITS)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._new_shape(text)
            self._shape_bytes += len(key)
            if self._shape_bytes > _MAX_SHAPE_BYTES or len(self._shapes) >= _MAX_SHAPES:
                self._shapes.clear()
                self._shape_bytes = len(key)
            self._shapes[key] = shape
        return shape

    def _text(  # noqa: PLR0917 - positional arguments are the cheapest call
        self,
        text: str,
        raw: str,
        line: int,
        rank: int | None,
        stamp: float | None,
        prefixed: bool,
        records: list[LogRecord],
        events: list[LogEvent] | None,
    ) -> None:
        """Read one cleaned line (see :meth:`_read`)."""
        self._read(text, raw, line, rank, stamp, prefixed, records, events, self._shape_of(text))

    def _read(  # noqa: PLR0917 - the hot path: positional arguments are the cheapest call
        self,
        text: str,
        raw: str,
        line: int,
        rank: int | None,
        stamp: float | None,
        prefixed: bool,
        records: list[LogRecord],
        events: list[LogEvent] | None,
        shape: _Shape,
    ) -> None:
        """Read one cleaned line of a known shape: events, a dict wrapped over lines, then the families and
        the record.

        ``events`` is None when re-reading a wrapped dict joined from lines whose events were already read.
        """
        if events is not None:
            # The detector passes by a line that could report nothing, unless a traceback is open.
            if shape.maybe_event or self._open_tracebacks:
                found = self._feed_events(text, line, rank)
                if found:
                    events.extend(found)
            if self._held is not None and self._continues_held(raw, text, prefixed, records):
                return
            if shape.opens_dict:
                self._hold_wrapped_dict(raw, rank, stamp)
                return
        # The families whose gate the line passes, the preferred one (the last specific family that read a
        # line) first, then the others in registry order; the first that reads the line wins.
        preferred = self._preferred
        order = shape.by_preferred[preferred]
        if order is None:
            order = shape.order(preferred)
        hit: Hit | None = None
        matched = -1
        for parse, index in order:
            hit = parse(text)
            if hit is not None:
                matched = index
                break
        metrics = None if hit is None else hit.metrics
        if self._extra_metrics is not None:
            extra = self._extra_metrics.read(text)
            if extra:
                # A family may return one shared Hit for the lines it claims without data: never mutate it.
                metrics = {**metrics, **extra} if metrics else extra
                if hit is None:
                    hit = Hit()
        if hit is None:
            return
        if (
            not metrics
            and hit.step is None
            and hit.epoch is None
            and hit.batch is None
            and hit.total_steps is None
            and hit.total_epochs is None
            and hit.batches_per_epoch is None
        ):
            return
        if matched >= 0:
            self._counts[matched] += 1
            if matched != preferred and not self._fallback[matched]:
                self._preferred = matched
        if hit.rank is not None:
            rank = hit.rank
            if len(self._ranks) < _MAX_RANKS:
                self._ranks.add(rank)
        records.append(
            _make_record(
                line,
                rank,
                hit.step,
                hit.total_steps,
                hit.epoch,
                hit.total_epochs,
                hit.batch,
                hit.batches_per_epoch,
                {} if metrics is None else metrics,
                stamp if hit.timestamp is None else hit.timestamp,
            )
        )

    def _hold_wrapped_dict(self, raw: str, rank: int | None, stamp: float | None) -> None:
        """Hold a line that opens a dict without closing it: the terminal wrapped it onto the next lines."""
        raw = raw.rstrip("\r\n")
        self._held = [(raw, self._line_no, rank, stamp)]
        self._held_chars = len(raw)

    def _continues_held(self, raw: str, text: str, prefixed: bool, records: list[LogRecord]) -> bool:
        """Append a line to the held dict when it is its continuation; else give up the held dict first."""
        held = self._held
        assert held is not None
        raw = raw.rstrip("\r\n")
        starts_new = text.lstrip().startswith(("{'", '{"'))
        too_long = len(held) > _MAX_HELD_LINES or self._held_chars + len(raw) > _MAX_HELD_CHARS
        # A terminal's hard wrap carries no prefix of its own; a prefixed line is a new line of the log.
        if starts_new or too_long or prefixed:
            self._flush_held(records)
            return False
        held.append((raw, self._line_no, None, None))
        self._held_chars += len(raw)
        if "}" in raw:
            self._flush_held(records, closed=True)
        return True

    def _flush_held(self, records: list[LogRecord], *, closed: bool = False) -> None:
        """Read the held lines: joined when the dict closed; otherwise (the close never came) the dict's first
        line and each later line on its own, so no line is lost to a dict that was only cut off."""
        held = self._held
        assert held is not None
        self._held = None
        first, line, rank, stamp = held[0]
        if closed:
            joined = "".join(raw for raw, _, _, _ in held).rstrip()
            self._text(joined, joined, line, rank, stamp, False, records, None)
            return
        self._text(first.rstrip(), first, line, rank, stamp, False, records, None)
        for raw, later_line, _, _ in held[1:]:
            text = raw.rstrip()
            self._text(text, raw, later_line, self._default_rank, None, False, records, None)

    def _strip_prefixes(self, text: str) -> tuple[str, int | None, float | None]:
        """Remove the prefixes at the start of a piece; returns the rest, the rank and the timestamp found."""
        start, rank_span, stamp_spans = _prefix_spans(text)
        rank = None if rank_span is None else int(text[rank_span[0] : rank_span[1]])
        stamp = None if stamp_spans is None else _stamp_at(text, stamp_spans)
        return (text[start:] if start else text), rank, stamp


def parse_lines(
    lines: Iterable[str],
    *,
    extra_metrics: Sequence[tuple[str, str]] = (),
    default_rank: int | None = None,
) -> tuple[list[LogRecord], list[LogEvent], str | None]:
    """Parse a whole log held in memory (tests, small files): all records, all events, the detected format."""
    parser = LogParser(extra_metrics=extra_metrics, default_rank=default_rank)
    records: list[LogRecord] = []
    events: list[LogEvent] = []
    for line in lines:
        new_records, new_events = parser.feed(line)
        records.extend(new_records)
        events.extend(new_events)
    new_records, new_events = parser.finish()
    records.extend(new_records)
    events.extend(new_events)
    return records, events, parser.format
