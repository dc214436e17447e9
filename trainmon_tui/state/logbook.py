"""The log book: the newest raw lines of every followed log file, kept per (run, host, path), read cleaned.

Writing stays cheap because collection has a CPU budget: a line is stored as the raw text it arrived as, plus
its arrival number (its place in arrival order across every file of the store, which is what the merged view
of a run sorts by). Cleaning happens on read, once per line, and is cached: ``\\r`` redraws are reduced to
what a terminal would have left on screen (the last non-blank piece), then
:func:`~trainmon_tui.sanitize.clean_remote_text` makes terminal control inert and masks secrets.

Lines live in chunks of :data:`CHUNK_LINES`. A chunk's lists are only ever appended to, and a chunk that falls
off the front is not touched again, so a :class:`LogFileView` is just the chunks and the line range of the
moment it was taken: later appends lie past its range, and lines the book dropped stay alive in the views that
still hold them. Taking a view copies no lines.

Memory bound: a file keeps at least its newest ``lines_per_file`` lines (default 10,000) and fewer than
``lines_per_file + CHUNK_LINES``; a line is at most :data:`MAX_LINE_CHARS` characters (a longer one is cut and
says so); a run keeps at most ``files_per_run`` files (default 512; the file written least recently goes when
a new one comes). The worst case is therefore runs x files_per_run x (lines_per_file + CHUNK_LINES) x
MAX_LINE_CHARS characters; a typical 120-character log line costs about 180 bytes (the string, a list slot,
8 bytes of arrival number, and a cache slot pointing at the same string when there was nothing to clean), so a
full file of 10,000 such lines holds about 2 MB.

:class:`MergedLog` interleaves the views of several files by arrival, updated incrementally from one snapshot
to the next, and :func:`pick_file` chooses the file a drill-down means (by path, or by host and rank).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from trainmon_tui.parsers.trainlog.paths import rank_from_path
from trainmon_tui.sanitize import clean_remote_text

#: Lines per storage chunk: the unit in which old lines are dropped.
CHUNK_LINES = 256
#: Newest lines kept per file, at least.
DEFAULT_LINES_PER_FILE = 10_000
#: Files kept per run; the least recently written one is dropped for a new one beyond this.
DEFAULT_FILES_PER_RUN = 512
#: Characters kept of one line; the rest is dropped at once (a \r-redrawn progress bar can run to megabytes).
MAX_LINE_CHARS = 8192

_NO_RANKS: frozenset[int] = frozenset()
# Arrival numbers and line numbers share one int in MergedLog: the line number takes the low bits.
_LINE_BITS = 40
_LINE_MASK = (1 << _LINE_BITS) - 1
# A line number above every real one: "keep nothing of this file".
_NOTHING = _LINE_MASK


def cut_line(line: str) -> str:
    """``line`` cut to :data:`MAX_LINE_CHARS`, with a note of how much went. A line of ``\\r`` redraws keeps
    its end, where the state a terminal would show is."""
    extra = len(line) - MAX_LINE_CHARS
    if extra <= 0:
        return line
    if "\r" in line:
        return line[-MAX_LINE_CHARS:]
    return f"{line[:MAX_LINE_CHARS]} [... {extra} more characters]"


def display_text(raw: str) -> str:
    """What a log line looks like on a terminal, made safe: the last non-blank ``\\r`` piece, inert, with
    secrets masked."""
    if "\r" in raw:
        pieces = [piece for piece in raw.split("\r") if piece.strip()]
        raw = pieces[-1] if pieces else ""
    return clean_remote_text(raw)


class _Chunk:
    """Up to CHUNK_LINES consecutive lines of one file. ``raw`` and ``arrival`` are append-only."""

    __slots__ = ("arrival", "clean", "raw")

    def __init__(self) -> None:
        self.raw: list[str] = []
        self.arrival = array("Q")
        # Cleaned text, filled on read; None until the first read of the chunk.
        self.clean: list[str | None] | None = None

    def cleaned(self, offset: int) -> str:
        clean = self.clean
        if clean is None:
            clean = self.clean = [None] * CHUNK_LINES
        text = clean[offset]
        if text is None:
            text = clean[offset] = display_text(self.raw[offset])
        return text


@dataclass(frozen=True, slots=True, eq=False)
class LogFileView:
    """The lines one file held when a snapshot was taken: numbers ``first_line`` to ``end_line - 1``.

    It never changes: lines appended later are past ``end_line`` and lines the book drops later stay here.
    ``rank`` is the file's rank (from its name, else the only rank its lines named, else None); ``ranks``
    every rank its lines named. ``last_t``: arrival time of the newest line.
    """

    run: str
    host: str
    path: str
    rank: int | None
    ranks: frozenset[int]
    first_line: int
    end_line: int
    last_t: float
    _chunks: tuple[_Chunk, ...]

    @property
    def key(self) -> tuple[str, str]:
        """(host, path): what names the file within its run."""
        return (self.host, self.path)

    def __len__(self) -> int:
        return self.end_line - self.first_line

    def holds(self, number: int) -> bool:
        return self.first_line <= number < self.end_line

    def _locate(self, number: int) -> tuple[_Chunk, int]:
        offset = number - self.first_line
        return self._chunks[offset // CHUNK_LINES], offset % CHUNK_LINES

    def line(self, number: int) -> str | None:
        """Line ``number`` (1-based in the file), cleaned; None when not held."""
        if not self.first_line <= number < self.end_line:
            return None
        chunk, offset = self._locate(number)
        return chunk.cleaned(offset)

    def lines(self, start: int, stop: int) -> list[str]:
        """Lines ``start`` to ``stop - 1``, cleaned, clipped to what the view holds."""
        start = max(start, self.first_line)
        stop = min(stop, self.end_line)
        out: list[str] = []
        number = start
        while number < stop:
            chunk, offset = self._locate(number)
            take = min(stop - number, CHUNK_LINES - offset)
            out.extend(chunk.cleaned(offset + index) for index in range(take))
            number += take
        return out

    def raw_line(self, number: int) -> str | None:
        """Line ``number`` exactly as stored (not safe to show); None when not held."""
        if not self.first_line <= number < self.end_line:
            return None
        chunk, offset = self._locate(number)
        return chunk.raw[offset]

    def arrival(self, number: int) -> int:
        """The arrival number of a held line: lines of all files of the store compare by it."""
        chunk, offset = self._locate(number)
        return chunk.arrival[offset]

    def arrivals(self, start: int, stop: int) -> list[int]:
        """The arrival numbers of lines ``start`` to ``stop - 1`` (clipped to what the view holds)."""
        start = max(start, self.first_line)
        stop = min(stop, self.end_line)
        out: list[int] = []
        number = start
        while number < stop:
            chunk, offset = self._locate(number)
            take = min(stop - number, CHUNK_LINES - offset)
            out.extend(chunk.arrival[offset : offset + take])
            number += take
        return out


class _LogFile:
    __slots__ = (
        "chunks",
        "chunks_tuple",
        "count",
        "first_line",
        "host",
        "last_arrival",
        "last_t",
        "path",
        "path_rank",
        "rank",
        "ranks",
        "run",
        "view",
    )

    def __init__(self, run: str, host: str, path: str) -> None:
        self.run = run
        self.host = host
        self.path = path
        self.path_rank = rank_from_path(path)
        self.rank = self.path_rank
        self.ranks = _NO_RANKS
        self.chunks: list[_Chunk] = []
        self.chunks_tuple: tuple[_Chunk, ...] | None = ()
        self.first_line = 1
        self.count = 0
        self.last_arrival = -1
        self.last_t = 0.0
        self.view: LogFileView | None = None

    def set_ranks(self, ranks: frozenset[int]) -> None:
        self.ranks = ranks
        if self.path_rank is None:
            self.rank = next(iter(ranks)) if len(ranks) == 1 else None

    def append(self, lines: Sequence[str], first_line: int, arrival: int, capacity: int) -> None:
        if first_line != self.first_line + self.count:
            # Not the next line (the collector's numbering restarted): the held lines no longer lead here.
            self.chunks = []
            self.first_line = first_line
            self.count = 0
        chunks = self.chunks
        chunk = chunks[-1] if chunks else None
        for line in lines:
            if chunk is None or len(chunk.raw) >= CHUNK_LINES:
                chunk = _Chunk()
                chunks.append(chunk)
                self.chunks_tuple = None
            chunk.raw.append(line if len(line) <= MAX_LINE_CHARS else cut_line(line))
            chunk.arrival.append(arrival)
            arrival += 1
        self.count += len(lines)
        self.last_arrival = arrival - 1
        # Whole chunks fall off the front, so the held count stays below capacity + CHUNK_LINES.
        drop = (self.count - capacity) // CHUNK_LINES
        if drop > 0:
            del chunks[:drop]
            self.first_line += drop * CHUNK_LINES
            self.count -= drop * CHUNK_LINES
            self.chunks_tuple = None
        self.view = None

    def snapshot(self) -> LogFileView:
        view = self.view
        if view is None:
            chunks = self.chunks_tuple
            if chunks is None:
                chunks = self.chunks_tuple = tuple(self.chunks)
            view = self.view = LogFileView(
                self.run,
                self.host,
                self.path,
                self.rank,
                self.ranks,
                self.first_line,
                self.first_line + self.count,
                self.last_t,
                chunks,
            )
        return view


class _RunLogs:
    __slots__ = ("cached", "files")

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], _LogFile] = {}
        self.cached: tuple[LogFileView, ...] | None = None


_NO_VIEWS: Mapping[str, tuple[LogFileView, ...]] = MappingProxyType({})


class LogBook:
    """The newest lines of every log file, per run; see the module docstring for the bounds."""

    def __init__(
        self, *, lines_per_file: int = DEFAULT_LINES_PER_FILE, files_per_run: int = DEFAULT_FILES_PER_RUN
    ) -> None:
        if lines_per_file < 1 or files_per_run < 1:
            raise ValueError("lines_per_file and files_per_run must be >= 1")
        self._lines_per_file = lines_per_file
        self._files_per_run = files_per_run
        self._runs: dict[str, _RunLogs] = {}
        self._arrivals = 0
        self._cached: Mapping[str, tuple[LogFileView, ...]] | None = _NO_VIEWS

    @property
    def lines_per_file(self) -> int:
        return self._lines_per_file

    def append(
        self,
        run: str,
        host: str,
        path: str,
        lines: Sequence[str],
        now: float,
        *,
        first_line: int,
        ranks: frozenset[int] = _NO_RANKS,
    ) -> None:
        """Lines ``first_line``, ``first_line + 1`` ... of ``path`` as read on ``host``; ``ranks``: every rank
        the file's parser has seen so far. A ``first_line`` that does not follow the held lines starts the
        file over (its numbering restarted)."""
        if not lines:
            return
        entry = self._runs.get(run)
        if entry is None:
            entry = self._runs[run] = _RunLogs()
        key = (host, path)
        log = entry.files.get(key)
        if log is None:
            if len(entry.files) >= self._files_per_run:
                stalest = min(entry.files, key=lambda name: entry.files[name].last_arrival)
                del entry.files[stalest]
            log = entry.files[key] = _LogFile(run, host, path)
        if ranks is not log.ranks and ranks != log.ranks:
            log.set_ranks(ranks)
        log.last_t = now
        log.append(lines, first_line, self._arrivals, self._lines_per_file)
        self._arrivals += len(lines)
        entry.cached = None
        self._cached = None

    def views(self) -> Mapping[str, tuple[LogFileView, ...]]:
        """run -> a frozen view of each of its files, in the order they first wrote; shares unchanged views
        with the previous call."""
        cached = self._cached
        if cached is None:
            runs: dict[str, tuple[LogFileView, ...]] = {}
            for name, entry in self._runs.items():
                views = entry.cached
                if views is None:
                    views = entry.cached = tuple([log.snapshot() for log in entry.files.values()])
                runs[name] = views
            cached = self._cached = MappingProxyType(runs)
        return cached


# ------------------------------------------------------------------------------------------ reading


def pick_file(
    views: Iterable[LogFileView], *, host: str | None, rank: int | None, path: str | None
) -> LogFileView | None:
    """The file a drill-down means: by ``path`` (on ``host`` when given); else by ``rank``, on ``host`` when
    given: a file whose own rank it is first, then a file whose lines name it (one log shared by ranks),
    then any host's file of that rank. None when nothing matches (yet)."""
    candidates = list(views)
    if path is not None:
        for view in candidates:
            if view.path == path and (host is None or view.host == host):
                return view
        return None
    on_host = [view for view in candidates if host is None or view.host == host]
    if rank is None:
        return on_host[0] if len(on_host) == 1 else None
    for pool in (on_host, candidates):
        for view in pool:
            if view.rank == rank:
                return view
        for view in pool:
            if rank in view.ranks:
                return view
    return None


