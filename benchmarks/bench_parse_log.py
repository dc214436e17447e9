"""Measure how fast the training-log engine reads a large mixed-format log, against a bare read of it.

Run from the repository root: ``python benchmarks/bench_parse_log.py [--lines N] [--repeat R]``.

The input is built deterministically into ``benchmarks/data/`` (git-ignored) from every real log under
``tests/fixtures/logs/``: the files are concatenated again and again, each copy with its step/iteration
counters advanced so that no two copies are identical. The two logs made of huge ``\\r``-redrawn lines (one
physical line holding 500-1300 bar states) go into one copy in ten, about as often as such a line appears in a
real run.

Two loops are timed over the same file, each the median of several runs:

* a bare ``for line in file`` (the floor: Python's own reading and decoding);
* the full engine as ``parse-log`` drives it: open with ``errors="replace"`` and ``newline="\\n"``, strip
  the line ending, ``LogParser.feed`` every line (cleaning, prefixes, format detection, families, events,
  records), then ``finish``.

The result is printed as a small Markdown table with lines per second and the ratio between the two, followed
by the engine's time per line for each fixture folder alone (one log family each), so a slow one shows.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainmon_tui.parsers.trainlog.engine import LogParser  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "logs"
DATA = ROOT / "benchmarks" / "data"
# Logs whose lines are tens of kilobytes of redraws: realistic once in a while, not in every copy.
RARE = (
    "basicsr_iqa_epoch_iter_eta_with_raw_cr_validation_bar.txt",
    "hf_trainer_raw_cr_tqdm_then_keyboardinterrupt.txt",
)
RARE_EVERY = 10
# Counters that advance from copy to copy: "step:120", "iter 5", "iteration  30/", "num_updates=4", "Iter [1".
COUNTER_RE = re.compile(
    r"((?:\b(?:step|iter|iteration|num_updates|global_step)\b|Iter \[)\s*[:=]?\s*)(\d{1,9})"
)
STEP_ADVANCE = 100_000


def _source_logs() -> list[tuple[str, list[str]]]:
    logs = []
    for path in sorted(FIXTURES.rglob("*.txt")):
        with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
            logs.append((path.name, handle.read().split("\n")))
    if not logs:
        raise SystemExit(f"no logs under {FIXTURES}")
    return logs


def build_input(min_lines: int) -> Path:
    """Write (once) a log of at least ``min_lines`` lines and return its path."""
    target = DATA / f"mixed_{min_lines}.log"
    if target.exists():
        return target
    DATA.mkdir(parents=True, exist_ok=True)
    logs = _source_logs()
    written = 0
    copy = 0
    partial = target.with_suffix(".partial")
    with partial.open("w", encoding="utf-8", newline="\n") as out:
        while written < min_lines:
            offset = copy * STEP_ADVANCE

            def advance(match: re.Match[str], offset: int = offset) -> str:
                return match[1] + str(int(match[2]) + offset)

            for name, lines in logs:
                if name in RARE and copy % RARE_EVERY:
                    continue
                for line in lines:
                    out.write(COUNTER_RE.sub(advance, line) if offset else line)
                    out.write("\n")
                written += len(lines)
            copy += 1
    partial.rename(target)
    return target


class Outcome(NamedTuple):
    lines: int
    records: int = 0
    events: int = 0
    detected: str | None = None


def bare_read(path: Path) -> Outcome:
    count = 0
    with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
        for _line in handle:
            count += 1
    return Outcome(count)


def full_parse(path: Path) -> Outcome:
    parser = LogParser()
    count = 0
    records = 0
    events = 0
    with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
        for line in handle:
            count += 1
            new_records, new_events = parser.feed(line.rstrip("\r\n"))
            records += len(new_records)
            events += len(new_events)
    new_records, new_events = parser.finish()
    return Outcome(count, records + len(new_records), events + len(new_events), parser.format)


def per_folder(min_lines: int = 20_000) -> list[tuple[str, int, float]]:
    """(folder, lines, seconds) for the engine over each fixture folder's logs repeated to ``min_lines``."""
    results = []
    for folder in sorted(path for path in FIXTURES.iterdir() if path.is_dir()):
        lines: list[str] = []
        for path in sorted(folder.glob("*.txt")):
            with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
                lines.extend(handle.read().split("\n"))
        if not lines:
            continue
        lines = lines * max(1, min_lines // len(lines))
        best = float("inf")
        for _ in range(2):
            parser = LogParser()
            start = time.perf_counter()
            for line in lines:
                parser.feed(line)
            parser.finish()
            best = min(best, time.perf_counter() - start)
        results.append((folder.name, len(lines), best))
    return results


def _median_seconds(run: Callable[[Path], Outcome], path: Path, repeat: int) -> tuple[float, Outcome]:
    times = []
    outcome = Outcome(0)
    for _ in range(repeat):
        start = time.perf_counter()
        outcome = run(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--lines", type=int, default=1_000_000, help="minimum lines in the input (default 1M)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the median is reported")
    args = parser.parse_args()

    path = build_input(args.lines)
    size_mb = path.stat().st_size / 1e6
    bare_s, bare = _median_seconds(bare_read, path, args.repeat)
    full_s, full = _median_seconds(full_parse, path, args.repeat)
    lines, records, events, detected = full
    if lines != bare.lines:
        raise SystemExit(f"line counts differ: bare {bare.lines}, engine {lines}")

    print(
        f"input: {path.relative_to(ROOT)} ({lines:,} lines, {size_mb:.1f} MB); median of {args.repeat} runs"
    )
    print(f"engine output: {records:,} records, {events:,} events, format of the whole file: {detected}")
    print()
    print("| loop | median s | lines/s | us/line |")
    print("|---|---:|---:|---:|")
    for label, seconds in (("bare `for line in file`", bare_s), ("LogParser (parse-log)", full_s)):
        print(f"| {label} | {seconds:.3f} | {lines / seconds:,.0f} | {seconds / lines * 1e6:.2f} |")
    print()
    print(f"engine / bare time ratio: {full_s / bare_s:.1f}x; target >= 250,000 lines/s: ", end="")
    print("met" if lines / full_s >= 250_000 else "NOT met")
    print()
    print("| fixture folder | lines | us/line |")
    print("|---|---:|---:|")
    for folder, count, seconds in per_folder():
        print(f"| {folder} | {count:,} | {seconds / count * 1e6:.2f} |")


if __name__ == "__main__":
    main()
