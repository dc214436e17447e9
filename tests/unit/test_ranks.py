"""Tests for rank matching: environ dumps, command-line flags, launchers, helpers, zombies and pid reuse."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.analysis.ranks import (
    ENVIRON_GREP_PATTERN,
    Program,
    RankMatcher,
    RankMemory,
    environ_candidates,
    environ_grep_argv,
    environ_ranks,
    find_rank_processes,
    global_rank_flag,
    is_launcher,
    is_never_rank,
    local_rank_flag,
    match_ranks,
    parse_environ_grep,
    program_of,
    rank_from_environ,
)
from trainmon_tui.model import ProcInfo, ProcState
from trainmon_tui.parsers.ps import parse_ps, parse_ps_aux

PS = Path(__file__).parent.parent / "fixtures" / "ps"
ALIVE = "ps_torchrun_3_ranks_dataloader_workers_generated.txt"
ALIVE_ENVIRON = "environ_grep_torchrun_3_ranks_generated.bin"
DEFUNCT = "ps_torchrun_rank2_defunct_generated.txt"
DEFUNCT_ENVIRON = "environ_grep_torchrun_rank2_defunct_generated.bin"
LAUNCHER, TAIL, RANK0, RANK1, RANK2, WORKER_A, WORKER_B = 405, 407, 449, 450, 451, 452, 453


def listing(name: str) -> list[ProcInfo]:
    return parse_ps((PS / name).read_text(encoding="utf-8"))


def environ(name: str) -> dict[int, dict[str, str]]:
    return parse_environ_grep((PS / name).read_bytes().decode("utf-8"))


def proc(
    pid: int, ppid: int | None, command: str, *, elapsed: int | None = 100, state: str = "S"
) -> ProcInfo:
    return ProcInfo(
        pid=pid,
        ppid=ppid,
        state=ProcState(state),
        elapsed_s=elapsed,
        cpu_pct=None,
        rss_kib=None,
        command=command,
        stat=state,
    )


# ------------------------------------------------------------------------------------------ environment


def test_grep_command_is_the_one_the_fixture_was_recorded_with() -> None:
    # The pattern in tests/fixtures/ps/SOURCES.md's generator script, character for character.
    assert ENVIRON_GREP_PATTERN == (
        "^(RANK|OMPI_COMM_WORLD_RANK|PMI_RANK|PMIX_RANK|SLURM_PROCID|LOCAL_RANK|"
        "OMPI_COMM_WORLD_LOCAL_RANK|SLURM_LOCALID)="
    )
    assert environ_grep_argv([449, 12345]) == (
        "grep",
        "-a",
        "-s",
        "-z",
        "-H",
        "-E",
        ENVIRON_GREP_PATTERN,
        "--",
        "/proc/449/environ",
        "/proc/12345/environ",
    )


def test_environ_dump_of_three_ranks_and_two_workers() -> None:
    found = environ(ALIVE_ENVIRON)
    assert found == {
        RANK0: {"RANK": "0", "LOCAL_RANK": "0"},
        RANK1: {"RANK": "1", "LOCAL_RANK": "1"},
        RANK2: {"RANK": "2", "LOCAL_RANK": "2"},
        WORKER_A: {"RANK": "0", "LOCAL_RANK": "0"},
        WORKER_B: {"RANK": "0", "LOCAL_RANK": "0"},
    }
    assert environ_ranks(found) == {RANK0: 0, RANK1: 1, RANK2: 2, WORKER_A: 0, WORKER_B: 0}


def test_a_zombie_environment_reads_empty() -> None:
    assert set(environ(DEFUNCT_ENVIRON)) == {RANK0, RANK1, WORKER_A, WORKER_B}


def test_environ_parsing_keeps_values_with_newlines_and_the_first_duplicate() -> None:
    text = "/proc/7/environ:RANK=3\0/proc/7/environ:RANK=9\0/proc/8/environ:SLURM_PROCID=a\nb\0garbage\0"
    assert parse_environ_grep(text) == {7: {"RANK": "3"}, 8: {"SLURM_PROCID": "a\nb"}}


@pytest.mark.parametrize(
    ("variables", "rank"),
    [
        ({"RANK": "5", "LOCAL_RANK": "1"}, 5),  # multi-node: the global rank wins
        ({"LOCAL_RANK": "1"}, 1),
        ({"OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_LOCAL_RANK": "2"}, 6),
        ({"PMI_RANK": "4"}, 4),
        ({"SLURM_PROCID": "12", "SLURM_LOCALID": "4"}, 12),
        ({"SLURM_PROCID": "12", "RANK": "3"}, 3),
        ({"RANK": "", "LOCAL_RANK": "2"}, 2),
        ({"RANK": "-1"}, None),
        ({"RANK": "zero"}, None),
        ({"RANK": "٣"}, None),  # a non-ASCII digit is not a rank
        ({}, None),
    ],
)
def test_rank_from_environ_prefers_global_ranks(variables: dict[str, str], rank: int | None) -> None:
    assert rank_from_environ(variables) == rank


# ------------------------------------------------------------------------------------------ command lines


@pytest.mark.parametrize(
    ("command", "program"),
    [
        (
            "/root/.pyenv/versions/3.11.7/bin/python3 ../venv/bin/torchrun --nnodes=1 train.py",
            Program("python3", script="torchrun", subcommand="--nnodes=1"),
        ),
        (
            "/usr/bin/python3.11 -u -W ignore train.py --lr 3",
            Program("python3.11", script="train.py", subcommand="--lr"),
        ),
        (
            "python -m torch.distributed.run --nproc_per_node=8 x.py",
            Program("python", module="torch.distributed.run"),
        ),
        (
            "python -mdeepspeed.launcher.launch --node_rank=0",
            Program("python", module="deepspeed.launcher.launch"),
        ),
        ("python -c import time; time.sleep(30) train.py", Program("python")),
        ("accelerate launch --multi_gpu train.py", Program("accelerate", subcommand="launch")),
        ("tail -n 0 -F train.log", Program("tail", subcommand="-n")),
        ("", Program("")),
    ],
)
def test_program_of_a_command_line(command: str, program: Program) -> None:
    assert program_of(command) == program


@pytest.mark.parametrize(
    "command",
    [
        "/root/.pyenv/versions/3.11.7/bin/python3 ../venv/bin/torchrun --nproc_per_node=3 train.py",
        "/opt/conda/bin/torchrun --standalone --nproc-per-node=4 train.py",
        "python -m torch.distributed.launch --nproc_per_node=2 train.py",
        "/usr/bin/python -u -m deepspeed.launcher.launch --world_info=eyJsb2NhbGhvc3QiOiBbMF19 train.py",
        "/usr/bin/python /usr/local/bin/deepspeed train.py --deepspeed ds.json",
        "/home/u/.venv/bin/python /home/u/.venv/bin/accelerate launch --num_processes 2 train.py",
        "mpirun -np 4 python train.py",
    ],
)
def test_launchers_are_recognised(command: str) -> None:
    assert is_launcher(command)
    assert not is_never_rank(command)


@pytest.mark.parametrize(
    "command",
    [
        "/root/.pyenv/versions/3.11.7/bin/python3 -u train.py --lr 3e-4 --run-name exp1",
        "python train.py --deepspeed ds_config.json --launcher torchrun",
        "/home/u/.venv/bin/accelerate config",
    ],
)
def test_training_processes_are_no_launchers(command: str) -> None:
    assert not is_launcher(command)
    assert not is_never_rank(command)


@pytest.mark.parametrize(
    "command",
    [
        "tail -n 0 -F train.log",
        "grep --color=auto python",
        "/bin/sh -c python train.py > train.log 2>&1",
        "timeout 12h python train.py",
        "vim train.py",
    ],
)
def test_tools_mentioning_the_script_are_never_ranks(command: str) -> None:
    assert is_never_rank(command)
    assert not is_launcher(command)


@pytest.mark.parametrize(
    ("command", "rank"),
    [
        ("python main.py --dist-url tcp://10.1.1.20:23456 --world-size 8 --rank 3", 3),
        ("python main.py --world_size=8 --rank=7", 7),
        ("python main.py --global_rank 2 --world-size 4", 2),
        ("python train_dreambooth_lora.py --rank=4 --learning_rate=1e-4", None),  # LoRA dimension
        ("python main.py --world-size 8 --rank 8", None),
        ("python main.py --lora_rank 16 --world-size 32", None),
    ],
)
def test_global_rank_flag_needs_a_world_size(command: str, rank: int | None) -> None:
    assert global_rank_flag(command) == rank


@pytest.mark.parametrize(
    ("command", "rank"),
    [
        ("python -u train.py --local_rank=3 --lr 1", 3),
        ("python -u train.py --local-rank=1", 1),
        ("python -u train.py --local_rank 2", 2),
        ("python -u train.py --local_rank=x", None),
        ("python -u train.py --local_rank_offset=1", None),
    ],
)
def test_local_rank_flag(command: str, rank: int | None) -> None:
    assert local_rank_flag(command) == rank


# ------------------------------------------------------------------------------------------------ matching


def test_torchrun_ranks_from_their_environment() -> None:
    processes = listing(ALIVE)
    ranks = match_ranks(processes, re.compile(r"train"), environ_ranks(environ(ALIVE_ENVIRON)))
    # The launcher, `tail -F train.log` and the two DataLoader workers (rank 0's environment) are no ranks.
    assert ranks == {RANK0: 0, RANK1: 1, RANK2: 2}


def test_environ_candidates_leave_out_launcher_tools_and_zombies() -> None:
    assert environ_candidates(listing(ALIVE), re.compile(r"train")) == {
        RANK0,
        RANK1,
        RANK2,
        WORKER_A,
        WORKER_B,
    }
    assert environ_candidates(listing(DEFUNCT), re.compile(r"train")) == {RANK0, RANK1, WORKER_A, WORKER_B}


def test_unreadable_environments_fall_back_to_the_launchers_child_order() -> None:
    # Another user's torchrun: no environment, and torchrun passes no rank on the command line.
    assert match_ranks(listing(ALIVE), re.compile(r"train\.py"), {}) == {RANK0: 0, RANK1: 1, RANK2: 2}


def test_a_defunct_rank_keeps_its_place_under_its_launcher() -> None:
    processes = listing(DEFUNCT)
    zombie = next(p for p in processes if p.pid == RANK2)
    assert zombie.defunct and zombie.command == "[python3] <defunct>"
    ranks = match_ranks(processes, re.compile(r"train"), environ_ranks(environ(DEFUNCT_ENVIRON)))
    assert ranks == {RANK0: 0, RANK1: 1, RANK2: 2}


def test_a_pattern_naming_only_the_launcher_makes_its_children_the_ranks() -> None:
    ranks = match_ranks(listing(ALIVE), re.compile(r"torchrun"), environ_ranks(environ(ALIVE_ENVIRON)))
    assert ranks == {RANK0: 0, RANK1: 1, RANK2: 2}


def test_without_a_pattern_the_processes_with_a_rank_environment_are_the_candidates() -> None:
    ranks = match_ranks(listing(DEFUNCT), None, environ_ranks(environ(DEFUNCT_ENVIRON)))
    assert ranks == {RANK0: 0, RANK1: 1}


def test_no_rank_is_guessed_when_the_launcher_child_count_is_off() -> None:
    # Rank 2 reaped and gone: two children for --nproc_per_node=3, so their order proves nothing.
    processes = [p for p in listing(DEFUNCT) if p.pid != RANK2]
    found = find_rank_processes(processes, re.compile(r"train\.py"), {})
    assert found == {RANK0: None, RANK1: None}
    assert match_ranks(processes, re.compile(r"train\.py"), {}) == {}


def test_order_that_contradicts_a_known_rank_is_not_used() -> None:
    processes = listing(ALIVE)
    found = find_rank_processes(processes, re.compile(r"train\.py"), {RANK0: 2})
    assert found == {RANK0: 2, RANK1: None, RANK2: None}


def test_the_generated_collector_listing_has_one_rank_process_of_unknown_rank() -> None:
    processes = parse_ps((PS / "ps_collector_format_headerless_generated.txt").read_text(encoding="utf-8"))
    assert find_rank_processes(processes, re.compile(r"train\.py"), {}) == {7771: None}


def test_grep_in_a_real_ps_aux_listing_is_no_rank() -> None:
    processes = parse_ps_aux(
        (PS / "ps_aux_grep_python_inductor_workers_huge_vsz.txt").read_text(encoding="utf-8")
    )
    found = find_rank_processes(processes, re.compile(r"python"), {86177: 0})
    assert 86953 not in found  # grep --color=auto python
    assert found[86177] == 0  # python mcp_rl_training.py
    assert found[9348] is None  # jupyter-lab: selected by the pattern, nothing says its rank


def test_old_launch_local_rank_made_global_with_the_node_rank() -> None:
    launcher = (
        "/usr/bin/python -m torch.distributed.launch --nproc_per_node=2 --nnodes=2 --node_rank=1 train.py"
    )
    processes = [
        proc(100, 1, launcher),
        proc(101, 100, "/usr/bin/python -u train.py --local_rank=0 --epochs 3"),
        proc(102, 100, "/usr/bin/python -u train.py --local_rank=1 --epochs 3"),
    ]
    assert match_ranks(processes, re.compile(r"train\.py"), {}) == {101: 2, 102: 3}


def test_local_rank_on_a_later_node_without_a_per_node_count_stays_unknown() -> None:
    launcher = "/usr/bin/python -u -m deepspeed.launcher.launch --world_info=e30= --node_rank=1 train.py"
    processes = [proc(100, 1, launcher), proc(101, 100, "/usr/bin/python -u train.py --local_rank=0")]
    assert find_rank_processes(processes, re.compile(r"train\.py"), {}) == {101: None}


def test_environment_beats_the_command_line() -> None:
    processes = [
        proc(101, 1, "python train.py --local_rank=0"),
        proc(102, 1, "python train.py --local_rank=1"),
    ]
    assert match_ranks(processes, re.compile(r"train"), {101: 4, 102: 5}) == {101: 4, 102: 5}


def test_lightning_rank_zero_is_the_parent_of_ranks_one_to_n() -> None:
    command = "/usr/bin/python train.py trainer.devices=4"
    processes = [
        proc(200, 1, command, elapsed=60),
        proc(201, 200, command, elapsed=55),
        proc(202, 200, command, elapsed=55),
        proc(203, 200, command, elapsed=55),
        proc(204, 201, command, elapsed=50),  # a DataLoader worker of rank 1
        proc(205, 200, command, elapsed=50),  # a DataLoader worker of rank 0
    ]
    environment = {201: 1, 202: 2, 203: 3, 204: 1}
    assert match_ranks(processes, re.compile(r"train\.py"), environment) == {200: 0, 201: 1, 202: 2, 203: 3}


def test_two_unrelated_processes_claiming_one_rank_the_older_keeps_it() -> None:
    processes = [
        proc(300, 1, "python train.py", elapsed=5000),
        proc(301, 1, "python train.py", elapsed=20),
    ]
    assert match_ranks(processes, re.compile(r"train"), {300: 0, 301: 0}) == {300: 0}


def test_a_matcher_answers_as_match_ranks_listing_after_listing() -> None:
    # RankMatcher reuses its last answer while pids, parents, command lines and environments stay; ages
    # (which move every listing) decide only between claimants of one rank, so that answer is never reused.
    pattern = re.compile(r"train")
    steady = [proc(400, 1, "torchrun --nproc-per-node=2 train.py"), proc(401, 400, "python train.py")]
    steady.append(proc(402, 400, "python train.py"))
    claimants = [proc(300, 1, "python train.py", elapsed=5000), proc(301, 1, "python train.py", elapsed=20)]
    swapped = [replace(claimants[0], elapsed_s=10), replace(claimants[1], elapsed_s=6000)]
    listings: list[tuple[list[ProcInfo], dict[int, int]]] = [
        (steady, {}),
        ([replace(process, cpu_pct=50.0, elapsed_s=200) for process in steady], {}),
        ([*steady[:2], replace(steady[2], ppid=1)], {}),  # reparented: the launcher's order says nothing now
        (steady, {}),
        (steady, {401: 1}),  # an environment read since
        (steady[:2], {401: 1}),  # a rank exited
        ([*steady[:2], proc(402, 400, "python train.py --resume")], {}),  # another process on the pid
        (claimants, {300: 0, 301: 0}),
        (swapped, {300: 0, 301: 0}),  # the same pids and commands, the other one older now
        (claimants, {300: 0, 301: 0}),
    ]
    matcher = RankMatcher()
    answers = [matcher.match(processes, pattern, environment) for processes, environment in listings]
    assert answers == [match_ranks(processes, pattern, environment) for processes, environment in listings]
    assert answers[0] == {401: 0, 402: 1} and answers[2] == {}
    assert answers[7] == {300: 0} and answers[8] == {301: 0}
    # What it hands out is the caller's to change.
    answers[0].clear()
    assert matcher.match(steady, pattern, {}) == match_ranks(steady, pattern, {})


def test_a_parent_loop_from_pid_reuse_does_not_hang() -> None:
    processes = [proc(10, 11, "python train.py"), proc(11, 10, "python train.py")]
    # Impossible in one consistent listing; ps reads /proc one process at a time, so it must still end.
    assert set(find_rank_processes(processes, re.compile(r"train"), {10: 1, 11: 1})) <= {10, 11}


# -------------------------------------------------------------------------------------------------- memory


def test_memory_keeps_a_rank_that_turned_defunct_until_it_is_gone() -> None:
    # A pattern that names only the ranks' own command lines: the zombie matches nothing.
    pattern = re.compile(r"-u train\.py")
    memory = RankMemory()
    alive = listing(ALIVE)
    assert memory.update(
        alive, match_ranks(alive, pattern, environ_ranks(environ(ALIVE_ENVIRON))), 100.0
    ) == {
        RANK0: 0,
        RANK1: 1,
        RANK2: 2,
    }
    defunct = listing(DEFUNCT)
    fresh = match_ranks(defunct, pattern, environ_ranks(environ(DEFUNCT_ENVIRON)))
    assert fresh == {RANK0: 0, RANK1: 1}
    assert memory.update(defunct, fresh, 101.7) == {RANK0: 0, RANK1: 1, RANK2: 2}
    reaped = [p for p in defunct if p.pid != RANK2]
    assert memory.update(reaped, match_ranks(reaped, pattern, {}), 104.7) == {RANK0: 0, RANK1: 1}


def test_memory_forgets_a_pid_taken_by_a_later_process() -> None:
    memory = RankMemory()
    assert memory.update([proc(500, 1, "python train.py", elapsed=1000)], {500: 3}, 50.0) == {500: 3}
    reused = [proc(500, 1, "python other.py", elapsed=2)]
    assert memory.update(reused, {}, 80.0) == {}
    same = [proc(501, 1, "python train.py", elapsed=1000)]
    memory.update(same, {501: 3}, 90.0)
    # ps rounds to seconds and polls jitter: the same process, a little off.
    assert memory.update([proc(501, 1, "[python] <defunct>", elapsed=1031, state="Z")], {}, 120.0) == {501: 3}


# ------------------------------------------------------------------------------------------------ properties

_COMMAND_WORDS = st.sampled_from(
    [
        "python",
        "/usr/bin/python3",
        "-u",
        "-m",
        "torch.distributed.run",
        "torchrun",
        "train.py",
        "--local_rank=1",
        "--rank",
        "3",
        "--world-size",
        "8",
        "--node_rank=1",
        "--nproc_per_node=2",
        "sh",
        "-c",
        "[python3]",
        "<defunct>",
        "accelerate",
        "launch",
    ]
)
_PROCESSES = st.lists(
    st.builds(
        proc,
        st.integers(1, 30),
        st.one_of(st.none(), st.integers(0, 30)),
        st.lists(_COMMAND_WORDS, max_size=8).map(" ".join),
        elapsed=st.one_of(st.none(), st.integers(0, 10_000)),
        state=st.sampled_from(["S", "R", "Z"]),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    processes=_PROCESSES,
    environment=st.dictionaries(st.integers(1, 30), st.integers(0, 9), max_size=8),
    use_pattern=st.booleans(),
)
def test_matching_never_raises_and_gives_each_rank_to_one_pid(
    processes: list[ProcInfo], environment: dict[int, int], use_pattern: bool
) -> None:
    ranks = match_ranks(processes, re.compile(r"train") if use_pattern else None, environment)
    assert len(set(ranks.values())) == len(ranks)
    assert set(ranks) <= {p.pid for p in processes}
    memory = RankMemory()
    assert set(memory.update(processes, ranks, 10.0).values()) == set(ranks.values())


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsing_any_text_never_raises(text: str) -> None:
    for pid, variables in parse_environ_grep(text).items():
        assert pid >= 0 and all(isinstance(value, str) for value in variables.values())
    program_of(text)
    is_launcher(text)
    global_rank_flag(text)
    local_rank_flag(text)


def test_ranks_below_a_launcher_are_no_helpers_of_the_script_that_started_it() -> None:
    # A wrapper script that matches the pattern too, starting torchrun; environments unreadable.
    processes = [
        proc(600, 1, "python run_training.py --config a.yaml"),
        proc(601, 600, "/usr/bin/python3 /usr/local/bin/torchrun --nproc_per_node=2 train.py"),
        proc(602, 601, "/usr/bin/python3 -u train.py"),
        proc(603, 601, "/usr/bin/python3 -u train.py"),
        proc(604, 602, "/usr/bin/python3 -u train.py"),  # rank 0's DataLoader worker
    ]
    assert find_rank_processes(processes, re.compile(r"train"), {}) == {600: None, 602: 0, 603: 1}
