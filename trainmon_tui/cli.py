"""Command line: argument parsing and dispatch to subcommands. Errors in input exit with status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trainmon_tui.gc_policy import settle_collector


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainmon-tui",
        description=(
            "Watch training runs on GPU hosts: GPUs, processes, logs, ETA and alerts. Without a command it "
            "opens the dashboard: on the hosts of --hosts FILE, on the simulated cluster with --demo, else "
            "on this machine."
        ),
        epilog=(
            "The dashboard never logs to the terminal: warnings and errors go to "
            "$XDG_STATE_HOME/trainmon-tui/dashboard.log (default ~/.local/state/trainmon-tui/dashboard.log). "
            "Exit status 2: a bad hosts file."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--hosts", metavar="FILE", help="hosts.yaml: the hosts and runs to watch (default: this machine)"
    )
    source.add_argument(
        "--demo", action="store_true", help="open the dashboard on a built-in simulated cluster (no setup)"
    )
    sub = parser.add_subparsers(dest="command")
    parse_log = sub.add_parser("parse-log", help="show what trainmon-tui reads in a training log")
    parse_log.add_argument("path", help="log file to read ('-' for standard input)")
    parse_log.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parse_log.add_argument(
        "--jobs",
        type=_job_count,
        default=None,
        metavar="N",
        help="processes to read a large log with, same output (default: one per CPU, at most 8; 1: this one)",
    )
    report = sub.add_parser(
        "report",
        help="collect from every host for a while and print a status report",
        description="Exit status: 0 all hosts up, 1 a host was not up at the end, 2 a bad hosts file.",
    )
    report.add_argument(
        "--hosts", required=True, metavar="FILE", help="hosts.yaml: the hosts and runs to watch"
    )
    report.add_argument(
        "--seconds",
        type=_positive_seconds,
        default=10.0,
        metavar="N",
        help="how long to collect before reporting (default 10)",
    )
    report.add_argument(
        "--format", choices=("markdown", "json"), default="markdown", help="output format (default markdown)"
    )
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _job_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of processes: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def entry() -> int:
    """The program as installed (``trainmon-tui``, ``python -m trainmon_tui``): :func:`main` on the command
    line, in a process whose garbage collector runs rarely (:mod:`trainmon_tui.gc_policy`)."""
    return main(settle_gc=True)


def main(argv: Sequence[str] | None = None, *, settle_gc: bool = False) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Each subcommand imports its module when chosen, so reading a log never loads asyncssh or textual.
    if args.command == "parse-log":
        from trainmon_tui.parselog_cmd import run_parse_log  # noqa: PLC0415

        _settle(settle_gc)
        return run_parse_log(args.path, as_json=args.json, out=sys.stdout, jobs=args.jobs)
    if args.command == "report":
        from trainmon_tui.report_cmd import run_report  # noqa: PLC0415

        _settle(settle_gc)
        return run_report(args.hosts, seconds=args.seconds, output_format=args.format)
    from trainmon_tui.dashboard_cmd import run_dashboard  # noqa: PLC0415

    _settle(settle_gc)
    return run_dashboard(hosts_file=args.hosts, demo=args.demo)


def _settle(settle_gc: bool) -> None:
    # Once the command's modules are loaded, so that they are among the objects frozen.
    if settle_gc:
        settle_collector()
