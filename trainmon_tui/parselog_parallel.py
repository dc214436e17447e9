"""Read one log file in parts on several processes, with exactly the result of one parser reading it whole.

The file is cut at line ends into parts, each read by a process of its own with a fresh parser, a piece (about
a megabyte, cut at a line end) at a time. After each piece of its own part a process sends its parser's
``resume_state`` on. Once it has read its part it reads on into the next one, over the same pieces, and after
each compares its parser's state with the state the next part's process had after that piece: from the first
piece where they are equal, the two parsers read alike, so the next part's results from there on are the ones
a single parser would have given, and this process stops. Where the states never meet (something read early
changes how every later line is read), it reads on into the part after, and so on to the end of the file if
need be: still exact, only slower. What only adds up (the lines each family read, for the format) is counted
per piece and summed over the pieces used.

What a piece's records and events become (JSON text, a summary) is the caller's: a sink, one per process,
turns them into a payload per piece, sent to the parent as soon as it is made. The parent hands out the
payloads of the pieces used in file order, as soon as all before them are settled, so output streams while
later parts are still being read; it holds the pieces of at most ``jobs + 1`` parts, and at most ``jobs``
processes read their own parts at a time.

Processes are forked (Linux): the parser and the sink factories need no pickling, and a child starts with the
program already loaded.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from operator import sub
from typing import IO, Any, Protocol, TypeVar, cast

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parselog_read import decode_lines
from trainmon_tui.parsers.trainlog.engine import ColumnBlock, LogParser

_MAX_JOBS = 8


@dataclass(frozen=True, slots=True)
class PartSizes:
    """How a file is cut, in bytes."""

    # States are compared after each piece, so a part's reading overlaps the next by about a piece; a state
    # per megabyte costs nothing next to parsing it.
    piece: int = 1 << 20
    # A part at most: a process keeps its part's payloads until the parts before it are settled.
    part: int = 32 << 20
    # Below this a file is read by one parser: forking and cutting cost more than they save.
    min_file: int = 8 << 20


DEFAULT_SIZES = PartSizes()


Payload_co = TypeVar("Payload_co", covariant=True)


class PieceSink(Protocol[Payload_co]):
    """Turns what the parser gives for a piece into a picklable payload."""

    def take(
        self, lines: list[str], records: list[LogRecord], events: list[LogEvent], blocks: list[ColumnBlock]
    ) -> None:
        """One block of lines and what the parser made of it (``feed_block_columns``)."""
        ...

    def take_finish(self, records: list[LogRecord], events: list[LogEvent]) -> None:
        """What the parser gave at the end of the file (``finish``)."""
        ...

    def payload(self) -> Payload_co:
        """What was taken since the last call; the sink starts afresh."""
        ...


P = TypeVar("P")


class ParallelReadError(Exception):
    """A part could not be read; the message names the path and the reason."""


class FileChangedError(Exception):
    """The file is shorter than when it was cut, or a line end has moved: it was rewritten while read."""


def default_jobs() -> int:
    """Processes to use when not told: the CPUs this process may run on, at most eight."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(_MAX_JOBS, cpus))


def can_read_in_parts(path: str, jobs: int, sizes: PartSizes = DEFAULT_SIZES) -> bool:
    """Whether :func:`read_in_parts` would pay off (and can work) for this file: a regular file of at least
    ``sizes.min_file`` bytes, more than one job, and a system that forks."""
    if jobs < 2 or path == "-" or not sys.platform.startswith("linux"):
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size >= sizes.min_file


@dataclass(slots=True)
class _Piece:
    counts: tuple[int, ...]
    payload: object


@dataclass(frozen=True, slots=True)
class _Plan:
    """What every process of one read shares."""

    path: str
    # Where each part starts, then the file's size.
    bounds: list[int]
    make_parser: Callable[[int], LogParser]
    make_sink: Callable[[], PieceSink[object]]
    piece_bytes: int

    @property
    def part_count(self) -> int:
        return len(self.bounds) - 1


@dataclass(slots=True)
class ReadTotals:
    """Filled in once every payload has been handed out."""

    format: str | None = None
    # How the work went: parts cut, pieces read twice (a part's first pieces, until the states met), and parts
    # whose own reading was not used at all (a state that did not meet the next part's before its end).
    parts: int = 0
    pieces_read_again: int = 0
    parts_unused: int = 0


