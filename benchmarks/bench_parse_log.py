"""Measure how fast ``trainmon-tui parse-log`` reads a large mixed-format log, against a bare read of it.

Run from the repository root: ``python benchmarks/bench_parse_log.py [--lines N] [--repeat R]``.

The input is built deterministically into ``benchmarks/data/`` (git-ignored) from every real log under
``tests/fixtures/logs/``: the files are concatenated again and again, each copy with its step/iteration
counters advanced so that no two copies are identical. The two logs made of huge ``\\r``-redrawn lines (one
physical line holding 500-1300 bar states) go into one copy in ten, about as often as such a line appears in a
real run.

Timed over the same file in the same run, each the median of several runs (their order interleaved, so a
change in the machine's load hits all of them alike), by the wall clock and by this process's CPU time (on a
shared box the second moves less):

* a bare ``for line in file`` (the floor: Python's own reading and decoding);
* ``parse-log --json`` as the command runs it (:func:`~trainmon_tui.parselog_cmd.write_json`: blocks of lines
  read and split, ``LogParser.feed_block`` on each, every record JSON-encoded and written to ``/dev/null``);
* the parser alone (the same blocks through ``feed_block``, nothing encoded);
* ``parse-log`` without ``--json`` (the per-rank text summary);
* both again read in parts by ``--jobs`` processes (default: one per CPU), as the command does by default
  for a file this large (``parselog_parallel``); their CPU column adds up every process's time. Before the
  timings, both outputs of the parallel read are compared byte for byte with the one-process read.

With ``--before DIR`` (a copy of the package at an earlier commit, e.g. ``git archive REV trainmon_tui | tar
-x -C DIR``), the same three paths of that copy and of the working tree run side by side in this process,
interleaved, and their medians are compared. Last but one come the costs of the C-level steps every record
needs whatever the Python around them (a float parsed and printed back, a metrics dict, a LogRecord), which
bound what any engine in Python can reach on this machine.

Then the real command runs once end to end (``trainmon-tui parse-log FILE --json > /dev/null`` as a
subprocess: interpreter start, imports and all), timed by the wall clock. The machine's load average is
printed before and after: the box is shared, and the numbers mean little without it. Last comes the parser's
time per line for each fixture folder alone (one log family each), so a slow family shows.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import io
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainmon_tui.parselog_cmd import (  # noqa: E402
    iter_log_blocks,
    open_log,
    summarise,
    write_json,
    write_text,
)
from trainmon_tui.parselog_parallel import default_jobs  # noqa: E402
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
TARGET_LINES_PER_S = 250_000


def _source_logs() -> list[tuple[str, list[str]]]:
    logs = []
    for path in sorted(FIXTURES.rglob("*.txt")):
        with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
            logs.append((path.name, handle.read().split("\n")))
    if not logs:
        raise SystemExit(f"no logs under {FIXTURES}")
    return logs


def mixed_lines(min_lines: int) -> Iterator[str]:
    """The benchmark's log, line by line (no line endings): at least ``min_lines`` lines, whole copies."""
    logs = _source_logs()
    written = 0
    copy = 0
    while written < min_lines:
        offset = copy * STEP_ADVANCE

        def advance(match: re.Match[str], offset: int = offset) -> str:
            return match[1] + str(int(match[2]) + offset)

        for name, lines in logs:
            if name in RARE and copy % RARE_EVERY:
                continue
            for line in lines:
                yield COUNTER_RE.sub(advance, line) if offset else line
            written += len(lines)
        copy += 1


def build_input(min_lines: int) -> Path:
    """Write (once) a log of at least ``min_lines`` lines and return its path."""
    target = DATA / f"mixed_{min_lines}.log"
    if target.exists():
        return target
    DATA.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("w", encoding="utf-8", newline="\n") as out:
        for line in mixed_lines(min_lines):
            out.write(line)
            out.write("\n")
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


def parse_log_json(path: Path) -> Outcome:
    """Exactly what ``parse-log FILE --json`` runs, its output thrown away as ``> /dev/null`` would."""
    with open(os.devnull, "w", encoding="utf-8") as sink:
        write_json(str(path), sink)
    return Outcome(0)


