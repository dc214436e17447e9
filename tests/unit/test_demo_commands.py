"""What the demo hosts answer, read back by the real parsers the collectors use, with values asserted.

Every command line here is the one a collector builds (DMON_ARGV, query_gpu_argv, QUERY_APPS_ARGV, PS_ARGV,
ps_loop_argv, environ_grep_argv, list_argv, tail_argv), sent through the wrapper and taken out of it again.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.analysis.ranks import environ_grep_argv, environ_ranks, match_ranks, parse_environ_grep
from trainmon_tui.config import RunConfig
from trainmon_tui.demo.cluster import Simulation
from trainmon_tui.demo.commands import (
    TERMINATED,
    DmonStream,
    HostCommands,
    PsLoopStream,
    Reply,
    TailStream,
    format_etime,
    posix_cksum,
)
from trainmon_tui.demo.logs import last_lines
from trainmon_tui.parsers.dmon import DMON_ARGV, DmonParser
from trainmon_tui.parsers.ps import PS_ARGV, parse_ps
from trainmon_tui.parsers.smi_csv import (
    QUERY_APPS_ARGV,
    QUERY_APPS_FIELDS,
    QUERY_GPU_FIELDS,
    parse_compute_apps,
    parse_query_gpu,
)
from trainmon_tui.parsers.smi_status import INVALID_QUERY, NOT_INSTALLED, classify_smi_failure
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.parsers.trainlog.paths import rank_from_path
from trainmon_tui.state.store import Store
from trainmon_tui.transport.gpu_collector import failure_reason, query_gpu_argv
from trainmon_tui.transport.log_collector import TailDemux, list_argv, parse_listing, tail_argv
from trainmon_tui.transport.proc_collector import (
    APPS_STEP,
    LISTING_END,
    PS_COMMAND,
    ProcessCollector,
    ps_loop_argv,
)
from trainmon_tui.transport.remote import remote_command_line, unwrap_command_line
from trainmon_tui.transport.runner import LineStream
from trainmon_tui.transport.streams import CommandResult

WALL_EPOCH = 1_750_000_000.0
CORPUS_DMON = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "dmon"


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return Simulation(seed=3)


def _host(sim: Simulation, index: int) -> HostCommands:
    return HostCommands(sim, sim.hosts[index], WALL_EPOCH)


def _ask(host: HostCommands, argv: tuple[str, ...] | list[str], t: float) -> Reply:
    """Send argv as the client does (wrapped), unwrap it as the server does, and expect a short answer."""
    unwrapped = unwrap_command_line(remote_command_line(argv))
    assert unwrapped == tuple(argv)
    answer = host.answer(unwrapped, t)
    assert isinstance(answer, Reply)
    return answer


# --------------------------------------------------------------------------------------------------- wrapper


@given(st.lists(st.text(st.characters(blacklist_characters="\0"), max_size=12), min_size=1, max_size=6))
def test_unwrap_gives_back_exactly_the_argv_that_was_wrapped(argv: list[str]) -> None:
    assert unwrap_command_line(remote_command_line(argv)) == tuple(argv)


def test_unwrap_refuses_what_the_wrapper_did_not_build() -> None:
    assert unwrap_command_line("ps -ef") is None
    assert unwrap_command_line("exec sh -c 'echo hi' trainmon-remote ps") is None
    assert unwrap_command_line("exec sh -c 'unbalanced") is None


# ------------------------------------------------------------------------------------------------------ dmon


def test_dmon_streams_real_format_rows_the_parser_reads(sim: Simulation) -> None:
    host = _host(sim, 1)
    stream = host.answer(DMON_ARGV, 12.0)
    assert isinstance(stream, DmonStream) and stream.interval_s == 1.0
    first = stream.start(12.0).stdout.decode()
    lines = first.splitlines()
    # The new-driver layout with -o DT, as in the corpus sample dmon_o_TD_s_mutc_jpg_ofa_rxpci_blankline.
    assert lines[0].startswith("#Date       Time        gpu    pwr  gtemp  mtemp     sm    mem")
    assert lines[1].startswith("#YYYYMMDD   HH:MM:SS    Idx      W      C      C      %      %")
    assert all(line.endswith(" ") for line in lines)
    parser = DmonParser()
    samples = [sample for line in lines if (sample := parser.feed(line)) is not None]
    expected = sim.gpu_readings(sim.hosts[1], 12.0)
    assert [sample.gpu for sample in samples] == list(range(8))
    for sample, reading in zip(samples, expected, strict=True):
        assert sample.sm_pct == reading.sm_pct
        assert sample.mem_util_pct == reading.mem_pct
        assert sample.fb_used_mib == reading.fb_used_mib
        assert sample.power_w == round(reading.power_w)
        assert sample.gpu_temp_c == reading.gpu_temp_c and sample.mem_temp_c == reading.mem_temp_c
        assert sample.sm_clock_mhz == reading.sm_clock_mhz and sample.mem_clock_mhz == 2619
        assert sample.printed_time is not None
    later = [sample for line in stream.more(13.0).decode().splitlines() if (sample := parser.feed(line))]
    assert [sample.sm_pct for sample in later] == [
        reading.sm_pct for reading in sim.gpu_readings(sim.hosts[1], 13.0)
    ]


def test_dmon_header_lines_up_like_the_corpus_sample(sim: Simulation) -> None:
    corpus = (CORPUS_DMON / "dmon_o_TD_s_mutc_jpg_ofa_rxpci_blankline.txt").read_text().splitlines()
    stream = _host(sim, 0).answer(["nvidia-smi", "dmon", "-s", "mutc", "-o", "TD"], 0.0)
    assert isinstance(stream, DmonStream)
    ours = stream.start(0.0).stdout.decode().splitlines()
    assert ours[0] == corpus[0] and ours[1] == corpus[1]
    # Rows put the values where the header's names end, as the real rows do.
    assert len(ours[2]) == len(corpus[2])


def test_dmon_count_ends_the_stream(sim: Simulation) -> None:
    stream = _host(sim, 0).answer(["nvidia-smi", "dmon", "-c", "2"], 0.0)
    assert isinstance(stream, DmonStream)
    assert len(stream.start(0.0).stdout.decode().splitlines()) == 2 + 8
    assert not stream.finished
    assert len(stream.more(1.0).decode().splitlines()) == 8
    assert stream.finished and stream.more(2.0) == b""


# ----------------------------------------------------------------------------------------------- query CSV


def test_query_gpu_answers_every_field_the_collector_asks_for(sim: Simulation) -> None:
    reply = _ask(_host(sim, 2), query_gpu_argv(QUERY_GPU_FIELDS), 30.0)
    assert reply.exit_status == 0
    samples = parse_query_gpu(reply.stdout.decode(), QUERY_GPU_FIELDS)
    expected = sim.gpu_readings(sim.hosts[2], 30.0)
    assert [sample.gpu for sample in samples] == list(range(8))
    for sample, reading, spec in zip(samples, expected, sim.hosts[2].gpus, strict=True):
        assert (sample.uuid, sample.name) == (spec.uuid, "NVIDIA H100 80GB HBM3")
        assert sample.sm_pct == reading.sm_pct and sample.fb_used_mib == reading.fb_used_mib
        assert sample.fb_total_mib == 81559 and sample.power_limit_w == 700.0
        assert sample.power_w == pytest.approx(reading.power_w)
    assert samples[7].sm_pct == 0 and samples[7].fb_used_mib == 7612


def test_query_gpu_with_header_and_units(sim: Simulation) -> None:
    reply = _ask(
        _host(sim, 0), ["nvidia-smi", "--query-gpu=index,memory.used,clocks.sm", "--format=csv"], 0.0
    )
    lines = reply.stdout.decode().splitlines()
    assert lines[0] == "index, memory.used [MiB], clocks.current.sm [MHz]"
    assert re.fullmatch(r"0, \d+ MiB, \d+ MHz", lines[1])
    samples = parse_query_gpu(reply.stdout.decode())
    assert samples[0].fb_used_mib == sim.gpu_reading(sim.hosts[0], 0, 0.0).fb_used_mib


def test_an_unknown_query_field_fails_as_nvidia_smi_does(sim: Simulation) -> None:
    reply = _ask(_host(sim, 0), query_gpu_argv(("index", "bogus.field")), 0.0)
    assert reply.exit_status == 2
    text = reply.stdout.decode()
    assert text.startswith('Field "bogus.field" is not a valid field to query.')
    assert classify_smi_failure(text) == INVALID_QUERY


def test_compute_apps_list_every_rank_and_the_kernel_on_the_idle_gpu(sim: Simulation) -> None:
    host = sim.hosts[2]
    reply = _ask(_host(sim, 2), QUERY_APPS_ARGV, 60.0)
    apps = parse_compute_apps(reply.stdout.decode(), QUERY_APPS_FIELDS)
    uuids = {gpu.uuid: gpu.index for gpu in host.gpus}
    held = {app.pid: uuids[app.gpu_uuid or ""] for app in apps}
    expected = {rank.pid: rank.gpu for rank in host.ranks}
    kernel = next(process for process in host.processes if process.gpu == 7)
    assert held == {**expected, kernel.pid: 7}
    memory = {app.pid: app.used_memory_mib for app in apps}
    assert memory[kernel.pid] == 7100
    assert all((memory[pid] or 0) > 60_000 for pid in expected)


# ------------------------------------------------------------------------------------------------ processes


def test_ps_listing_parses_and_rank_matching_finds_every_rank(sim: Simulation) -> None:
    host = sim.hosts[1]
    commands = _host(sim, 1)
    reply = _ask(commands, PS_ARGV, 5.0)
    processes = parse_ps(reply.stdout.decode())
    by_pid = {process.pid: process for process in processes}
    assert by_pid[1].command == "/sbin/init" and by_pid[1].elapsed_s is not None
    assert by_pid[1].elapsed_s > 5 * 86_400
    ranks = {rank.pid: rank for rank in host.ranks}
    for pid, rank in ranks.items():
        assert by_pid[pid].command.startswith("/opt/conda/bin/python -u pretrain_gpt.py")
        assert by_pid[pid].elapsed_s == int(5.0 - rank.run.launched_t)
        assert (by_pid[pid].rss_kib or 0) > 20_000_000
        assert by_pid[pid].stat in ("Sl", "Rl")
    # Our own ps and its wrapper are listed, as on a real host, and recognisable as ours.
    own = [process for process in processes if process.command == " ".join(PS_ARGV)]
    assert len(own) == 1
    grep = _ask(commands, environ_grep_argv(sorted(ranks)), 5.0)
    assert grep.exit_status == 0
    from_environ = environ_ranks(parse_environ_grep(grep.stdout.decode()))
    assert from_environ == {pid: rank.rank for pid, rank in ranks.items()}
    pattern = re.compile(sim.runs[0].process_pattern)
    assert match_ranks(processes, pattern, from_environ) == {pid: rank.rank for pid, rank in ranks.items()}


def _listings(output: bytes) -> list[str]:
    """The listings in a stretch of the loop's output, each up to its end line."""
    text = output.decode()
    assert text.endswith(LISTING_END + "\n")
    return text.split(LISTING_END + "\n")[:-1]


