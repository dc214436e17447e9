"""Command line: argument parsing and dispatch to subcommands. Errors in input exit with status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainmon-tui",
        description="Watch training runs on GPU hosts: GPUs, processes, logs, ETA and alerts.",
    )
    sub = parser.add_subparsers(dest="command")
    parse_log = sub.add_parser("parse-log", help="show what trainmon-tui reads in a training log")
    parse_log.add_argument("path", help="log file to read ('-' for standard input)")
    parse_log.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "parse-log":
        from trainmon_tui.parselog_cmd import run_parse_log

        return run_parse_log(args.path, as_json=args.json, out=sys.stdout)
    parser.print_help()
    return 2