@dataclass(frozen=True, slots=True)
class MergedLine:
    """One line of a merged view: which file (its view in the newest update) and which line of it."""

    view: LogFileView
    number: int


class MergedLog:
    """The lines of several files of one run interleaved in arrival order, kept up to date by :meth:`update`
    with each new snapshot's views at a cost in proportion to the lines that arrived since.

    Only lines their file still holds are listed: when a file drops old lines, starts over, or goes, its
    entries are filtered out in one pass. Lines new since the last update all arrived after every line
    already listed (the last snapshot's views held everything that had arrived by then), so they are sorted
    among themselves and appended.
    """

    def __init__(self) -> None:
        self._views: list[LogFileView] = []
        self._slot_of: dict[tuple[str, str], int] = {}
        # What each slot's file had listed at the last update: (first, end, arrival of line end - 1), or
        # (0, 0, -1) when nothing.
        self._held: list[tuple[int, int, int]] = []
        # Entries in arrival order: slot << _LINE_BITS | line number.
        self._order = array("Q")

    def __len__(self) -> int:
        return len(self._order)

    def lines(self) -> MergedLines:
        """The listed lines as of the last update, frozen: later updates do not change them."""
        return MergedLines(self._order, len(self._order), tuple(self._views), dict(self._slot_of))

    def update(self, views: Iterable[LogFileView]) -> bool:
        """Take the views of a newer snapshot (of the same store); True when the listed lines changed."""
        # Arrival number and code of each line to list anew.
        fresh_arrivals: list[int] = []
        fresh_codes: list[int] = []
        # slot -> the lowest line number of it that stays listed
        keep_from: dict[int, int] = {}
        present: set[int] = set()
        for view in views:
            slot = self._slot_of.get(view.key)
            if slot is None:
                slot = self._slot_of[view.key] = len(self._views)
                self._views.append(view)
                self._held.append((0, 0, -1))
            present.add(slot)
            first, end, last = self._held[slot]
            start = view.first_line
            if end > first:
                if view.holds(end - 1) and view.arrival(end - 1) == last:
                    start = end
                    if view.first_line > first:
                        keep_from[slot] = view.first_line
                else:
                    # Started over, or dropped everything listed: list what it holds now.
                    keep_from[slot] = _NOTHING
            self._views[slot] = view
            if start < view.end_line:
                base = slot << _LINE_BITS
                fresh_arrivals.extend(view.arrivals(start, view.end_line))
                fresh_codes.extend(range(base | start, base | view.end_line))
            if len(view):
                self._held[slot] = (view.first_line, view.end_line, view.arrival(view.end_line - 1))
            else:
                self._held[slot] = (0, 0, -1)
        for slot, (first, end, _) in enumerate(self._held):
            if slot not in present and end > first:
                keep_from[slot] = _NOTHING
                self._held[slot] = (0, 0, -1)
        if keep_from:
            limits = [0] * len(self._views)
            for slot, number in keep_from.items():
                limits[slot] = number
            self._order = array(
                "Q", [code for code in self._order if (code & _LINE_MASK) >= limits[code >> _LINE_BITS]]
            )
        if fresh_codes:
            by_arrival = sorted(range(len(fresh_codes)), key=fresh_arrivals.__getitem__)
            self._order.extend([fresh_codes[index] for index in by_arrival])
        return bool(keep_from or fresh_codes)


