"""``python -m trainmon_tui.demo serve``: run the demo cluster's SSH servers in a process of their own.

For benchmarks, which measure the dashboard's CPU without the simulator in the same process: the servers
listen on 127.0.0.1, the hosts.yaml written to ``--config-out`` names them (with the private key and
known_hosts, which live in a temporary directory removed on exit), and the process serves until SIGINT or
SIGTERM. The file appears only once every server is listening (it is written whole, then renamed), so a
script can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from trainmon_tui.demo.cluster import DEFAULT_DROP, DropSchedule
from trainmon_tui.demo.server import DemoCluster


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainmon_tui.demo",
        description="The simulated GPU cluster behind `trainmon-tui --demo`, served over SSH on 127.0.0.1.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve the simulated hosts until SIGINT/SIGTERM",
        description=(
            "Start one SSH server per simulated host on 127.0.0.1, write a hosts.yaml for "
            "`trainmon-tui --hosts` (or load_config) to CONFIG_OUT once all are listening, and serve until "
            "interrupted (SIGINT or SIGTERM). The client key and known_hosts the file names are removed on "
            "exit."
        ),
    )
    serve.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3, at least 2)")
    serve.add_argument("--gpus", type=int, default=8, help="GPUs per host (default 8, at least 2)")
    serve.add_argument("--seed", type=int, default=1, help="seed of the simulation (default 1)")
    serve.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)"
    )
    serve.add_argument("--no-drop", action="store_true", help="the last host never drops off the network")
    serve.add_argument(
        "--drop-every",
        type=float,
        default=DEFAULT_DROP.every_s,
        metavar="SECONDS",
        help=f"simulated seconds between outages of the last host (default {DEFAULT_DROP.every_s:g})",
    )
    serve.add_argument(
        "--drop-for",
        type=float,
        default=DEFAULT_DROP.down_s,
        metavar="SECONDS",
        help=f"simulated seconds each outage lasts (default {DEFAULT_DROP.down_s:g})",
    )
    serve.add_argument(
        "--config-out", required=True, metavar="PATH.yaml", help="where to write the hosts.yaml (required)"
    )
    return parser


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


async def serve(args: argparse.Namespace) -> int:
    drop = None if args.no_drop else DropSchedule(DEFAULT_DROP.first_at_s, args.drop_every, args.drop_for)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with DemoCluster(args.hosts, args.gpus, seed=args.seed, speed=args.speed, drop=drop) as cluster:
        out = Path(args.config_out)
        _write_atomically(out, cluster.config_text)
        print(
            f"serving {args.hosts} hosts x {args.gpus} GPUs on 127.0.0.1 "
            f"(ready in {cluster.startup_s:.3f} s); config in {out}; stop with Ctrl-C",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        drop_ok = args.no_drop or 0 < args.drop_for < args.drop_every
        if args.hosts < 2 or args.gpus < 2 or not args.speed > 0 or not drop_ok:
            parser.error("need --hosts >= 2, --gpus >= 2, --speed > 0 and 0 < --drop-for < --drop-every")
        return asyncio.run(serve(args))
    except OSError as error:
        print(f"python -m trainmon_tui.demo: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
