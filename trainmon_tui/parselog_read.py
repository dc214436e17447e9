"""Reading a log for parse-log: open it, cut it into blocks of lines, each with the bytes it was decoded from.

Lines are split on ``\\n`` only: tqdm redraws with a bare ``\\r``, and Python's universal newlines would turn
every redraw into a line of its own and shift line numbers away from what ``wc -l`` and editors show. A line's
ending ``\\r`` (a ``\\r\\n`` file) is dropped. Undecodable bytes become U+FFFD.

The bytes go with the lines because the parser masks the lines' digits to find their shapes, and doing that on
the bytes read spares it encoding every line again (LogParser.feed_block_columns).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from itertools import repeat
from typing import IO, NamedTuple

# Bytes read per block: about ten thousand lines of a typical log, a few MB of memory at most.
_CHUNK_BYTES = 1 << 20


class LogReadError(Exception):
    """The log could not be opened or read; the message names the path and the reason."""


class LineBlock(NamedTuple):
    """Whole lines of a log, without their line endings, and the bytes they were decoded from (each line
    followed by its ``\\n``, the last one only if the file has it)."""

    lines: list[str]
    encoded: bytes


def open_log(path: str) -> IO[bytes]:
    """Open a log for reading (``-`` is standard input); a failure is a one-line LogReadError."""
    try:
        if path == "-":
            return open(sys.stdin.fileno(), "rb", closefd=False)
        return open(path, "rb")
    except OSError as exc:
        raise LogReadError(f"{path}: cannot read: {exc.strerror or exc}") from None


def iter_log_blocks(stream: IO[bytes], path: str, chunk_bytes: int = _CHUNK_BYTES) -> Iterator[LineBlock]:
    """The log's lines, many at a time, as ``for line in`` a text file opened with ``newline="\\n"`` gives
    them with ``line.rstrip("\\r\\n")``; closes the stream when done.

    Read a chunk at a time and split in one C call each: iterating a text file costs more per line than the
    parser spends on many lines. A block ends at the last line end of its chunk; a line longer than a chunk
    waits, in pieces, for its end.
    """
    with stream:
        waiting: list[bytes] = []
        try:
            while chunk := stream.read(chunk_bytes):
                end = chunk.rfind(b"\n") + 1
                if not end:
                    waiting.append(chunk)
                    continue
                if waiting:
                    waiting.append(chunk[:end])
                    data = b"".join(waiting)
                else:
                    data = chunk[:end] if end < len(chunk) else chunk
                waiting = [chunk[end:]] if end < len(chunk) else []
                yield LineBlock(decode_lines(data, at_end=False), data)
        except OSError as exc:
            raise LogReadError(f"{path}: read failed: {exc.strerror or exc}") from None
        rest = b"".join(waiting)
        if rest:
            # The last line had no newline; a file iterator yields it too.
            yield LineBlock(decode_lines(rest, at_end=True), rest)


def decode_lines(data: bytes, at_end: bool) -> list[str]:
    """The lines of ``data`` (whole lines, the last ending in a newline unless ``at_end``), as
    :func:`iter_log_blocks` reads them. ValueError when ``data`` ends inside a line and not ``at_end``."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    last = lines.pop()
    if last and at_end:
        lines.append(last)
    elif last:
        raise ValueError("a piece must end at a line end")
    if "\r\n" in text or (at_end and last.endswith("\r")):
        # Only a line's end loses its \r: the ones inside are tqdm redraws the parser reads.
        lines = list(map(str.rstrip, lines, repeat("\r")))
    return lines
