"""`trainmon-tui report` end to end: the CLI as a subprocess against real OpenSSH servers on loopback, with a
stand-in nvidia-smi replaying recorded output and stand-in ranks writing a recorded training log."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import FIRST_ADDRESS, SECOND_ADDRESS
from tests.integration.sshd_harness import (
    FLEET_TRAINING_LOG,
    FakeGpuTools,
    FakeHost,
    SshdHarness,
    fleet_hosts_yaml,
    make_fake_gpu_tools,
    start_fake_rank,
    wait_for_no_leftovers,
)
from trainmon_tui.report_cmd import run_report

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
THIRD_ADDRESS = "127.0.0.4"


@dataclass
class Cluster:
    harness: SshdHarness
    hosts: dict[str, FakeHost]
    tools: list[FakeGpuTools]
    log_dir: Path
    ranks: dict[int, subprocess.Popen[str]]

    def write_config(self, **options: Any) -> Path:
        pattern = f"{self.log_dir}/rank*.log"
        runs = (
            "runs:\n"
            "  - name: megatron\n"
            f"    logs: ['{pattern}']\n"
            # The stand-in ranks carry --world_size on their command lines, as a launched script would.
            "    process: 'world_size'\n"
        )
        path = self.harness.root / f"hosts-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(fleet_hosts_yaml(self.harness, self.hosts, runs, **options))
        return path

    def assert_no_leftovers(self) -> None:
        marks = [tools.mark for tools in self.tools]
        assert wait_for_no_leftovers(self.harness.user, marks, [str(self.log_dir)]) == []


def report(
    config: Path, seconds: float, output_format: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    command = ["report", "--hosts", str(config), "--seconds", str(seconds), "--format", output_format]
    completed = subprocess.run(
        [sys.executable, "-m", "trainmon_tui", *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    return completed, time.monotonic() - started


@pytest.fixture
def cluster(sshd_harness: SshdHarness) -> Iterator[Cluster]:
    """gpu-a and gpu-b, each with its own stand-in nvidia-smi (dmon once per 0.25 s), and two ranks that
    wrote the recorded Megatron log: rank 0 all of it (to iteration 120), rank 1 12 lines (to 30)."""
    tag = uuid.uuid4().hex[:8]
    tools = [make_fake_gpu_tools(sshd_harness, f"report-{name}-{tag}", interval_s=0.25) for name in "ab"]
    hosts = {
        "gpu-a": sshd_harness.start_host_with_bin(FIRST_ADDRESS, tools[0].bin_dir),
        "gpu-b": sshd_harness.start_host_with_bin(SECOND_ADDRESS, tools[1].bin_dir),
    }
    log_dir = sshd_harness.root / f"report-logs-{tag}"
    log_dir.mkdir(mode=0o755)
    ranks = {
        0: start_fake_rank(FLEET_TRAINING_LOG, log_dir / "rank0.log", rank=0, world_size=2),
        1: start_fake_rank(FLEET_TRAINING_LOG, log_dir / "rank1.log", rank=1, world_size=2, max_lines=12),
    }
    try:
        for process in ranks.values():
            assert process.stdout is not None and process.stdout.readline() == "done\n"
        yield Cluster(sshd_harness, hosts, tools, log_dir, ranks)
    finally:
        for process in ranks.values():
            process.kill()
            process.wait()
        for host in hosts.values():
            host.stop()


def by_name(items: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {item.get("name", item.get("rank")): item for item in items}


def test_report_json_and_markdown_from_two_hosts(cluster: Cluster) -> None:
    config = cluster.write_config()
    json_run, _ = report(config, 4, "json")
    markdown_run, took = report(config, 3, "markdown")
    for completed in (json_run, markdown_run):
        assert completed.returncode == 0, completed.stderr
        assert "Traceback" not in completed.stderr
    data = json.loads(json_run.stdout)
    hosts = by_name(data["hosts"])
    assert set(hosts) == {"gpu-a", "gpu-b"}
    for host in hosts.values():
        assert (host["status"], host["error"], host["gpu_error"]) == ("up", None, None)
        gpus = {gpu["index"]: gpu for gpu in host["gpus"]}
        assert sorted(gpus) == [0, 1, 2, 3]
        # The dmon capture says GPU 0: sm 98, fb 90538 MB, 81 C, 294 W; the --query-gpu capture (read once at
        # start, and for the memory total) says sm 99 and 97887 MiB in all.
        gpu0 = gpus[0]
        assert gpu0["sm"]["last"] == 98.0 and gpu0["sm"]["min"] == 98.0 and gpu0["sm"]["max"] in (98.0, 99.0)
        assert 98.0 <= gpu0["sm"]["mean"] <= 99.0
        assert gpu0["samples"] >= 8  # a dmon round every 0.25 s over 4 s
        assert (gpu0["mem_used_mib"], gpu0["mem_total_mib"]) == (90538.0, 97887.0)
        assert (gpu0["temp_c"], gpu0["power_w"]) == (81.0, 294.0)
        assert gpu0["name"] == "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
        assert gpus[1]["sm"] == {"last": 99.0, "mean": 99.0, "min": 99.0, "max": 99.0}
        assert gpus[2]["sm"] == {"last": 100.0, "mean": 100.0, "min": 100.0, "max": 100.0}
        # The two stand-in ranks are listed with their rank and run (ps sees them from either host here).
        processes = {process["pid"]: process for process in host["processes"]}
        for rank, process in cluster.ranks.items():
            assert processes[process.pid]["rank"] == rank
            assert processes[process.pid]["run"] == "megatron"
            assert "--world_size 2" in processes[process.pid]["command"]
    (run,) = data["runs"]
    assert run["name"] == "megatron"
    # The run is as far as rank 1: iteration 30 of 1000.
    assert (run["step"], run["total_steps"], run["progress_unit"]) == (30, 1000, "step")
    # Rank 1's log: iterations 10, 20, 30 at 23:41:12, :20, :28 -> 1.25 iterations/s, 970 to go.
    assert run["steps_per_s"] == pytest.approx(1.25)
    assert run["eta_s"] == pytest.approx(776.0)
    assert run["metrics"]["loss"]["last"] == pytest.approx(7.426577)
    # Rank 0's whole log arrives at once, and its timestamps (8 s apart) put all but the newest iteration
    # before the 4 s window.
    assert run["metrics"]["loss"]["samples"] == 1
    assert run["log_problems"] == []
    ranks = by_name(run["ranks"])
    assert ranks[0]["step"] == 120 and ranks[0]["steps_behind"] == 0
    assert ranks[1]["step"] == 30 and ranks[1]["steps_behind"] == 90
    assert ranks[0]["metrics"]["loss"] == pytest.approx(7.426577)
    assert ranks[1]["metrics"]["loss"] == pytest.approx(10.38769)
    # Both logs are on one (shared) file system: each is read once, by one of the hosts.
    assert {ranks[0]["host"], ranks[1]["host"]} <= {"gpu-a", "gpu-b"}

    markdown = markdown_run.stdout
    assert took < 3 + 6
    assert "Hosts: 2 (2 up). Runs: 1." in markdown
    assert "## Problems\n\nNone seen." in markdown
    assert "| 0 | 98 | " in markdown and "| 90538 / 97887 | 81 | 294 |" in markdown
    assert "| 2 | 100 | 100 | 100 | 100 | " in markdown
    assert "- Progress: step 30 / 1000 (3.0 %) (slowest rank)" in markdown
    assert "- Speed 1.25 steps/s; ETA 12m 56s (range 12m 56s – 12m 56s)" in markdown
    assert "- loss: 7.427 (min 7.427, mean 7.427, max 7.427 over 1 value over 3 s)" in markdown
    assert "| 30 | 90 steps ← slowest |" in markdown
    cluster.assert_no_leftovers()


def test_report_with_hosts_down_exits_1_on_time(cluster: Cluster, sshd_harness: SshdHarness) -> None:
    # gpu-b hangs from the start (its sshd stopped: connections are accepted, nothing answers); a third host
    # refuses connections.
    refused = sshd_harness.start_host(THIRD_ADDRESS)
    refused.stop()
    cluster.hosts["gpu-c"] = refused
    cluster.hosts["gpu-b"].signal_sshd(signal.SIGSTOP)
    try:
        completed, took = report(cluster.write_config(connect_timeout_s=1.0, login_timeout_s=1.0), 3, "json")
    finally:
        cluster.hosts["gpu-b"].signal_sshd(signal.SIGCONT)
    assert completed.returncode == 1, completed.stderr
    assert took < 3 + 6
    assert "Traceback" not in completed.stderr
    hosts = by_name(json.loads(completed.stdout)["hosts"])
    # Hosts that are not up come first.
    assert [host["name"] for host in json.loads(completed.stdout)["hosts"]][2] == "gpu-a"
    assert hosts["gpu-a"]["status"] == "up" and len(hosts["gpu-a"]["gpus"]) == 4
    assert hosts["gpu-b"]["status"] == "down" and hosts["gpu-b"]["error"].startswith("connect timeout")
    assert hosts["gpu-c"]["status"] == "down" and hosts["gpu-c"]["error"].startswith("connection refused")
    assert hosts["gpu-c"]["gpus"] == [] and hosts["gpu-c"]["processes"] == []
    cluster.assert_no_leftovers()


def test_report_ends_on_time_when_a_host_hangs_mid_collection(cluster: Cluster) -> None:
    hung = cluster.hosts["gpu-b"]
    # Stopped 1.5 s into a 7 s collection: keepalive (1 s x 3) declares it down well before the report.
    timer = threading.Timer(1.5, hung.signal_sshd, args=(signal.SIGSTOP,))
    timer.start()
    try:
        completed, took = report(cluster.write_config(), 7, "markdown")
    finally:
        timer.cancel()
        hung.signal_sshd(signal.SIGCONT)
    assert completed.returncode == 1, completed.stderr
    # Closing channels to the hung host is bounded: the command does not wait on it.
    assert took < 7 + 6
    assert "Traceback" not in completed.stderr
    markdown = completed.stdout
    problems = markdown.split("## Problems")[1].split("## Hosts")[0]
    # Keepalive notices the hang; a reconnect attempt that followed may since have timed out as well.
    assert (
        "- host **gpu-b** is down: `keepalive timeout" in problems
        or "- host **gpu-b** is down: `connect timeout" in problems
    ), problems
    assert markdown.index("### gpu-b (down") < markdown.index("### gpu-a (up)")
    # What gpu-b sent before it hung is still shown, as stale.
    gpu_b = markdown.split("### gpu-b")[1].split("### gpu-a")[0]
    assert "| 0 | 98 | " in gpu_b and "(stale)" in gpu_b
    cluster.assert_no_leftovers()


def test_a_bad_hosts_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "hosts.yaml"
    config.write_text("hosts:\n  - name: a\n    adress: 10.0.0.1\n")
    completed, _ = report(config, 1, "json")
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr == (
        f"trainmon-tui report: {config}:3: host 'a': unknown key `adress` (did you mean `address`?)\n"
    )


def test_report_of_this_machine_needs_no_ssh(tmp_path: Path) -> None:
    """A `local` host: processes and logs through local subprocesses, GPUs through NVML (none here)."""
    log = tmp_path / "rank0.log"
    log.write_text(FLEET_TRAINING_LOG.read_text())
    config = tmp_path / "hosts.yaml"
    config.write_text(
        f"hosts:\n  - name: here\n    address: local\nruns:\n  - name: megatron\n    logs: ['{log}']\n"
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_report(str(config), seconds=2, output_format="json", out=out, err=err) == 0
    data = json.loads(out.getvalue())
    (host,) = data["hosts"]
    assert (host["name"], host["status"], host["error"]) == ("here", "up", None)
    # Either this machine has GPUs NVML can read, or the report says why there are none.
    assert host["gpus"] or host["gpu_error"] in ("no NVIDIA driver", "pynvml not installed")
    (run,) = data["runs"]
    assert (run["step"], run["total_steps"]) == (120, 1000)
    assert run["ranks"][0]["rank"] == 0 and run["ranks"][0]["host"] == "here"
    assert run["metrics"]["loss"]["last"] == pytest.approx(7.426577)