def parse_log_text(path: Path, jobs: int = 1) -> Outcome:
    """What ``parse-log FILE`` runs before it prints its summary (the printing is a few lines)."""
    summary = summarise(str(path), jobs)
    return Outcome(summary.lines, summary.record_count, sum(summary.event_counts.values()), summary.format)


def parse_log_json_jobs(path: Path, jobs: int) -> Outcome:
    with open(os.devnull, "w", encoding="utf-8") as sink:
        write_json(str(path), sink, jobs)
    return Outcome(0)


def _digest_of_outputs(path: Path, jobs: int) -> tuple[str, str]:
    """SHA-256 of the JSON and of the text output, read by ``jobs`` processes."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as json_out:
        write_json(str(path), json_out, jobs)
        json_out.flush()
        json_digest = hashlib.file_digest(json_out.buffer, "sha256")  # type: ignore[arg-type]
    with io.StringIO() as text_out:
        write_text(summarise(str(path), jobs), text_out)
        text_digest = hashlib.sha256(text_out.getvalue().encode("utf-8"))
    return json_digest.hexdigest(), text_digest.hexdigest()


def parser_only(path: Path) -> Outcome:
    """The blocks ``parse-log`` reads, through the parser, nothing encoded: the engine's own rate."""
    parser = LogParser()
    count = records = events = 0
    for lines, encoded in iter_log_blocks(open_log(str(path)), str(path)):
        count += len(lines)
        new_records, new_events = parser.feed_block(lines, encoded)
        records += len(new_records)
        events += len(new_events)
    new_records, new_events = parser.finish()
    return Outcome(count, records + len(new_records), events + len(new_events), parser.format)


def per_folder(min_lines: int = 20_000) -> list[tuple[str, int, float]]:
    """(folder, lines, seconds) for the parser over each fixture folder's logs repeated to ``min_lines``."""
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
        for _ in range(3):
            parser = LogParser()
            start = time.perf_counter()
            for at in range(0, len(lines), 4096):
                parser.feed_block(lines[at : at + 4096])
            parser.finish()
            best = min(best, time.perf_counter() - start)
        results.append((folder.name, len(lines), best))
    return results


