"""Count the CPU instructions parse-log spends per line of the benchmark's mixed log, with valgrind.

Timings on a shared 2-core box move by 30 % from hour to hour; instruction counts do not (runs agree within
0.1 %), so this is how changes to the parser are compared. The count is valgrind's ``Ir`` (instructions
executed) of a process that parses ``--warm`` + ``--lines`` lines, minus that of one that parses the
``--warm`` lines only: start-up, imports and reading the input cancel out.

    .venv/bin/python benchmarks/count_instructions.py            # the text summary, the parser, JSON
    .venv/bin/python benchmarks/count_instructions.py --mode text

The lines are from 80,000 lines of the middle of ``benchmarks/data/mixed_1000000.log`` (built by
bench_parse_log.py, the slice kept in benchmarks/data), fed as parse-log feeds them: blocks of lines with the
bytes they were decoded from.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_parse_log import DATA, build_input  # noqa: E402

MODES = ("text", "none", "json")
_BLOCK_LINES = 8192
_SLICE_START = 400_000
_SLICE_LINES = 80_000
_IR_RE = re.compile(rb"I\s+refs:\s+([\d,]+)")
SLICE = DATA / f"mixed_slice_{_SLICE_LINES}.log"


def write_slice() -> None:
    """Write (once) the slice of the 1M-line log that is counted, so that valgrind need not read it all."""
    if SLICE.exists():
        return
    with build_input(1_000_000).open("rb") as handle:
        lines = handle.read().split(b"\n")[_SLICE_START : _SLICE_START + _SLICE_LINES]
    partial = SLICE.with_suffix(".partial")
    partial.write_bytes(b"\n".join(lines) + b"\n")
    partial.rename(SLICE)


def _blocks() -> list[tuple[list[str], bytes]]:
    """The slice's lines in blocks, each with its bytes, as parselog_read.iter_log_blocks gives them."""
    lines = SLICE.read_bytes().split(b"\n")[:_SLICE_LINES]
    blocks = []
    for at in range(0, len(lines), _BLOCK_LINES):
        encoded = b"\n".join(lines[at : at + _BLOCK_LINES]) + b"\n"
        blocks.append((encoded.decode("utf-8", "replace").split("\n")[:-1], encoded))
    return blocks


def parse(mode: str, warm: int, count: int) -> None:
    """Parse ``warm`` + ``count`` lines of the slice (whole blocks), the output made as ``mode`` says:
    ``text`` (the summary), ``json`` (the record text) or ``none`` (the parser alone)."""
    from trainmon_tui.gc_policy import settle_collector  # noqa: PLC0415 - imported in the child only
    from trainmon_tui.parselog_json import JsonPieces  # noqa: PLC0415
    from trainmon_tui.parselog_summary import SummaryPieces  # noqa: PLC0415
    from trainmon_tui.parsers.trainlog.engine import LogParser  # noqa: PLC0415

    # Every block is made before parsing starts, so that both processes do the same work outside it.
    blocks = _blocks()[: -(-(warm + count) // _BLOCK_LINES)]
    settle_collector()
    parser = LogParser()
    sink = SummaryPieces() if mode == "text" else JsonPieces() if mode == "json" else None
    for lines, encoded in blocks:
        records, events, column_blocks = parser.feed_block_columns(lines, encoded)
        if sink is not None:
            sink.take(lines, records, events, column_blocks)
    if sink is not None:
        sink.payload()


def instructions(mode: str, warm: int, count: int) -> int:
    """valgrind's instruction count of a process that runs :func:`parse`."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--mode",
        mode,
        "--warm",
        str(warm),
        "--lines",
        str(count),
    ]
    done = subprocess.run(command, capture_output=True, check=True, cwd=ROOT)
    found = _IR_RE.search(done.stderr)
    if found is None:
        raise SystemExit(
            f"no instruction count in valgrind's output:\n{done.stderr.decode(errors='replace')}"
        )
    return int(found[1].replace(b",", b""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mode", choices=MODES, action="append", help="what to count (default: all three)")
    parser.add_argument("--warm", type=int, default=_BLOCK_LINES, help="lines parsed first, not counted")
    parser.add_argument("--lines", type=int, default=5 * _BLOCK_LINES, help="lines counted")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        parse(args.mode[0], args.warm, args.lines)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install -y valgrind)")
    write_slice()
    print(f"instructions per line over {args.lines:,} lines after {args.warm:,} (valgrind Ir):")
    for mode in args.mode or MODES:
        per_line = (instructions(mode, args.warm, args.lines) - instructions(mode, args.warm, 0)) / args.lines
        label = {"text": "parse-log, text summary", "none": "parser alone", "json": "parse-log --json"}[mode]
        print(f"| {label} | {per_line:,.0f} |")


if __name__ == "__main__":
    main()