def cut_parts(file: IO[bytes], size: int, parts: int) -> list[int]:
    """Byte offsets where parts start, each just past a line end, then ``size``: at most ``parts`` parts of
    about equal size (fewer where lines are long)."""
    bounds = [0]
    for index in range(1, parts):
        target = size * index // parts
        if target <= bounds[-1]:
            continue
        file.seek(target - 1)
        at = target - 1
        while True:
            data = file.read(1 << 16)
            if not data:
                at = size
                break
            found = data.find(b"\n")
            if found >= 0:
                at += found + 1
                break
            at += len(data)
        if bounds[-1] < at < size:
            bounds.append(at)
    bounds.append(size)
    return bounds


class _LineCounter:
    """How many lines come before an offset of the file, counted forward as parts start (in order): the
    parent reads the file once more, a part ahead of the processes, not all of it before the first starts."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._position = 0
        self._lines = 0

    def lines_before(self, offset: int) -> int:
        if offset > self._position:
            try:
                with open(self._path, "rb") as file:
                    file.seek(self._position)
                    while self._position < offset:
                        data = file.read(min(1 << 22, offset - self._position))
                        if not data:
                            raise FileChangedError
                        self._lines += data.count(b"\n")
                        self._position += len(data)
            except OSError as exc:
                raise ParallelReadError(f"{self._path}: read failed: {exc.strerror or exc}") from None
            except FileChangedError:
                message = f"{self._path}: the file was truncated or rewritten while it was read"
                raise ParallelReadError(message) from None
        return self._lines


class _PartReader:
    """One process's reading: its parser and sink, and where in the file it is."""

    def __init__(self, file: IO[bytes], size: int, parser: LogParser, sink: PieceSink[object]) -> None:
        self._file = file
        self._size = size
        self._parser = parser
        self._sink = sink
        self._counts = parser.line_counts()
        self.position = 0

    def state(self) -> tuple[object, ...]:
        return self._parser.resume_state()

    def seek(self, position: int) -> None:
        self.position = position
        self._file.seek(position)

    def read_own_piece(self, limit: int, piece_bytes: int) -> _Piece:
        """The next piece: about ``piece_bytes``, cut at a line end, not past ``limit``."""
        wanted = min(piece_bytes, limit - self.position)
        data = self._read(wanted)
        if self.position + wanted < limit:
            cut = data.rfind(b"\n")
            if cut < 0:
                # One line longer than a piece: read on to its end.
                chunks = [data]
                read = wanted
                while cut < 0 and self.position + read < limit:
                    more = self._read(min(piece_bytes, limit - self.position - read))
                    cut = more.find(b"\n")
                    if cut >= 0:
                        cut += read
                    chunks.append(more)
                    read += len(more)
                data = b"".join(chunks)
            if 0 <= cut < len(data) - 1:
                data = data[: cut + 1]
                self._file.seek(self.position + len(data))
        return self._feed(data)

    def read_to(self, end: int) -> _Piece:
        """The piece from here to ``end`` (a piece another process read)."""
        return self._feed(self._read(end - self.position))

    def _read(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise FileChangedError
        return data

    def _feed(self, data: bytes) -> _Piece:
        self.position += len(data)
        try:
            lines = decode_lines(data, self.position >= self._size)
        except ValueError:
            # The piece's end was a line end when the file was cut.
            raise FileChangedError from None
        if lines:
            records, events, blocks = self._parser.feed_block_columns(lines, data)
            self._sink.take(lines, records, events, blocks)
        return self._close_piece()

    def finish(self) -> _Piece:
        records, events = self._parser.finish()
        self._sink.take_finish(records, events)
        return self._close_piece()

    def _close_piece(self) -> _Piece:
        counts = self._parser.line_counts()
        piece = _Piece(tuple(map(sub, counts, self._counts)), self._sink.payload())
        self._counts = counts
        return piece


def _read_part(conn: Connection, plan: _Plan, part: int, lines_before: int) -> None:
    """A process's work: its own part, then on into the next parts until its state meets theirs (see the
    module's docstring). Messages to the parent: ("piece", part, _Piece, end, state) for each piece of its
    own part, ("own_done", part, pieces), ("need", part, index) for another part's checkpoint and ("piece",
    part, _Piece) for each piece read on, then ("joins", part, (part, index) or None: read to the end of the
    file, the last piece holding the parser's finish), or ("error", part, text) or ("bug", part, text)."""
    # Ctrl-C reaches the whole process group: the parent alone answers it, and stops the children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path, bounds = plan.path, plan.bounds
    try:
        with open(path, "rb") as file:
            parser = plan.make_parser(lines_before)
            reader = _PartReader(file, bounds[-1], parser, plan.make_sink())
            reader.seek(bounds[part])
            end = bounds[part + 1]
            own = 0
            while reader.position < end:
                piece = reader.read_own_piece(end, plan.piece_bytes)
                conn.send(("piece", part, piece, reader.position, reader.state()))
                own += 1
            conn.send(("own_done", part, own))
            joins: tuple[int, int] | None = None
            other, index = part + 1, 0
            while other < plan.part_count:
                conn.send(("need", other, index))
                reply = conn.recv()
                if reply[0] == "part_end":
                    other, index = other + 1, 0
                    continue
                _, piece_end, state = reply
                conn.send(("piece", part, reader.read_to(piece_end)))
                if reader.state() == state:
                    joins = (other, index)
                    break
                index += 1
            if joins is None:
                conn.send(("piece", part, reader.finish()))
        conn.send(("joins", part, joins))
    except OSError as exc:
        conn.send(("error", part, f"{path}: read failed: {exc.strerror or exc}"))
    except FileChangedError:
        conn.send(("error", part, f"{path}: the file was truncated or rewritten while it was read"))
    except BaseException:  # the parent reports it: a child must not die silently
        conn.send(("bug", part, traceback.format_exc()))
    finally:
        conn.close()


class _Part:
    """The parent's view of one part's process."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.checkpoints: list[tuple[int, tuple[object, ...]]] = []
        # Its own part's pieces, then those it read on; None where handed out or not needed.
        self.pieces: list[_Piece | None] = []
        # Pieces of its own part, once it has read them all.
        self.piece_count: int | None = None
        # Set when it has sent its last piece: where the output goes on (see _read_part), or None.
        self.joins: tuple[int, int] | None = None
        self.done = False
        # The checkpoint (part, index) it waits for, if the parent could not answer yet.
        self.waiting_for: tuple[int, int] | None = None

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()
        self.conn.close()


def read_in_parts(
    path: str,
    *,
    jobs: int,
    make_parser: Callable[[int], LogParser],
    make_sink: Callable[[], PieceSink[P]],
    totals: ReadTotals,
    sizes: PartSizes = DEFAULT_SIZES,
    streams: Sequence[IO[str]] = (),
) -> Iterator[P]:
    """The payloads of the whole file in order (the parser's finish in the last), as one parser reading it
    from the start would have made them; ``totals`` is filled in at the end. ``make_parser(lines_before)``
    makes a parser for a part that starts after that many lines. ``streams`` (and standard output and error)
    are flushed before each fork: a child flushes what it inherited when it exits. Raises ParallelReadError
    when the file cannot be read."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            part_count = max(jobs, -(-size // max(1, sizes.part)))
            bounds = cut_parts(file, size, part_count)
    except OSError as exc:
        raise ParallelReadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    plan = _Plan(path, bounds, make_parser, make_sink, max(1, sizes.piece))
    return cast(Iterator[P], _payloads(plan, jobs, totals, streams))


def _payloads(plan: _Plan, jobs: int, totals: ReadTotals, streams: Sequence[IO[str]]) -> Iterator[object]:
    """read_in_parts once the file is cut: runs the processes and hands out their payloads in order."""
    conductor = _Conductor(plan, jobs, streams)
    totals.parts = plan.part_count
    counts: list[int] = []
    try:
        conductor.fill()
        number, at = 0, 0
        while True:
            part = conductor.part(number)
            while at < len(part.pieces):
                piece = part.pieces[at]
                assert piece is not None
                part.pieces[at] = None
                at += 1
                counts = list(map(int.__add__, counts, piece.counts)) if counts else list(piece.counts)
                yield piece.payload
            if not part.done:
                conductor.handle_messages()
                continue
            if part.joins is None:
                totals.format = plan.make_parser(0).format_for(counts)
                return
            next_number, at = part.joins[0], part.joins[1] + 1
            totals.pieces_read_again += at
            totals.parts_unused += next_number - number - 1
            conductor.forget_before(next_number)
            number = next_number
            following = conductor.part(number).pieces
            following[:at] = [None] * min(at, len(following))
    finally:
        conductor.stop()


class _Conductor:
    """The parent's side: starts the parts' processes, passes each the checkpoints of the parts after its
    own, and collects their results.

    At most ``jobs`` processes read their own part at once, and no part starts more than ``jobs`` parts past
    the one whose payloads are being handed out (unless a process reading on needs its checkpoints): pieces
    wait in memory until their turn, and a state that never meets must not fill it with a whole file's
    output.
    """

    def __init__(self, plan: _Plan, jobs: int, streams: Sequence[IO[str]]) -> None:
        self._plan = plan
        self._jobs = jobs
        self._streams = streams
        self._context = multiprocessing.get_context("fork")
        self._parts: dict[int, _Part] = {}
        self._started = 0
        self._reading_own = 0
        self._first_needed = 0
        self._line_counter = _LineCounter(plan.path)

    def fill(self) -> None:
        """Start parts while the limits allow."""
        while (
            self._started < self._plan.part_count
            and self._reading_own < self._jobs
            and self._started <= self._first_needed + self._jobs
        ):
            self._start()

    def _start(self) -> None:
        for stream in (*self._streams, sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        number = self._started
        lines_before = self._line_counter.lines_before(self._plan.bounds[number])
        mine, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_read_part, args=(theirs, self._plan, number, lines_before), daemon=True
        )
        process.start()
        theirs.close()
        self._parts[number] = _Part(process, mine)
        self._started += 1
        self._reading_own += 1

    def part(self, number: int) -> _Part:
        return self._parts[number]

    def forget_before(self, number: int) -> None:
        """The parts before ``number`` are done with (handed out, or read by an earlier part's process)."""
        for old in [old for old in self._parts if old < number]:
            part = self._parts.pop(old)
            if part.piece_count is None:
                self._reading_own -= 1
            part.stop()
        self._first_needed = number
        self.fill()

    def stop(self) -> None:
        for part in self._parts.values():
            part.stop()
        self._parts.clear()

    def handle_messages(self) -> None:
        """Wait for messages from the processes and act on them."""
        live = {id(part.conn): (number, part) for number, part in self._parts.items() if not part.done}
        for conn in wait([part.conn for _, part in live.values()]):
            number, part = live[id(conn)]
            try:
                message: tuple[Any, ...] = part.conn.recv()
            except EOFError:
                path = self._plan.path
                raise ParallelReadError(f"{path}: the process reading part {number + 1} died") from None
            kind = message[0]
            if kind == "piece":
                part.pieces.append(message[2])
                if len(message) > 3:
                    part.checkpoints.append((message[3], message[4]))
            elif kind == "own_done":
                part.piece_count = message[2]
                self._reading_own -= 1
                self.fill()
            elif kind == "need":
                part.waiting_for = (message[1], message[2])
                if message[1] >= self._started:
                    # A process reading on past every part started: its next part must start now.
                    self._start()
            elif kind == "joins":
                part.joins = message[2]
                part.done = True
            elif kind == "error":
                raise ParallelReadError(message[2])
            else:
                raise RuntimeError(f"reading part {number + 1} of {self._plan.path} failed:\n{message[2]}")
        for part in self._parts.values():
            if part.waiting_for is not None and self._answer(part, *part.waiting_for):
                part.waiting_for = None

    def _answer(self, requester: _Part, number: int, index: int) -> bool:
        """Send ``requester`` checkpoint ``index`` of part ``number``, or word that the part has no more
        pieces; False when neither is known yet."""
        part = self._parts[number]
        if index < len(part.checkpoints):
            requester.conn.send(("checkpoint", *part.checkpoints[index]))
            return True
        if part.piece_count is not None and index >= part.piece_count:
            requester.conn.send(("part_end",))
            return True
        return False