def test_the_listing_loop_prints_the_ps_listing_and_its_end_line_every_interval(sim: Simulation) -> None:
    commands = _host(sim, 1)
    argv = ps_loop_argv(5.0)
    # The argv arrives through the wrapper intact, and is answered as the stream a real loop is.
    assert unwrap_command_line(remote_command_line(argv)) == argv
    stream = commands.answer(argv, 5.0)
    assert isinstance(stream, PsLoopStream) and stream.interval_s == 5.0 and not stream.finished
    first = stream.start(5.0)
    assert first.exit_status == 0 and first.stderr == b""
    [listing] = _listings(first.stdout)
    processes = parse_ps(listing)
    # The same processes as ps alone lists, at the same moment (our own command's aside).
    alone = parse_ps(_ask(_host(sim, 1), PS_ARGV, 5.0).stdout.decode())
    ranks = {rank.pid for rank in sim.hosts[1].ranks}
    assert ranks <= {p.pid for p in processes}
    assert [p for p in processes if p.pid < 70_000] == [p for p in alone if p.pid < 70_000]
    # Our loop's shell under its wrapper, and its ps: as on a real host, and left out by the collector.
    loop_shell = next(p for p in processes if p.command == " ".join(argv))
    assert loop_shell.command.endswith("trainmon-ps 5")
    own_ps = next(p for p in processes if p.command == PS_COMMAND)
    assert own_ps.ppid == loop_shell.pid
    wrapper = next(p for p in processes if p.pid == loop_shell.ppid)
    assert wrapper.command.endswith(f"trainmon-remote {' '.join(argv)}")
    # Every interval, the next listing: the same loop, a new ps, the ranks' times moved on.
    later = _listings(stream.more(15.0))
    assert len(later) == 1
    again = parse_ps(later[0])
    assert next(p for p in again if p.command == " ".join(argv)).pid == loop_shell.pid
    assert next(p for p in again if p.command == PS_COMMAND).pid != own_ps.pid
    rank = sim.hosts[1].ranks[0]
    assert next(p for p in again if p.pid == rank.pid).elapsed_s == int(15.0 - rank.run.launched_t)


