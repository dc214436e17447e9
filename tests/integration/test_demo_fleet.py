"""The demo cluster through the production collection path: a real Fleet and Store over SSH on loopback.

The cluster runs 10x faster than real time with an early, short outage of the last host, so within seconds
the store shows every host up, every GPU read, ranks stepping, losses, the idle GPU, the slow rank behind and
the dropping host going down (with its reason) and coming back.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from trainmon_tui.config import load_config
from trainmon_tui.demo import DemoCluster, DropSchedule
from trainmon_tui.model import EventKind
from trainmon_tui.state.store import HostState, Store, StoreSnapshot
from trainmon_tui.transport.fleet import Fleet, connect_params
from trainmon_tui.transport.session import DownReason, SessionState

SPEED = 10.0
# Simulated seconds: down from 30 s to 50 s (3 s to 5 s of real time), then not again during the test.
OUTAGE = DropSchedule(first_at_s=30.0, every_s=10_000.0, down_s=20.0)
DEADLINE_S = 25.0


def _ready(snapshot: StoreSnapshot) -> bool:
    hosts = snapshot.hosts
    return (
        len(hosts) == 3
        and all(host.status.state is HostState.UP for host in hosts.values())
        and all(len(host.gpus) == 8 for host in hosts.values())
        and {name: len(run.ranks) for name, run in snapshot.runs.items()} == {"llama-7b": 16, "vit-sweep": 7}
        and all(len(host.rank_of_pid) >= 7 and len(host.gpu_of_pid) == 8 for host in hosts.values())
    )


async def test_a_real_fleet_fills_the_store_from_the_demo_cluster() -> None:
    async with DemoCluster(seed=5, speed=SPEED, drop=OUTAGE) as cluster:
        assert cluster.startup_s is not None and cluster.startup_s < 1.0
        directory = cluster.directory
        assert directory is not None and directory.stat().st_mode & 0o777 == 0o700
        store = Store()
        node2_states: list[tuple[HostState, str | None]] = []
        first: StoreSnapshot | None = None
        last: StoreSnapshot | None = None
        async with Fleet(cluster.config, store, session_factory=DemoCluster.session_factory):
            started = time.monotonic()
            while time.monotonic() - started < DEADLINE_S:
                await asyncio.sleep(0.05)
                snapshot = store.snapshot(time.monotonic())
                status = snapshot.hosts.get("node-2")
                if status is not None and (
                    not node2_states or node2_states[-1] != (status.status.state, status.status.reason)
                ):
                    node2_states.append((status.status.state, status.status.reason))
                if first is None and _ready(snapshot):
                    first = snapshot
                came_back = any(state is HostState.DOWN for state, _ in node2_states) and _ready(snapshot)
                if first is not None and came_back and snapshot.now - first.now > 1.0:
                    last = snapshot
                    break
        drops = cluster.drops_of("node-2")
        assert first is not None, f"never saw the whole cluster: {node2_states}"
        assert last is not None, f"node-2 did not go down and come back: {node2_states}"

    for name, host in last.hosts.items():
        assert [gpu.gpu for gpu in host.gpus] == list(range(8)), name
        assert all(gpu.latest.sm_pct is not None and gpu.latest.fb_total_mib == 81559 for gpu in host.gpus)
    # Ranks found from the processes: every GPU of the llama hosts runs the rank its environment names.
    for index, name in enumerate(("node-0", "node-1")):
        host = last.hosts[name]
        assert sorted(host.rank_of_pid.values()) == list(range(index * 8, index * 8 + 8))
        assert {gpus for pid, gpus in host.gpu_of_pid.items() if pid in host.rank_of_pid} == {
            (gpu,) for gpu in range(8)
        }
    # The idle GPU: memory held by a process that is no rank, nothing computing.
    node2 = last.hosts["node-2"]
    idle = node2.gpu(7)
    assert idle is not None and idle.latest.sm_pct == 0.0 and idle.latest.fb_used_mib == 7612.0
    holders = [pid for pid, gpus in node2.gpu_of_pid.items() if gpus == (7,)]
    assert len(holders) == 1 and holders[0] not in node2.rank_of_pid

    llama, vit = last.runs["llama-7b"], last.runs["vit-sweep"]
    assert first.runs["llama-7b"].rank(0) is not None
    for run_name in ("llama-7b", "vit-sweep"):
        before, after = first.runs[run_name].rank(0), last.runs[run_name].rank(0)
        assert before is not None and after is not None
        assert before.progress.step is not None and after.progress.step is not None
        assert after.progress.step > before.progress.step, run_name
    assert {rank.progress.total_steps for rank in llama.ranks} == {50_000}
    assert {rank.progress.total_steps for rank in vit.ranks} == {34_320}
    # The slow rank is behind every other rank of its run.
    steps = {rank.rank: rank.progress.step or 0 for rank in llama.ranks}
    slow = cluster.simulation.slow_rank
    assert steps[slow] < min(step for rank, step in steps.items() if rank != slow) - 10
    # Losses: training and validation, for every rank.
    for run in (llama, vit):
        for rank in run.ranks:
            loss = run.metric("loss", rank.rank)
            assert loss is not None and 1.5 < loss.last < 7.0 and loss.samples > 10
        assert run.metric("val_loss", 0) is not None
    assert any(entry.event.kind is EventKind.NAN for entry in llama.events)
    assert any(entry.event.kind is EventKind.NCCL_ERROR and entry.event.rank == 3 for entry in vit.events)

    # The dropping host: up, then down with a reason (the connection cut, then refused), then up again.
    down = [reason for state, reason in node2_states if state is HostState.DOWN]
    assert down and all(reason for reason in down)
    assert any(reason.startswith(("connection lost", "connection refused")) for reason in down if reason)
    assert node2_states[-1] == (HostState.UP, None)
    assert drops == 1
    # Nothing of the demo is left on disk.
    assert not directory.exists()


async def test_host_keys_are_checked_strictly(tmp_path: Path) -> None:
    async with DemoCluster(seed=2, drop=None) as cluster:
        host = cluster.config.hosts[0]
        # The right key of another host only: the client must refuse this host's key.
        others = cluster.config.hosts[1]
        lines = Path(host.known_hosts).read_text().splitlines()
        other_key = next(line for line in lines if line.startswith(f"[127.0.0.1]:{others.port} "))
        wrong = tmp_path / "known_hosts"
        wrong.write_text(other_key.replace(f":{others.port} ", f":{host.port} ") + "\n")
        params = connect_params(cluster.config, host)
        session = DemoCluster.session_factory(replace(params, known_hosts=str(wrong)))
        async with session:
            async with asyncio.timeout(10):
                while session.status.state is not SessionState.DOWN:
                    await asyncio.sleep(0.02)
            refused = session.status
        assert refused.reason is DownReason.HOST_KEY_MISMATCH
        assert session.connects == 0
        good = DemoCluster.session_factory(params)
        async with good:
            await good.wait_up(10)
            assert good.connects == 1


def test_serve_writes_a_loadable_config_and_cleans_up_on_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "hosts.yaml"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainmon_tui.demo",
            "serve",
            "--hosts",
            "4",
            "--gpus",
            "2",
            "--config-out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not out.exists():
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        config = load_config(out)
        assert [host.name for host in config.hosts] == ["node-0", "node-1", "node-2", "node-3"]
        assert {host.address for host in config.hosts} == {"127.0.0.1"}
        assert len({host.port for host in config.hosts}) == 4
        assert [(run.name, run.hosts) for run in config.runs] == [
            ("llama-7b", ("node-0", "node-1", "node-2")),
            ("vit-sweep", ("node-3",)),
        ]
        key_dir = Path(config.hosts[0].known_hosts).parent
        assert Path(config.hosts[0].identity_file or "").is_file()
        assert key_dir.stat().st_mode & 0o777 == 0o700
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=10)
    assert server.returncode == 0, stderr
    assert "serving 4 hosts x 2 GPUs" in stderr
    assert not key_dir.exists()
