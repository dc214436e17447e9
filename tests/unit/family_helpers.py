"""Shared helpers for the per-family log tests: lines as the engine hands them over, and hits per line."""

from __future__ import annotations

import re
from pathlib import Path

from trainmon_tui.parsers.trainlog.base import Hit, LineFamily

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