class _LiveLines:
    """Lines as a running stream gives them, then no more for as long as it is read (the loop sleeps)."""

    exit_status: int | None = None
    stderr_tail = ""

    def __init__(self, lines: list[str]) -> None:
        self._lines = iter(lines)

    def __aiter__(self) -> _LiveLines:
        return self

    async def __anext__(self) -> str:
        line = next(self._lines, None)
        if line is None:
            await asyncio.Event().wait()
        assert line is not None
        return line


class _DemoHostRunner:
    """A demo host's commands played in-process at a fixed simulated time: a collector's view of it."""

    name = "node-1"
    is_local = False

    def __init__(self, commands: HostCommands, t: float) -> None:
        self._commands = commands
        self._t = t

    async def wait_up(self, timeout: float | None = None) -> None:
        return None

    def stream(self, argv: Sequence[str]) -> AbstractAsyncContextManager[LineStream]:
        return self._stream(argv)

    @asynccontextmanager
    async def _stream(self, argv: Sequence[str]) -> AsyncIterator[LineStream]:
        loop = self._commands.answer(argv, self._t)
        assert isinstance(loop, PsLoopStream)
        yield _LiveLines(loop.start(self._t).stdout.decode().splitlines())

    async def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        reply = self._commands.answer(argv, self._t)
        assert isinstance(reply, Reply)
        return CommandResult(reply.exit_status, reply.stdout.decode(), reply.stderr.decode())


