"""The dashboard's entry points: config errors exit 2 with one file:line line, the store source delegates to
the fleet and reads the store at its clock, logs go to a file."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from trainmon_tui.cli import build_parser, main
from trainmon_tui.config import Config
from trainmon_tui.dashboard_cmd import (
    StoreSource,
    configure_logging,
    dashboard_title,
    log_file_path,
    run_dashboard,
)
from trainmon_tui.model import GpuSample
from trainmon_tui.transport.fleet import Fleet


def test_a_bad_hosts_file_is_one_line_on_stderr_and_status_2(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  - name: a\n    address: a.example\n    port: seventy\n", encoding="utf-8")
    err = io.StringIO()
    assert run_dashboard(hosts_file=str(hosts), err=err) == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"trainmon-tui: {hosts}:4: ") and "port" in lines[0]


def test_cli_passes_hosts_to_the_dashboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["--hosts", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_options_and_help_name_the_log_file() -> None:
    parser = build_parser()
    assert parser.parse_args(["--demo"]).demo is True
    assert parser.parse_args([]).hosts is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--demo", "--hosts", "x.yaml"])
    assert "trainmon-tui/dashboard.log" in " ".join(parser.format_help().split())


class FakeFleet:
    def __init__(self, config: Config, store: Any, *, clock: Any) -> None:
        self.config = config
        self.calls: list[object] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self, timeout: float) -> bool:
        self.calls.append(("stop", timeout))
        return False


async def test_store_source_reads_the_store_at_its_clock_and_drives_the_fleet() -> None:
    now = [50.0]
    fleet_factory = cast("Callable[..., Fleet]", FakeFleet)
    source = StoreSource(
        Config.local_default(), clock=lambda: now[0], fleet_factory=fleet_factory, stop_timeout_s=3
    )
    fleet = source.fleet
    assert isinstance(fleet, FakeFleet)
    await source.stop()  # never started: nothing to stop
    assert fleet.calls == []
    await source.start()
    await source.start()
    assert fleet.calls == ["start"]
    before = source.version
    source.store.apply_gpu("local", GpuSample(gpu=0, sm_pct=55.0), 49.0)
    assert source.version > before
    now[0] = 60.0
    snapshot = source.snapshot()
    assert snapshot.now == 60.0 and snapshot.hosts["local"].gpus[0].latest.sm_pct == 55.0
    await source.stop()
    assert fleet.calls == ["start", ("stop", 3)]
    assert source.stopped_cleanly is False


def test_logs_go_to_the_xdg_state_file_never_to_stderr(tmp_path: Path) -> None:
    path = log_file_path({"XDG_STATE_HOME": str(tmp_path)})
    assert path == tmp_path / "trainmon-tui" / "dashboard.log"
    assert log_file_path({"HOME": "/nowhere"}).parts[-3:] == ("state", "trainmon-tui", "dashboard.log")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = logging.StreamHandler(io.StringIO())
    root.addHandler(stream)
    try:
        assert configure_logging(path) == path
        assert stream not in root.handlers
        logging.getLogger("trainmon_tui.test").warning("host h1 went down")
        for handler in root.handlers:
            handler.flush()
        assert "host h1 went down" in path.read_text(encoding="utf-8")
    finally:
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(saved[1])


def test_title_names_the_hosts_file_or_this_machine() -> None:
    assert dashboard_title(Config.local_default()) == "this machine"
    assert dashboard_title(Config(hosts=(), runs=(), source="/etc/trainmon/hosts.yaml")) == "hosts.yaml"


def test_the_dashboard_paints_before_it_imports_the_collection_side() -> None:
    # asyncssh and the transport take a third of a second to import: they load when collection starts,
    # after the first frame, not when the command module is imported.
    code = (
        "import sys, trainmon_tui.dashboard_cmd; "
        "print(sorted(m for m in ('asyncssh', 'trainmon_tui.transport.fleet', 'trainmon_tui.demo') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
