"""`trainmon-tui parse-log`: stream one log through the parser and print what it read, as text or JSON.

Streams: records are written (JSON, :mod:`~trainmon_tui.parselog_json`) or folded into a per-rank summary
(text, :mod:`~trainmon_tui.parselog_summary`) as they come, so memory does not grow with the size of the log;
a large file is read in parts by several processes (:mod:`~trainmon_tui.parselog_parallel`). Everything
printed that came from the log is made inert and has its secrets masked.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from functools import partial
from typing import IO, Any

from trainmon_tui.parselog_json import JsonPieces, RecordEncoder, event_to_json, record_to_json
from trainmon_tui.parselog_parallel import (
    DEFAULT_SIZES,
    ParallelReadError,
    PartSizes,
    ReadTotals,
    can_read_in_parts,
    default_jobs,
    read_in_parts,
)
from trainmon_tui.parselog_read import LineBlock, LogReadError, iter_log_blocks, open_log
from trainmon_tui.parselog_summary import (
    ParseSummary,
    RankSummary,
    SummaryPieces,
    with_block_ends,
    write_text,
)
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.parsers.trainlog.paths import rank_from_path
from trainmon_tui.sanitize import clean_remote_text

# What the tests and the benchmarks use of the formats, from where the command puts them together.
__all__ = [
    "LogReadError",
    "ParseSummary",
    "RankSummary",
    "RecordEncoder",
    "event_to_json",
    "iter_log_blocks",
    "open_log",
    "record_to_json",
    "run_parse_log",
    "summarise",
    "write_json",
    "write_text",
]


def _default_rank(path: str) -> int | None:
    return None if path == "-" else rank_from_path(os.path.basename(path))


def _parser_for(path: str, lines_before: int = 0) -> LogParser:
    return LogParser(default_rank=_default_rank(path), lines_before=lines_before)


def summarise(path: str, jobs: int = 1, sizes: PartSizes = DEFAULT_SIZES) -> ParseSummary:
    """The summary of the log at ``path``; a large file (see ``sizes``) is read by up to ``jobs``
    processes."""
    summary = ParseSummary(path=path)
    if can_read_in_parts(path, jobs, sizes):
        totals = ReadTotals()
        for piece in read_in_parts(
            path,
            jobs=jobs,
            make_parser=partial(_parser_for, path),
            make_sink=SummaryPieces,
            totals=totals,
            sizes=sizes,
        ):
            summary.merge(piece)
        summary.format = totals.format
        return summary
    parser = _parser_for(path)
    for lines, encoded in iter_log_blocks(open_log(path), path):
        summary.lines += len(lines)
        records, events, blocks = parser.feed_block_columns(lines, encoded)
        if blocks:
            records = with_block_ends(records, blocks, summary)
        if records or events:
            summary.absorb(records, events)
    summary.absorb(*parser.finish())
    summary.format = parser.format
    return summary


def write_json(
    path: str, out: IO[str], jobs: int = 1, sizes: PartSizes = DEFAULT_SIZES, totals: ReadTotals | None = None
) -> None:
    """Stream ``{"records": [...], "events": [...], "format": ...}``: records are written as they are read (a
    large file, see ``sizes``, by up to ``jobs`` processes, a part at a time; ``totals`` tells how that
    went)."""
    if totals is None:
        totals = ReadTotals()
    pieces: Iterator[tuple[str | bytes, list[dict[str, Any]]]]
    if can_read_in_parts(path, jobs, sizes):
        pieces = read_in_parts(
            path,
            jobs=jobs,
            make_parser=partial(_parser_for, path),
            make_sink=partial(JsonPieces, as_bytes=True),
            totals=totals,
            sizes=sizes,
            streams=(out,),
        )
    else:
        pieces = _json_pieces(iter_log_blocks(open_log(path), path), path, totals)
    # Only once the log is open: a log that cannot be read prints nothing but its error.
    out.write('{"records": [')
    binary: IO[bytes] | None = getattr(out, "buffer", None)
    first = True
    events: list[dict[str, Any]] = []
    for text, new_events in pieces:
        if text:
            lead = "\n  " if first else ",\n  "
            if isinstance(text, str):
                out.write(lead + text)
            elif binary is not None:
                out.flush()
                binary.write(lead.encode("ascii") + text)
            else:
                out.write(lead + text.decode("ascii"))
            first = False
        events += new_events
    out.write("\n],\n")
    out.write(' "events": ' + json.dumps(events) + ",\n")
    out.write(' "format": ' + json.dumps(totals.format) + "}\n")


def _json_pieces(
    blocks: Iterator[LineBlock], path: str, totals: ReadTotals
) -> Iterator[tuple[str | bytes, list[dict[str, Any]]]]:
    """write_json's pieces read by one parser in this process: a block at a time, then its finish."""
    parser = _parser_for(path)
    sink = JsonPieces()
    for lines, encoded in blocks:
        records, events, column_blocks = parser.feed_block_columns(lines, encoded)
        if records or events or column_blocks:
            sink.take(lines, records, events, column_blocks)
            yield sink.payload()
    sink.take_finish(*parser.finish())
    yield sink.payload()
    totals.format = parser.format


def run_parse_log(path: str, *, as_json: bool, out: IO[str], jobs: int | None = 1) -> int:
    """Exit status: 0 when the log was read, 2 when it could not be, 141 when the output was closed early
    (``| head``), 130 on Ctrl-C. A large file is read by up to ``jobs`` processes (None:
    parselog_parallel.default_jobs()), with the same output."""
    if jobs is None:
        jobs = default_jobs()
    try:
        if as_json:
            write_json(path, out, jobs)
        else:
            write_text(summarise(path, jobs), out)
        out.flush()
    except (LogReadError, ParallelReadError) as exc:
        print(f"trainmon-tui parse-log: {clean_remote_text(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away: nothing left to say, and nothing to flush into the closed pipe at exit.
        _silence(out)
        return 141
    except KeyboardInterrupt:
        return 130
    return 0


def _silence(out: IO[str]) -> None:
    """Point ``out``'s descriptor at /dev/null, so the interpreter's flush at exit finds no closed pipe; an
    output without a descriptor (a StringIO) has nothing to flush there, so failing here loses nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