async def test_the_process_collector_reads_the_demo_loop_and_leaves_its_own_processes_out(
    sim: Simulation,
) -> None:
    host = sim.hosts[1]
    run = next(run for run in sim.runs if 1 in run.host_indexes)
    # A pattern that also matches our loop's command line ("trainmon-ps"): it is looked at, and dropped.
    pattern = re.compile(f"{run.process_pattern}|trainmon")
    store = Store()
    config = RunConfig(name=run.name, hosts=(host.name,), process=pattern)
    collector = ProcessCollector(_DemoHostRunner(_host(sim, 1), 30.0), store, host.name, [config])
    task = asyncio.create_task(collector.run())
    try:
        async with asyncio.timeout(5):
            while host.name not in store.snapshot(0.0).hosts:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.wait({task})
    snapshot = store.snapshot(0.0).hosts[host.name]
    assert sorted(snapshot.rank_of_pid.values()) == sorted(rank.rank for rank in host.ranks)
    commands = [process.command for process in snapshot.processes]
    assert not any("trainmon-" in command or command == PS_COMMAND for command in commands)
    assert collector.problems.keys() <= {APPS_STEP}


def test_a_loop_interval_sleep_refuses_ends_the_loop_after_one_listing(sim: Simulation) -> None:
    argv = (*ps_loop_argv(5.0)[:-1], "soon")
    reply = _ask(_host(sim, 0), argv, 5.0)
    assert reply.exit_status == 1
    assert len(_listings(reply.stdout)) == 1
    assert reply.stderr == b"sleep: invalid time interval 'soon'\n"


