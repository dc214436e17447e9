"""Turn the physical lines of one training log into LogRecords and LogEvents, one line at a time.

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
6. feeds the cleaned text to the event detector and to the line families: the file's format (the family that
   matched most) first, then the others in registry order, the fallbacks (bare tqdm, generic) last.

Memory stays constant whatever the length of the log: only counters, a few held lines and the families' own
small state are kept. The reader must split lines on ``\\n`` only (``newline="\\n"``), or the redraws and
the line numbers are lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import date

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.base import Hit, LineFamily
from trainmon_tui.parsers.trainlog.events import EventDetector
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

# A family's parse method, its gate substrings and its index in the registry order.
_Slot = tuple[Callable[[str], Hit | None], tuple[str, ...], int]

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


def _is_redraw(piece: str) -> bool:
    """Whether a ``\\r``-separated piece is only a progress-bar state (so a later redraw supersedes it)."""
    end = piece.rstrip()
    if end.endswith("]") and "%" in end:
        return True
    return _KERAS_BAR_RE.match(piece) is not None and ("/step" in piece or " - " in piece)


def _has_bar(piece: str) -> bool:
    return BAR_RE.search(piece) is not None or _is_redraw(piece)


def _current_pieces(line: str) -> list[str]:
    """The pieces of a ``\\r``-redrawn line worth reading: non-bar pieces and the last bar state, in order."""
    parts = line.split("\r")
    last = parts[-1]
    redraw_flags = [_is_redraw(part) for part in parts[:-1]]
    keep_last_redraw = not _has_bar(last)
    last_redraw = -1
    if keep_last_redraw:
        for index in range(len(redraw_flags) - 1, -1, -1):
            if redraw_flags[index]:
                last_redraw = index
                break
    pieces = [
        part
        for index, part in enumerate(parts[:-1])
        if part and not part.isspace() and (not redraw_flags[index] or index == last_redraw)
    ]
    if last and not last.isspace():
        pieces.append(last)
    return pieces


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


def _record_factory() -> Callable[..., LogRecord]:
    """A maker of LogRecords equal to ``LogRecord(*fields)``, about 2.5x cheaper.

    A frozen dataclass's ``__init__`` goes through ``object.__setattr__`` once per field; at one record per
    line that is over half of the 4 us per-line budget. Setting the slots through their descriptors builds the
    same object. If LogRecord's fields ever differ from what this maker sets, the real constructor is used.
    """
    names = tuple(f.name for f in fields(LogRecord))
    if names != _RECORD_FIELDS or tuple(getattr(LogRecord, "__slots__", ())) != _RECORD_FIELDS:
        return LogRecord
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9 = (getattr(LogRecord, name).__set__ for name in names)
    new = object.__new__

    def make(  # noqa: PLR0917 - the same positional order as LogRecord's own constructor
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
        record: LogRecord = new(LogRecord)
        s0(record, line)
        s1(record, rank)
        s2(record, step)
        s3(record, total_steps)
        s4(record, epoch)
        s5(record, total_epochs)
        s6(record, batch)
        s7(record, batches_per_epoch)
        s8(record, metrics)
        s9(record, timestamp)
        return record

    return make


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
_make_record = _record_factory()


class LogParser:
    """Streaming parser for one log file: feed physical lines, get records and events as they complete."""

    def __init__(
        self,
        *,
        extra_metrics: Sequence[tuple[str, str]] = (),
        default_rank: int | None = None,
        families: Sequence[type[LineFamily]] = ALL_FAMILIES,
    ) -> None:
        """``extra_metrics``: (name, regex with a ``(?P<value>...)`` group) read from every line, raising
        ValueError for a bad pattern. ``default_rank``: the rank of lines without a rank prefix (e.g. from the
        file name, see :func:`rank_from_path`). ``families``: the line families to try, in order."""
        self._default_rank = default_rank
        patterns = MetricPatterns(extra_metrics)
        self._extra_metrics = patterns if patterns else None
        self._events = EventDetector()
        self._feed_events = self._events.feed
        instances: list[LineFamily] = [family() for family in families]
        self._names = tuple(family.name for family in instances)
        self._fallback = tuple(family.name in FALLBACK_NAMES for family in instances)
        self._slot_of: list[_Slot] = [(fam.parse, fam.gate, index) for index, fam in enumerate(instances)]
        # Specific families first, so the fallbacks only see what no framework claimed.
        specific = tuple(slot for slot in self._slot_of if not self._fallback[slot[2]])
        self._fallback_slots = tuple(slot for slot in self._slot_of if self._fallback[slot[2]])
        self._slots = specific + self._fallback_slots
        # One regex scan finds whether any specific family's gate occurs at all: cheaper than testing every
        # gate in turn on the many lines (warnings, banners) that no family reads.
        gates = sorted(
            {gate for _, family_gates, _ in specific for gate in family_gates}, key=len, reverse=True
        )
        always = any(not family_gates for _, family_gates, _ in specific)
        self._any_gate = None if always or not gates else re.compile("|".join(map(re.escape, gates))).search
        self._counts = [0] * len(instances)
        self._preferred: _Slot | None = None
        self._line_no = 0
        self._ranks: set[int] = set()
        if default_rank is not None:
            self._ranks.add(default_rank)
        # A dict hard-wrapped over several lines: (raw text, line number, rank, timestamp) of each line.
        self._held: list[tuple[str, int, int | None, float | None]] | None = None
        self._held_chars = 0

    @property
    def format(self) -> str | None:
        """The family that matched most lines; a fallback only when no specific family matched any."""
        for want_fallback in (False, True):
            best: str | None = None
            best_count = 0
            for index, count in enumerate(self._counts):
                if self._fallback[index] == want_fallback and count > best_count:
                    best, best_count = self._names[index], count
            if best is not None:
                return best
        return None

    @property
    def ranks(self) -> frozenset[int]:
        """Every rank seen: line prefixes, ranks the families read, and the default rank."""
        return frozenset(self._ranks)

    def feed(self, line: str) -> tuple[list[LogRecord], list[LogEvent]]:
        """One physical line as read from the file (without the trailing newline; may contain \\r redraws,
        ANSI codes, prefixes). Line numbers are counted internally, 1-based."""
        self._line_no += 1
        line_no = self._line_no
        records: list[LogRecord] = []
        events: list[LogEvent] = []
        for part in _current_pieces(line) if "\r" in line else (line,):
            piece = _CONTROL_RE.sub("", part) if "\x1b" in part or "\x08" in part else part
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
                    break
                cut = _glued_cut(text) if "][" in text else -1
                if cut < 0:
                    self._text(text, piece, line_no, rank, stamp, prefixed, records, events)
                    break
                self._text(text[:cut], text[:cut], line_no, rank, stamp, prefixed, records, events)
                piece = text[cut:]
        return records, events

    def finish(self) -> tuple[list[LogRecord], list[LogEvent]]:
        """Flush what is held at the end of the input: a wrapped dict that never closed, an open traceback."""
        records: list[LogRecord] = []
        if self._held is not None:
            self._flush_held(records)
        return records, self._events.finish()

    def _text(  # noqa: PLR0917 - the hot path: positional arguments are the cheapest call
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
        """Read one cleaned line: events, a dict wrapped over lines, then the families and the record.

        ``events`` is None when re-reading a wrapped dict joined from lines whose events were already read.
        """
        if events is not None:
            found = self._feed_events(text, line, rank)
            if found:
                events.extend(found)
            if self._held is not None and self._continues_held(raw, text, prefixed, records):
                return
            if "{" in text and self._opens_wrapped_dict(text, raw, rank, stamp):
                return
        hit: Hit | None = None
        matched = -1
        preferred = self._preferred
        if preferred is not None:
            parse, gates, matched = preferred
            for gate in gates:
                if gate in text:
                    hit = parse(text)
                    break
        if hit is None:
            any_gate = self._any_gate
            slots = self._fallback_slots if any_gate is not None and any_gate(text) is None else self._slots
            for slot in slots:
                if slot is preferred:
                    continue
                parse, gates, matched = slot
                if gates:
                    for gate in gates:
                        if gate in text:
                            break
                    else:
                        continue
                hit = parse(text)
                if hit is not None:
                    break
            else:
                matched = -1
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
            if (preferred is None or preferred[2] != matched) and not self._fallback[matched]:
                self._preferred = self._slot_of[matched]
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

    def _opens_wrapped_dict(self, text: str, raw: str, rank: int | None, stamp: float | None) -> bool:
        """Hold a line that opens a dict without closing it: the terminal wrapped it onto the next lines."""
        start = text.find("{'")
        if start < 0:
            start = text.find('{"')
        if start < 0 or text.find("}", start) >= 0:
            return False
        raw = raw.rstrip("\r\n")
        self._held = [(raw, self._line_no, rank, stamp)]
        self._held_chars = len(raw)
        return True

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
        rank: int | None = None
        stamp: float | None = None
        quoted = False
        for _ in range(_MAX_PREFIXES):
            candidate = text
            first = candidate[:1]
            if first in {" ", "\t"}:
                candidate = candidate.lstrip()
                first = candidate[:1]
            if first == "[":
                match = _BRACKET_PREFIX_RE.match(candidate)
                if match is None:
                    break
                kind = match.lastgroup
                if kind in _RANK_GROUPS:
                    rank = int(match[kind])
                elif kind in _DATE_GROUPS:
                    stamp = _utc_seconds(
                        candidate[match.start("y") : match.end("d")],
                        match["h"],
                        match["mi"],
                        match["s"],
                        fraction=match["f"],
                    )
            elif first in _DIGITS:
                # Most lines that start with a digit are counts ("6072/6072 [===", "  1/Unknown"), not dates:
                # look at where a date's "-" or "/" would be before running the regex.
                if candidate[4:5] != "-" and candidate[2:3] != "/":
                    break
                match = _DATE_PREFIX_RE.match(candidate)
                if match is None:
                    break
                if match[1] is not None:
                    stamp = _utc_seconds(
                        candidate[0:10], match[4], match[5], match[6], fraction=match[7], offset=match[8]
                    )
            elif first == ">" and not quoted:
                # A markdown quote of a pasted log ("> " before every line).
                quoted = True
                text = candidate[2:] if candidate[1:2] == " " else candidate[1:]
                continue
            elif first in _GLOG_LEVELS:
                match = _GLOG_PREFIX_RE.match(candidate)
                if match is None:
                    break
            else:
                break
            text = candidate[match.end() :]
        return text, rank, stamp


_RANK_IN_NAME_RE = re.compile(r"(?<![a-z])rank[_-]?(\d{1,6})(?!\d)", re.IGNORECASE)
_WORKER_IN_NAME_RE = re.compile(r"(?<![a-z])worker[_-]?(\d{1,6})(?!\d)", re.IGNORECASE)


def rank_from_path(path: str) -> int | None:
    """The rank a per-rank log's name gives (``rank0.log``, ``rank_3.txt``, ``train-rank12.log``,
    ``worker_2.log``, ``node1_rank3.log``, ``logs/rank5/out.txt``); None when the name gives none."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    for part in reversed(parts[-2:]):
        for pattern in (_RANK_IN_NAME_RE, _WORKER_IN_NAME_RE):
            match = pattern.search(part)
            if match is not None:
                return int(match[1])
    return None


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
