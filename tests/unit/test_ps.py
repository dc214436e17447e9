"""Tests for the ps parser and elapsed-time conversion, on the collector's format and on real listings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import ProcInfo, ProcState
from trainmon_tui.parsers import ps as ps_module
from trainmon_tui.parsers.ps import PS_ARGV, PS_COLUMNS, parse_etime, parse_ps, parse_ps_aux

PS = Path(__file__).parent.parent / "fixtures" / "ps"


def read(name: str) -> str:
    return (PS / name).read_text(encoding="utf-8")


def test_argv_is_headerless_with_command_last() -> None:
    assert PS_ARGV == ("ps", "-eww", "-o", "pid=,ppid=,stat=,etime=,pcpu=,rss=,args=")
    assert PS_COLUMNS[-1] == "args"


def test_collector_format_generated_here() -> None:
    processes = parse_ps(read("ps_collector_format_headerless_generated.txt"))
    assert [p.pid for p in processes] == [7770, 7771, 7772, 7855]
    parent, trainer, stopped, zombie = processes
    assert parent == ProcInfo(
        pid=7770,
        ppid=7769,
        state=ProcState.SLEEPING,
        elapsed_s=2,
        cpu_pct=2.2,
        rss_kib=13556,
        command="/root/.pyenv/versions/3.11.7/bin/python3 -c  import os, time if os.fork() == 0:     "
        "os._exit(0) time.sleep(30)",
        stat="S",
    )
    # Double spaces inside the command line survive: only the leading columns are split.
    assert trainer.command.endswith("train.py --lr 3e-4 --run-name run  with  spaces")
    assert trainer.cpu_pct == 2.7
    assert stopped.state is ProcState.STOPPED and stopped.command == "sleep 30"
    assert zombie.state is ProcState.ZOMBIE and zombie.defunct
    assert (zombie.ppid, zombie.rss_kib, zombie.command) == (7770, 0, "[python3] <defunct>")
    assert not parent.defunct
    assert parent.rss_mib == pytest.approx(13556 / 1024)


def test_same_columns_with_header_line() -> None:
    headerless = parse_ps(read("ps_collector_format_headerless_generated.txt"))
    with_header = parse_ps(read("ps_collector_format_with_header_generated.txt"))
    assert with_header == headerless


def test_etimes_plain_seconds_under_elapsed_header() -> None:
    processes = parse_ps(read("ps_collector_format_etimes_with_header_generated.txt"))
    assert [(p.pid, p.elapsed_s) for p in processes] == [(7770, 2), (7771, 2), (7772, 2), (7855, 2)]
    assert processes[3].defunct


def test_days_format_with_comm_and_args_columns() -> None:
    processes = parse_ps(read("ps_eo_etime_pid_ppid_stat_comm_args_days_format.txt"))
    assert len(processes) == 22
    first = processes[0]
    assert (first.pid, first.ppid, first.state) == (1, 0, ProcState.SLEEPING)
    assert first.elapsed_s == ((51 * 24 + 21) * 60 + 5) * 60 + 51
    # COMMAND heads both comm and args; the command line (last column) wins.
    assert first.command == "/usr/lib/systemd/systemd --switched-root --system --deserialize 22"
    rcu_sched = next(p for p in processes if p.pid == 9)
    assert rcu_sched.state is ProcState.RUNNING and rcu_sched.command == "[rcu_sched]"
    assert first.cpu_pct is None and first.rss_kib is None


def test_forest_listing_marks_defunct_ranks() -> None:
    processes = parse_ps(read("ps_forest_pid_comm_torch_distributed_run_defunct.txt"))
    assert len(processes) == 17
    defunct = [p.pid for p in processes if p.defunct]
    assert defunct == [2834, 2836, 2971, 2837, 2964]
    launcher = next(p for p in processes if p.pid == 2816)
    assert launcher.command == "\\_ python3.11" and launcher.state is ProcState.UNKNOWN
    assert launcher.ppid is None and launcher.elapsed_s is None


def test_top_rows_by_their_header() -> None:
    (process,) = parse_ps(read("top_zombie_fairseq_train_z_state.txt"))
    assert (process.pid, process.state, process.cpu_pct, process.command) == (
        32503,
        ProcState.ZOMBIE,
        99.7,
        "fairseq-train",
    )
    assert process.defunct


def test_ps_aux_grepped_without_header() -> None:
    processes = parse_ps_aux(read("ps_aux_grep_python_inductor_workers_huge_vsz.txt"))
    # The shell prompt line between the two snapshots is skipped.
    assert [p.pid for p in processes] == [86504, 86515, 86953, 9348, 86126, 86177, 86355]
    trainer = next(p for p in processes if p.pid == 86177)
    assert (trainer.cpu_pct, trainer.rss_kib, trainer.stat) == (91.7, 22108948, "Sl+")
    assert trainer.command == "python mcp_rl_training.py"
    assert trainer.elapsed_s is None and trainer.ppid is None
    assert processes[0].command.endswith("--parent=86177 --read-fd=7 --write-fd=30")


def test_ps_aux_localised_start_and_truncated_user() -> None:
    processes = parse_ps_aux(read("ps_aux_grep_python_localized_dates_truncated_user.txt"))
    assert [p.pid for p in processes] == [2014, 2175, 1210352, 1210353]
    assert processes[1].stat == "Ssl" and processes[1].rss_kib == 22528
    assert processes[2].command.startswith("/home/lihua/.conda/envs/BE/bin/python ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:02", 2),
        ("05:51", 351),
        ("1:02:03", 3723),
        ("23:59:59", 86399),
        ("2-00:00:01", 172801),
        ("51-21:05:51", 4482351),
        ("123-04:05:06", 123 * 86400 + 4 * 3600 + 5 * 60 + 6),
        ("12345", 12345),
        ("  17:46 ", 1066),
    ],
)
def test_parse_etime_forms(text: str, seconds: int) -> None:
    assert parse_etime(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "-", "1-02:03", "61:00", "00:60", "1-24:00:00", "17:46.89", "Sep03", "1:2:3:4", "٣"]
)
def test_parse_etime_rejects(text: str) -> None:
    assert parse_etime(text) is None


def test_foreign_and_short_lines_are_skipped() -> None:
    text = "\n".join(
        [
            "root@host:~# ps -eww -o pid=,ppid=,stat=,etime=,pcpu=,rss=,args=",
            "  42     1 Ss         01:00  0.0  1234",  # no command line: an empty one, not a skipped row
            "  43     1 Q          01:00  0.0  1234 bogus-state",
            "  xx     1 S          01:00  0.0  1234 not-a-pid",
            "",
        ]
    )
    assert parse_ps(text) == [
        ProcInfo(
            pid=42,
            ppid=1,
            state=ProcState.SLEEPING,
            elapsed_s=60,
            cpu_pct=0.0,
            rss_kib=1234,
            command="",
            stat="Ss",
        )
    ]


_FRAGMENTS = st.sampled_from(
    [
        "PID",
        "PPID",
        "STAT",
        "ELAPSED",
        "COMMAND",
        "%CPU",
        "1",
        "12345",
        "Z",
        "S",
        "R+",
        "01:02",
        "1-02:03:04",
        "nan",
        "-1",
        "<defunct>",
        "[kworker/0:0]",
        " ",
        "\t",
        "\x00",
        "9" * 30,
    ]
)
_LINES = st.lists(_FRAGMENTS, max_size=10).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parsers_never_raise_on_any_text(text: str) -> None:
    assert all(isinstance(p, ProcInfo) for p in parse_ps(text))
    assert all(isinstance(p, ProcInfo) for p in parse_ps_aux(text))
    parse_etime(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINES, max_size=10))
def test_parse_ps_never_raises_on_ps_like_lines(lines: list[str]) -> None:
    for process in parse_ps("\n".join(lines)):
        assert process.pid >= 0
        assert process.cpu_pct is None or process.cpu_pct >= 0


# ------------------------------------------------------------------------------- the collector's format

_COLLECTOR_ROW_FRAGMENTS = st.sampled_from(
    [
        "1",
        "0",
        "42",
        "9" * 19,
        "x1",
        "S",
        "Sl",
        "Z+",
        "Q",
        "?",
        "R",
        "01:02",
        "1-02:03:04",
        "99:99",
        "12",
        "0.0",
        "226.5",
        "nan",
        "-1",
        "1_0",
        "inf",
        "4128",
        "python",
        "train.py --lr 3e-4",
        "<defunct>",
        "\t",
        "é",
    ]
)


def _collector_rows_both_ways(lines: list[str]) -> None:
    for line in lines:
        assert ps_module._read_collector_row(line) == ps_module._read_row(line, PS_COLUMNS), line


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_COLLECTOR_ROW_FRAGMENTS, max_size=9).map(" ".join), max_size=8))
def test_the_collector_format_is_read_by_position_as_by_its_columns(lines: list[str]) -> None:
    # parse_ps reads PS_COLUMNS rows by position (a listing per host every few seconds): it must give the
    # same ProcInfo as the general reader, twice over (the second time from remembered elapsed times).
    _collector_rows_both_ways(lines)
    _collector_rows_both_ways(lines)


def test_every_real_listing_reads_the_same_by_position() -> None:
    lines = [line for path in sorted(PS.glob("*.txt")) for line in path.read_text().splitlines()]
    assert sum(ps_module._read_collector_row(line) is not None for line in lines) > 20
    _collector_rows_both_ways(lines)