def test_environ_grep_exit_status_is_grep_s(sim: Simulation) -> None:
    commands = _host(sim, 0)
    launcher = next(process for process in sim.hosts[0].processes if "torchrun" in process.args)
    nothing = _ask(commands, environ_grep_argv([launcher.pid]), 0.0)
    assert (nothing.exit_status, nothing.stdout) == (1, b"")
    rank = sim.hosts[0].ranks[2]
    gone = _ask(commands, environ_grep_argv([rank.pid, 999_999]), 0.0)
    assert gone.exit_status == 2
    assert parse_environ_grep(gone.stdout.decode()) == {rank.pid: {"LOCAL_RANK": "2", "RANK": "2"}}


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "00:05"), (3_725, "01:02:05"), (2 * 86_400 + 61, "2-00:01:01")]
)
def test_etime_format(seconds: int, text: str) -> None:
    assert format_etime(seconds) == text


# --------------------------------------------------------------------------------------------------- logs


def test_listing_names_each_rank_log_with_size_and_head_checksum(sim: Simulation) -> None:
    commands = _host(sim, 0)
    run = sim.runs[0]
    patterns = [run.log_glob, "/data/llama-7b/logs/missing-*.txt"]
    reply = _ask(commands, list_argv(patterns), 10.0)
    listing = parse_listing(reply.stdout.decode(), patterns)
    assert [file.path for file in listing.files] == sorted(rank.log_path for rank in sim.hosts[0].ranks)
    assert listing.problems == ("no such file: /data/llama-7b/logs/missing-*.txt",)
    log = commands.logs[listing.files[0].path]
    text = "".join(line + "\n" for line in last_lines(log, 10.0, 100_000)[0]).encode()
    assert listing.files[0].size == len(text)
    assert (listing.files[0].head_crc, listing.files[0].head_len) == (posix_cksum(text[:1024]), 1024)
    assert len({file.inode for file in listing.files}) == 8


def test_tail_of_several_files_demuxes_and_parses(sim: Simulation) -> None:
    commands = _host(sim, 0)
    paths = [rank.log_path for rank in sim.hosts[0].ranks[:3]]
    stream = commands.answer(tail_argv(paths, 5), 20.0)
    assert isinstance(stream, TailStream)
    demux = TailDemux(paths)
    first = stream.start(20.0)
    assert first.stderr == b""
    got: dict[str, list[str]] = {path: [] for path in paths}
    for line in first.stdout.decode().splitlines():
        for path, text in demux.feed(line):
            got[path].append(text)
    for path in paths:
        assert got[path] == last_lines(commands.logs[path], 20.0, 5)[0]
    more = stream.more(40.0).decode()
    assert "\n==> " in more
    parsers = {path: LogParser(default_rank=rank_from_path(path)) for path in paths}
    steps: dict[str, list[int]] = {path: [] for path in paths}
    for line in more.splitlines():
        for path, text in demux.feed(line):
            records, _ = parsers[path].feed(text)
            steps[path] += [record.step for record in records if record.step is not None]
    for path in paths:
        rank = commands.logs[path].rank
        assert steps[path] == list(range(rank.steps_done(20.0) + 1, rank.steps_done(40.0) + 1))