def _cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (the processes of a parallel read)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _interleaved_medians(
    runs: Mapping[str, Callable[[Path], Outcome]], path: Path, repeat: int
) -> dict[str, tuple[float, float, Outcome]]:
    """(median wall-clock seconds, median CPU seconds of this process, outcome) per run."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    cpu_times: dict[str, list[float]] = {label: [] for label in runs}
    outcomes: dict[str, Outcome] = {}
    for _ in range(repeat):
        for label, run in runs.items():
            start = time.perf_counter()
            cpu_start = _cpu_seconds()
            outcomes[label] = run(path)
            cpu_times[label].append(_cpu_seconds() - cpu_start)
            times[label].append(time.perf_counter() - start)
    return {
        label: (statistics.median(times[label]), statistics.median(cpu_times[label]), outcomes[label])
        for label in runs
    }


def _load_package(root: Path) -> tuple[ModuleType, ModuleType]:
    """parselog_cmd and the engine of the trainmon_tui package under ``root``, imported afresh (the modules
    already imported keep working: their functions hold their own globals)."""
    for name in [name for name in sys.modules if name == "trainmon_tui" or name.startswith("trainmon_tui.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        command = importlib.import_module("trainmon_tui.parselog_cmd")
        engine = importlib.import_module("trainmon_tui.parsers.trainlog.engine")
    finally:
        sys.path.remove(str(root))
    return command, engine


def _paths_of(command: ModuleType, engine: ModuleType) -> dict[str, Callable[[Path], Outcome]]:
    def as_json(path: Path) -> Outcome:
        with open(os.devnull, "w", encoding="utf-8") as sink:
            command.write_json(str(path), sink)
        return Outcome(0)

    def parser_alone(path: Path) -> Outcome:
        parser = engine.LogParser()
        for block in command.iter_log_blocks(command.open_log(str(path)), str(path)):
            # A package from before the blocks carried their bytes yields the lines alone.
            if isinstance(block, list):
                parser.feed_block(block)
            else:
                parser.feed_block(*block)
        parser.finish()
        return Outcome(0)

    def as_text(path: Path) -> Outcome:
        command.summarise(str(path))
        return Outcome(0)

    return {
        "parse-log --json": as_json,
        "parser alone (feed_block)": parser_alone,
        "parse-log, text": as_text,
    }


def compare_before(before: Path, path: Path, repeat: int) -> None:
    """The three paths of the package under ``before`` and of the working tree, interleaved in this process;
    median CPU seconds of each and the speed-up."""
    old = _paths_of(*_load_package(before))
    new = _paths_of(*_load_package(ROOT))
    runs = {f"{label} | before": run for label, run in old.items()}
    runs.update({f"{label} | after": run for label, run in new.items()})
    # Interleave before and after of each path, so a change of load hits both alike.
    order = [f"{label} | {which}" for label in old for which in ("before", "after")]
    results = _interleaved_medians({label: runs[label] for label in order}, path, repeat)
    lines = bare_read(path).lines
    print(f"before/after in one process (before: {before}), median of {repeat}, CPU seconds, load {_load()}")
    print("| path | before us/line | after us/line | before lines/CPU s | after lines/CPU s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in old:
        old_cpu = results[f"{label} | before"][1]
        new_cpu = results[f"{label} | after"][1]
        print(
            f"| {label} | {old_cpu / lines * 1e6:.2f} | {new_cpu / lines * 1e6:.2f} | {lines / old_cpu:,.0f} "
            f"| {lines / new_cpu:,.0f} | {old_cpu / new_cpu:.2f}x |"
        )


def floor_costs(path: Path, sample_lines: int = 200_000) -> None:
    """CPU microseconds of the C-level steps behind each record, on this machine, over the records of the
    first ``sample_lines`` lines of the input: what a record costs before any parsing logic."""
    with path.open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = [line.rstrip("\n") for _, line in zip(range(sample_lines), handle, strict=False)]
    parser = LogParser()
    records = parser.feed_block(lines)[0]
    values = [value for record in records for value in record.metrics.values()]
    texts = list(map(repr, values))
    items = [tuple(record.metrics.items()) for record in records]
    fields = [
        (r.line, r.rank, r.step, r.total_steps, r.epoch, r.total_epochs, r.batch, r.batches_per_epoch)
        for r in records
    ]
    from trainmon_tui.model import LogRecord  # noqa: PLC0415 - only here

    def cpu(step: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            step()
            best = min(best, time.process_time() - start)
        return best

    per_value = len(values)
    print(
        f"per-record floor ({len(records):,} records of the first {len(lines):,} lines, "
        f"{per_value / len(records):.2f} metrics each; CPU us, best of 3):"
    )
    print(
        f"- float() of a value's text: {cpu(lambda: list(map(float, texts))) / per_value * 1e6:.3f} per value"
    )
    print(
        f"- repr() of a float (JSON): {cpu(lambda: list(map(repr, values))) / per_value * 1e6:.3f} per value"
    )
    print(f"- a metrics dict: {cpu(lambda: list(map(dict, items))) / len(records) * 1e6:.3f} per record")
    made = cpu(lambda: [LogRecord(*f) for f in fields]) / len(records) * 1e6
    print(f"- a LogRecord (dataclass constructor): {made:.3f} per record")


def _cli_seconds(path: Path, options: Sequence[str], repeat: int) -> float:
    """Median wall-clock seconds of the real command (start-up included), output to /dev/null."""
    command = [sys.executable, "-m", "trainmon_tui", "parse-log", str(path), *options]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with open(os.devnull, "w") as sink:
            subprocess.run(command, stdout=sink, check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--lines", type=int, default=1_000_000, help="minimum lines in the input (default 1M)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the median is reported")
    parser.add_argument(
        "--before", type=Path, help="a copy of the package at an earlier commit, compared side by side"
    )
    parser.add_argument(
        "--jobs", type=int, default=default_jobs(), help="processes of the parallel rows (default: the CPUs)"
    )
    parser.add_argument(
        "--cli-repeat",
        type=int,
        default=3,
        help="runs of each real command (subprocess); the median is reported",
    )
    args = parser.parse_args()
    jobs = args.jobs

    path = build_input(args.lines)
    size_mb = path.stat().st_size / 1e6
    print(f"load average before: {_load()}")
    one_process = _digest_of_outputs(path, 1)
    in_parts = _digest_of_outputs(path, jobs)
    same = "identical" if one_process == in_parts else f"DIFFERENT ({one_process} vs {in_parts})"
    print(f"outputs of {jobs} processes and of one (JSON, text): {same}")
    json_jobs = f"parse-log --json, {jobs} processes"
    runs: dict[str, Callable[[Path], Outcome]] = {
        "bare `for line in file`": bare_read,
        "parse-log --json (parser + JSON)": parse_log_json,
        "parser alone (feed_block)": parser_only,
        "parse-log, text summary": parse_log_text,
        json_jobs: lambda p: parse_log_json_jobs(p, jobs),
        f"parse-log, text summary, {jobs} processes": lambda p: parse_log_text(p, jobs),
    }
    results = _interleaved_medians(runs, path, args.repeat)
    # The real command as a user runs it: the text summary (the default) and --json, one process and the
    # default number of processes.
    cli_runs = {
        f"`trainmon-tui parse-log FILE{json_flag} --jobs {count} > /dev/null`": _cli_seconds(
            path, [*json_flag.split(), "--jobs", str(count)], args.cli_repeat
        )
        for json_flag in ("", " --json")
        for count in (1, jobs)
    }
    lines, records, events, detected = results["parser alone (feed_block)"][2]
    if lines != results["bare `for line in file`"][2].lines:
        raise SystemExit(
            f"line counts differ: bare {results['bare `for line in file`'][2].lines}, parser {lines}"
        )

    print(f"load average after:  {_load()}")
    print(
        f"input: {path.relative_to(ROOT)} ({lines:,} lines, {size_mb:.1f} MB); median of {args.repeat} runs"
    )
    print(f"parser output: {records:,} records, {events:,} events, format of the whole file: {detected}")
    print()
    bare_s = results["bare `for line in file`"][0]
    # CPU time counts only this process's own work: on a shared box it moves less than the wall clock.
    print("| loop | median s | lines/s | us/line | x bare loop | median CPU s | lines/CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, (seconds, cpu_seconds, _) in results.items():
        print(
            f"| {label} | {seconds:.3f} | {lines / seconds:,.0f} | {seconds / lines * 1e6:.2f} "
            f"| {seconds / bare_s:.1f} | {cpu_seconds:.3f} | {lines / cpu_seconds:,.0f} |"
        )
    for label, seconds in cli_runs.items():
        print(
            f"| {label} (subprocess, wall, median of {args.cli_repeat}) "
            f"| {seconds:.3f} | {lines / seconds:,.0f} | {seconds / lines * 1e6:.2f} "
            f"| {seconds / bare_s:.1f} | - | - |"
        )
    print()
    rates = {
        label: lines / results[label][0]
        for label in (json_jobs, f"parse-log, text summary, {jobs} processes")
    }
    rates.update({label: lines / seconds for label, seconds in cli_runs.items() if f"--jobs {jobs}" in label})
    for label, rate in rates.items():
        verdict = "met" if rate >= TARGET_LINES_PER_S else "NOT met"
        print(f"target >= {TARGET_LINES_PER_S:,} lines/s, {label}: {verdict} ({rate:,.0f})")
    print()
    floor_costs(path)
    print()
    if args.before is not None:
        compare_before(args.before, path, args.repeat)
        print()
    print("| fixture folder | lines | us/line (parser alone) |")
    print("|---|---:|---:|")
    for folder, count, seconds in per_folder():
        print(f"| {folder} | {count:,} | {seconds / count * 1e6:.2f} |")


if __name__ == "__main__":
    main()