class MergedLines:
    """The lines a :class:`MergedLog` listed at one update, in arrival order; never changes.

    It shares the log's entry array: an update only appends past ``count`` to that array, and replaces it
    (leaving this one as it was) when it has to drop entries.
    """

    __slots__ = ("_count", "_order", "_slot_of", "_views")

    def __init__(
        self,
        order: array[int],
        count: int,
        views: tuple[LogFileView, ...],
        slot_of: Mapping[tuple[str, str], int],
    ) -> None:
        self._order = order
        self._count = count
        self._views = views
        self._slot_of = slot_of

    def __len__(self) -> int:
        return self._count

    @property
    def views(self) -> tuple[LogFileView, ...]:
        return self._views

    def entry(self, index: int) -> MergedLine:
        if not 0 <= index < self._count:
            raise IndexError(index)
        code = self._order[index]
        return MergedLine(self._views[code >> _LINE_BITS], code & _LINE_MASK)

    def index_of(self, host: str, path: str, number: int) -> int | None:
        """Where line ``number`` of the file is listed (binary search on arrival); None if not listed."""
        slot = self._slot_of.get((host, path))
        if slot is None or not self._views[slot].holds(number):
            return None
        target = self._views[slot].arrival(number)
        order, views = self._order, self._views
        low, high = 0, self._count
        while low < high:
            middle = (low + high) // 2
            code = order[middle]
            if views[code >> _LINE_BITS].arrival(code & _LINE_MASK) < target:
                low = middle + 1
            else:
                high = middle
        if low < self._count and order[low] == (slot << _LINE_BITS | number):
            return low
        return None