def test_a_big_cluster_keeps_one_log_per_host_where_the_slow_rank_shows_and_ps_lists_every_rank() -> None:
    big = Simulation(9, 8, seed=3)
    assert big.one_log_per_host and not Simulation(8, 8, seed=3).one_log_per_host
    llama, vit = big.runs
    lines_per_s: dict[str, float] = {}
    last_steps: dict[int, int] = {}
    for host in big.hosts:
        commands = HostCommands(big, host, WALL_EPOCH)
        run = llama if host.index in llama.host_indexes else vit
        listing = parse_listing(
            _ask(commands, list_argv([run.log_glob]), 30.0).stdout.decode(), [run.log_glob]
        )
        # One log, the node's local rank 0, whose global rank its name gives (as the collector reads it).
        node_rank = run.host_indexes.index(host.index)
        assert [file.path for file in listing.files] == [run.log_path(node_rank * run.gpus_per_host)]
        # ps still lists a process for every rank of the node.
        processes = parse_ps(_ask(commands, PS_ARGV, 30.0).stdout.decode())
        listed = {process.pid for process in processes}
        assert {rank.pid for rank in host.ranks} <= listed and len(host.ranks) == run.gpus_per_host
        # What the log prints over two minutes, parsed as the collector parses it.
        path = listing.files[0].path
        stream = commands.answer(tail_argv([path], 0), 30.0)
        assert isinstance(stream, TailStream)
        stream.start(30.0)
        text = stream.more(150.0).decode().splitlines()
        lines_per_s[host.name] = len(text) / 120.0
        parser = LogParser(default_rank=rank_from_path(path))
        records = [record for line in text for record in parser.feed(line)[0] if record.step is not None]
        if run is llama:
            # The node's iteration lines are its own rank's.
            assert {record.rank for record in records} == {node_rank * 8}
            last_steps[node_rank * 8] = max(record.step or 0 for record in records)
    # About a line per second per llama host (a step takes 1.1 s; an evaluation pauses and adds a few lines);
    # the HF bar prints a line per 0.42 s step.
    assert all(0.7 < rate < 1.1 for name, rate in lines_per_s.items() if name != big.hosts[-1].name)
    assert 2.0 < lines_per_s[big.hosts[-1].name] < 3.0
    # The slow rank is a rank that logs, and its log is behind every other node's.
    assert big.slow_rank == 8 and big.rank("llama-7b", 8).slow
    assert last_steps[8] < min(step for rank, step in last_steps.items() if rank != 8)
    # Faults are logged by ranks that write a log.
    assert (
        big.rank("llama-7b", llama.fault_rank).writes_log and big.rank("vit-sweep", vit.fault_rank).writes_log
    )


def test_tail_of_a_missing_file_says_so_on_stderr(sim: Simulation) -> None:
    stream = _host(sim, 0).answer(tail_argv(["/nope.log"], 10), 0.0)
    assert isinstance(stream, TailStream)
    first = stream.start(0.0)
    assert first.stderr == b"tail: cannot open '/nope.log' for reading: No such file or directory\n"


# ------------------------------------------------------------------------------------------- the rest


def test_unknown_commands_are_not_found_as_in_a_shell(sim: Simulation) -> None:
    reply = _ask(_host(sim, 0), ["rocm-smi", "--showuse"], 0.0)
    assert reply.exit_status == 127
    assert reply.stderr == b"bash: line 1: rocm-smi: command not found\n"
    assert failure_reason(reply.exit_status, "", reply.stderr.decode()) == NOT_INSTALLED
    assert TERMINATED == 128 + 15


@pytest.mark.skipif(shutil.which("cksum") is None, reason="no cksum(1) to compare with")
@pytest.mark.parametrize("data", [b"", b"a", b"hello world\n", bytes(range(256)) * 5])
def test_posix_cksum_agrees_with_cksum_1(data: bytes) -> None:
    out = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout.split()
    assert posix_cksum(data) == int(out[0])
