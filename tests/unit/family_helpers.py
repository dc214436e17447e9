"""Shared helpers for the log parser tests: lines as the engine hands them over, hits per line, and what the
whole engine makes of lines fed one at a time (the reference the block and column paths are held to)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.base import Hit, LineFamily
from trainmon_tui.parsers.trainlog.engine import LogParser

#: What a parser made of some lines: records, events, the format it detected and the ranks it saw.
Outcome = tuple[list[LogRecord], list[LogEvent], str | None, frozenset[int]]

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"

# What the engine removes before a family sees a line: a [rankN]: prefix and a timestamp at the very start.
_ENGINE_PREFIX = re.compile(r"(?:\[rank\d+\]:)?(?:\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\]?\s*)?")


def read_fixture_lines(folder: str, name: str) -> list[str]:
    return (LOGS / folder / name).read_text(encoding="utf-8").splitlines()


def engine_cleaned(line: str) -> str:
    prefix = _ENGINE_PREFIX.match(line)
    return line[prefix.end() :] if prefix else line


def physical_lines(path: Path) -> list[str]:
    """The file's lines as the engine reads them: split on newline only."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def family_hits(family_type: type[LineFamily], lines: list[str]) -> dict[int, Hit]:
    """Feed every line to one family instance; 1-based line number -> Hit. A hit must pass the gate."""
    family = family_type()
    found: dict[int, Hit] = {}
    for number, line in enumerate(lines, start=1):
        hit = family.parse(line)
        if hit is not None:
            assert any(token in line for token in family_type.gate), line
            found[number] = hit
    return found


def line_by_line(lines: Iterable[str], parser: LogParser | None = None) -> Outcome:
    """Every line through ``LogParser.feed`` one at a time, then ``finish``."""
    parser = parser or LogParser()
    records: list[LogRecord] = []
    events: list[LogEvent] = []
    for line in lines:
        new_records, new_events = parser.feed(line)
        records += new_records
        events += new_events
    new_records, new_events = parser.finish()
    return records + new_records, events + new_events, parser.format, parser.ranks
