"""The status report (JSON object and Markdown) built from a store fed with real corpus output."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui import report_cmd
from trainmon_tui.cli import build_parser
from trainmon_tui.config import Config
from trainmon_tui.model import GpuSample, LogRecord, ProcInfo, ProcState
from trainmon_tui.parsers.dmon import DmonParser
from trainmon_tui.parsers.ps import parse_ps, parse_ps_aux
from trainmon_tui.parsers.smi_csv import parse_compute_apps, parse_query_gpu
from trainmon_tui.parsers.smi_status import classify_smi_failure
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.report import (
    ReportOptions,
    RunHints,
    build_report,
    format_duration,
    hosts_not_up,
    json_number,
    markdown_report,
    render_markdown,
)
from trainmon_tui.report_cmd import Collected, run_report
from trainmon_tui.state.store import HostState, Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "report"
DMON = FIXTURES / "dmon_s_pucm_blackwell_4gpu_driver595.txt"
QUERY_GPU = FIXTURES / "query_gpu_noheader_nounits_23fields_blackwell.txt"
# The fields that capture was taken with (from its provenance line).
QUERY_GPU_SPEC = (
    "index,uuid,name,pci.bus_id,driver_version,utilization.gpu,utilization.memory,memory.total,memory.used,"
    "memory.free,temperature.gpu,temperature.memory,power.draw,power.limit,clocks.gr,clocks.mem,"
    "clocks.max.gr,clocks.max.mem,fan.speed,pstate,pcie.link.gen.current,pcie.link.width.current,"
    "encoder.stats.sessionCount"
)
QUERY_GPU_FIELDS = tuple(QUERY_GPU_SPEC.split(","))
COMPUTE_APPS = FIXTURES / "query_compute_apps_noheader_nounits_uuid.txt"
COMPUTE_APPS_FIELDS = ("pid", "process_name", "gpu_uuid", "used_memory")
PS_AUX = FIXTURES / "ps_aux_grep_python_inductor_workers_huge_vsz.txt"
TOP_ZOMBIE = FIXTURES / "top_zombie_fairseq_train_z_state.txt"
MEGATRON = FIXTURES / "megatron_lm_core_iteration_lm_loss_validation_checkpoint.txt"
NANOGPT_NAN = FIXTURES / "nanogpt_iter_loss_mfu_nan_after_ckpt_quoted.txt"

NOW = 100.0
TRAINER_PID = 86177


def feed_dmon(store: Store, host: str, first_t: float, rounds: int) -> None:
    """The dmon capture replayed ``rounds`` times, one round per second, as the stand-in nvidia-smi does."""
    parser = DmonParser()
    lines = DMON.read_text().splitlines()
    for round_index in range(rounds):
        for line in lines:
            sample = parser.feed(line)
            if sample is not None:
                store.apply_gpu(host, sample, first_t + round_index)


def feed_query_gpu(store: Store, host: str, t: float) -> None:
    for sample in parse_query_gpu(QUERY_GPU.read_text(), QUERY_GPU_FIELDS):
        store.apply_gpu(host, sample, t)


def feed_log(
    store: Store, run: str, host: str, path: Path, *, rank: int, t: float, max_lines: int | None = None
) -> None:
    parser = LogParser(default_rank=rank)
    lines = path.read_text().splitlines()[:max_lines]
    for line in lines:
        records, events = parser.feed(line)
        for record in records:
            store.apply_record(run, host, record, t)
        for event in events:
            store.apply_event(run, host, event, t)


def cluster_store() -> Store:
    """Two hosts of a Megatron run (rank 1 on gpu-b stopped at step 30) and a third host that is down."""
    store = Store()
    store.set_host_status("gpu-a", HostState.UP, 0.0)
    store.set_host_status("gpu-b", HostState.UP, 0.0)
    store.set_host_status("gpu-c", HostState.DOWN, 40.0, "connection refused (Connect call failed)")
    feed_query_gpu(store, "gpu-a", 90.0)
    store.apply_compute_apps("gpu-a", parse_compute_apps(COMPUTE_APPS.read_text(), COMPUTE_APPS_FIELDS), 90.0)
    feed_dmon(store, "gpu-a", 91.0, rounds=10)
    # gpu-b's GPUs answered once, long ago: their numbers are stale.
    feed_dmon(store, "gpu-b", 20.0, rounds=1)
    store.apply_processes("gpu-a", parse_ps_aux(PS_AUX.read_text()), 99.0, rank_of_pid={TRAINER_PID: 0})
    feed_log(store, "megatron", "gpu-a", MEGATRON, rank=0, t=99.5)
    feed_log(store, "megatron", "gpu-b", MEGATRON, rank=1, t=40.0, max_lines=12)
    return store


HINTS = {"megatron": RunHints(process=re.compile(r"mcp_rl_training|fairseq-train"), total_steps=None)}


def test_hosts_that_are_not_up_come_first_with_their_reason() -> None:
    report = build_report(cluster_store().snapshot(NOW), ReportOptions(runs=HINTS))
    assert [host["name"] for host in report["hosts"]] == ["gpu-c", "gpu-a", "gpu-b"]
    down = report["hosts"][0]
    assert down["status"] == "down"
    assert down["error"] == "connection refused (Connect call failed)"
    assert down["status_age_s"] == 60.0
    assert down["gpus"] == [] and down["processes"] == []
    assert report["hosts"][1]["error"] is None


def test_sm_is_last_mean_min_max_over_the_window_not_one_reading() -> None:
    store = cluster_store()
    whole = build_report(store.snapshot(NOW))
    gpu0 = whole["hosts"][1]["gpus"][0]
    # One query-gpu reading (99 %) and then ten dmon rounds (98 %) for GPU 0.
    assert gpu0["index"] == 0
    assert gpu0["sm"] == {"last": 98.0, "mean": pytest.approx((99 + 98 * 10) / 11), "min": 98.0, "max": 99.0}
    assert gpu0["samples"] == 11
    recent = build_report(store.snapshot(NOW), ReportOptions(window_s=5.0))
    gpu0_recent = recent["hosts"][1]["gpus"][0]
    assert gpu0_recent["sm"] == {"last": 98.0, "mean": 98.0, "min": 98.0, "max": 98.0}
    assert gpu0_recent["samples"] == 6  # t = 95 .. 100
    assert [gpu["sm"]["last"] for gpu in whole["hosts"][1]["gpus"]] == [98.0, 99.0, 100.0, 100.0]


def test_gpu_values_come_from_the_newest_sample_and_unknown_stays_null() -> None:
    report = build_report(cluster_store().snapshot(NOW))
    gpu0 = report["hosts"][1]["gpus"][0]
    # The newest sample is a dmon row: fb 90538 MB, 81 C, 294 W; dmon prints no memory total.
    assert gpu0["mem_used_mib"] == 90538.0
    assert gpu0["mem_total_mib"] is None
    assert gpu0["temp_c"] == 81.0
    assert gpu0["power_w"] == 294.0
    assert gpu0["age_s"] == 0.0 and gpu0["stale"] is False
    store = cluster_store()
    feed_query_gpu(store, "gpu-a", NOW)
    with_totals = build_report(store.snapshot(NOW))["hosts"][1]["gpus"][0]
    assert with_totals["mem_total_mib"] == 97887.0
    assert with_totals["name"] == "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"


def test_stale_gpus_are_flagged() -> None:
    report = build_report(cluster_store().snapshot(NOW))
    gpu_b = report["hosts"][2]
    assert gpu_b["name"] == "gpu-b"
    assert all(gpu["stale"] for gpu in gpu_b["gpus"])
    assert gpu_b["gpus"][0]["age_s"] == 80.0


def test_only_interesting_processes_are_listed() -> None:
    report = build_report(cluster_store().snapshot(NOW), ReportOptions(runs=HINTS))
    processes = report["hosts"][1]["processes"]
    trainer = processes[0]
    assert trainer == {
        "pid": TRAINER_PID,
        "ppid": None,
        "cpu_pct": 91.7,
        "rss_mib": pytest.approx(22108948 / 1024),
        "elapsed_s": None,
        "state": "sleeping",
        "defunct": False,
        "command": "python mcp_rl_training.py",
        "gpu": [],
        "rank": 0,
        "run": "megatron",
        "in_ps": True,
    }
    # The inductor workers, the grep and jupyter are not interesting; the pids nvidia-smi names are, even
    # though ps (taken in another PID namespace) does not list them.
    assert [process["pid"] for process in processes] == [
        TRAINER_PID,
        377306,
        377813,
        377814,
        2094147,
        2094383,
    ]
    unlisted = {process["pid"]: process for process in processes[1:]}
    assert unlisted[377306]["gpu"] == [2, 3]
    assert unlisted[2094147]["gpu"] == [0]
    assert unlisted[2094147]["command"] is None and unlisted[2094147]["in_ps"] is False


def test_run_progress_eta_range_and_the_lagging_rank() -> None:
    report = build_report(cluster_store().snapshot(NOW), ReportOptions(runs=HINTS))
    (run,) = report["runs"]
    assert run["name"] == "megatron"
    # The run is as far as its slowest rank: rank 1 stopped at iteration 30 of 1000.
    assert (run["step"], run["total_steps"], run["progress_unit"]) == (30, 1000, "step")
    # Rank 1's log: iterations 10, 20, 30 at 23:41:12, :20, :28 -> 0.8 s per iteration, 970 to go.
    assert run["steps_per_s"] == pytest.approx(1.25)
    assert run["eta_s"] == pytest.approx(776.0)
    assert run["eta_low_s"] == pytest.approx(776.0) and run["eta_high_s"] == pytest.approx(776.0)
    ranks = {rank["rank"]: rank for rank in run["ranks"]}
    assert ranks[0]["step"] == 120 and ranks[0]["steps_behind"] == 0 and ranks[0]["host"] == "gpu-a"
    assert ranks[1]["step"] == 30 and ranks[1]["steps_behind"] == 90 and ranks[1]["host"] == "gpu-b"
    assert ranks[1]["last_line_age_s"] == 60.0
    assert ranks[0]["metrics"]["loss"] == pytest.approx(7.426577)
    assert ranks[1]["metrics"]["loss"] == pytest.approx(10.38769)
    assert ranks[0]["fraction_done"] == pytest.approx(0.12)
    loss = run["metrics"]["loss"]
    # Rank 0 speaks for the run: its newest loss, and min/max over its iterations 20..120.
    assert loss["rank"] == 0
    assert loss["last"] == pytest.approx(7.426577)
    assert loss["min"] == pytest.approx(7.424495) and loss["max"] == pytest.approx(10.72453)
    assert loss["samples"] == 11


def test_config_total_steps_fill_in_when_the_log_prints_none() -> None:
    store = Store()
    feed_log(store, "nano", "gpu-a", NANOGPT_NAN, rank=0, t=50.0, max_lines=16)
    without = build_report(store.snapshot(NOW))["runs"][0]
    assert (without["step"], without["total_steps"], without["eta_s"]) == (2990, None, None)
    # The rate is still known: 10 iterations per 11 s.
    assert without["steps_per_s"] == pytest.approx(10 / 11)
    hinted = build_report(store.snapshot(NOW), ReportOptions(runs={"nano": RunHints(total_steps=5000)}))
    run = hinted["runs"][0]
    assert run["total_steps"] == 5000
    assert run["eta_s"] == pytest.approx((5000 - 2990) * 1.1)


def test_nan_metric_is_the_string_nan_and_a_problem_in_markdown() -> None:
    store = Store()
    feed_log(store, "nano", "gpu-a", NANOGPT_NAN, rank=0, t=50.0)
    report = build_report(store.snapshot(NOW))
    run = report["runs"][0]
    assert run["metrics"]["loss"]["last"] == "nan"
    assert run["ranks"][0]["metrics"]["loss"] == "nan"
    (event,) = run["events"]
    assert event == {
        "kind": "nan",
        "host": "gpu-a",
        "rank": 0,
        "line": 23,
        "age_s": 50.0,
        "text": "iter 3010: loss nan, time 1019.95ms, mfu 14.12%",
    }
    text = json.dumps(report, allow_nan=False)  # strict JSON: no bare NaN anywhere
    assert '"nan"' in text
    markdown = render_markdown(report)
    problems = markdown.split("## Problems")[1].split("## Hosts")[0]
    assert "run **nano**: loss is nan" in problems
    assert "run **nano**: nan (gpu-a, rank 0, line 23, 50 s ago): `iter 3010: loss nan" in problems


def test_markdown_puts_problems_first_and_shows_unknown_as_na() -> None:
    store = cluster_store()
    store.apply_processes("gpu-b", parse_ps(TOP_ZOMBIE.read_text()), 40.0, rank_of_pid={32503: 1})
    markdown = markdown_report(
        store.snapshot(NOW),
        ReportOptions(
            runs=HINTS,
            window_s=10.0,
            generated_at=datetime(2025, 11, 6, 14, 0, tzinfo=UTC),
            log_silent_s=30.0,
        ),
    )
    assert markdown.startswith("# Training status — 2025-11-06T14:00:00+00:00\n")
    assert "Hosts: 3 (1 down, 2 up). Runs: 1." in markdown
    problems = markdown.split("## Problems")[1].split("## Hosts")[0]
    lines = [line for line in problems.splitlines() if line.startswith("- ")]
    assert lines[0] == "- host **gpu-c** is down: `connection refused (Connect call failed)` (for 1m 00s)"
    assert "- host **gpu-b**: no GPU sample from GPU 0, 1, 2, 3 for 1m 20s" in lines
    assert "- host **gpu-b**: process 32503 is defunct (zombie)" in lines
    assert "- run **megatron**: rank 1 on gpu-b has written nothing for 1m 00s" in lines
    # GPU 0 on gpu-a: SM last/mean/min/max over the window (t = 90 .. 100: one query-gpu reading of 99 %,
    # ten dmon rows of 98 %), memory total unknown -> n/a, never 0.
    assert "| 0 | 98 | 98.1 | 98 | 99 | 100 % | 11 | 90538 / n/a | 81 | 294 | 0 s ago |" in markdown
    # gpu-b's GPUs sent nothing in the window: the old reading is shown as such, the window stats unknown.
    stale_row = "| 0 | 98 | n/a | n/a | n/a | 100 % | 0 | 90538 / n/a | 81 | 294 | 1m 20s ago (stale) |"
    assert stale_row in markdown
    assert (
        "| 86177 | 0 | - | megatron | sleeping | 91.7 | 21591 | n/a | python mcp_rl_training.py |" in markdown
    )
    assert "| 32503 | 1 | - | megatron | zombie | 99.7 | n/a | n/a | fairseq-train |" in markdown
    assert "- Progress: step 30 / 1000 (3.0 %) (slowest rank)" in markdown
    assert "- Speed 1.25 steps/s; ETA 12m 56s (range 12m 56s – 12m 56s)" in markdown
    assert (
        "| 1 | gpu-b | 30 | 90 steps ← slowest | 1m 00s ago | loss 10.39, lr 9e-05, grad_norm 3.874 |"
        in markdown
    )
    assert (
        "| 0 | gpu-a | 120 | - | 0 s ago | loss 7.427, val_loss 7.399, lr 9.822e-05, grad_norm 1.023 |"
        in markdown
    )
    # The whole log arrived at once; its timestamps put all but the last two iterations before the window.
    assert "- loss: 7.427 (min 7.424, mean 7.426, max 7.427 over 2 values over 10 s)" in markdown
    assert markdown.index("- loss:") < markdown.index("- consumed_samples:")
    assert markdown.index("### gpu-c (down") < markdown.index("### gpu-a (up)")


def test_host_text_is_cleaned_of_secrets_and_control_sequences() -> None:
    store = Store()
    store.set_host_status("gpu-x", HostState.ERROR, 0.0, "nvidia-smi failed: \x1b]0;pwned\x07bad\x1b[2J")
    store.apply_processes(
        "gpu-y",
        [
            ProcInfo(
                pid=7,
                ppid=1,
                state=ProcState.RUNNING,
                elapsed_s=65,
                cpu_pct=100.0,
                rss_kib=2048,
                command=f"python train.py --wandb_api_key={'0123456789abcdef' * 2}01234567 \x1b[31mred",
            )
        ],
        NOW,
        rank_of_pid={7: 0},
    )
    report = build_report(store.snapshot(NOW))
    assert report["hosts"][0]["error"] == "nvidia-smi failed: bad"
    command = report["hosts"][1]["processes"][0]["command"]
    assert "0123456789abcdef" not in command and "\x1b" not in command
    assert command.startswith("python train.py --wandb_api_key=***")
    markdown = render_markdown(report)
    assert "\x1b" not in markdown and "0123456789abcdef0123" not in markdown
    assert "| 7 | 0 | - | - | running | 100 | 2 | 1m 05s |" in markdown


def test_a_host_with_no_data_yet_is_truthful() -> None:
    store = Store()
    store.set_host_status("gpu-a", HostState.CONNECTING, 0.0)
    store.set_host_status("gpu-b", HostState.UP, 0.0)
    snapshot = store.snapshot(NOW)
    assert hosts_not_up(snapshot) == ["gpu-a"]
    report = build_report(snapshot)
    assert report["hosts"][0]["status"] == "connecting"
    assert report["hosts"][1]["last_data_age_s"] is None
    markdown = render_markdown(report)
    assert "host **gpu-a** is connecting (for 1m 40s)" in markdown
    assert "### gpu-b (up)\n\nNo GPU samples received." in markdown


def test_a_gpu_that_reports_no_utilisation_has_null_stats() -> None:
    store = Store()
    store.apply_gpu("gpu-a", GpuSample(gpu=0, fb_used_mib=100.0), NOW)
    gpu = build_report(store.snapshot(NOW))["hosts"][0]["gpus"][0]
    assert gpu["sm"] == {"last": None, "mean": None, "min": None, "max": None}
    assert gpu["samples"] == 0
    assert gpu["temp_c"] is None and gpu["power_w"] is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "n/a"),
        (math.nan, "n/a"),
        (0.4, "0 s"),
        (59.4, "59 s"),
        (65, "1m 05s"),
        (3720, "1h 02m"),
        (90000, "1d 01h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_json_number_keeps_unknown_and_non_finite_apart() -> None:
    assert json_number(None) is None
    assert json_number(0.0) == 0.0
    assert (json_number(math.nan), json_number(math.inf), json_number(-math.inf)) == ("nan", "inf", "-inf")


@settings(max_examples=60, deadline=None)
@given(reason=st.text(), command=st.text(), metric=st.floats(allow_nan=True, allow_infinity=True))
def test_any_host_text_or_value_renders_to_strict_json_and_inert_markdown(
    reason: str, command: str, metric: float
) -> None:
    store = Store()
    store.set_host_status("h", HostState.DOWN, 0.0, reason)
    store.apply_processes(
        "g", [ProcInfo(7, None, ProcState.UNKNOWN, None, None, None, command)], 1.0, rank_of_pid={7: 0}
    )
    store.apply_record("r", "g", LogRecord(line=2, rank=0, step=4, metrics={"loss": metric}), 2.0)
    report = build_report(store.snapshot(3.0))
    json.dumps(report, allow_nan=False)
    markdown = render_markdown(report)
    controls = [c for c in markdown if unicodedata.category(c) == "Cc" and c not in "\n\t"]
    assert controls == []


def test_a_host_whose_gpus_cannot_be_read_says_why() -> None:
    store = Store()
    store.set_host_status("gpu-a", HostState.UP, 0.0)
    reason = classify_smi_failure((FIXTURES / "smi_failed_couldnt_communicate_single_line.txt").read_text())
    assert reason is not None
    store.set_gpu_status("gpu-a", reason, 10.0)
    report = build_report(store.snapshot(NOW))
    host = report["hosts"][0]
    assert (host["status"], host["error"]) == ("up", None)
    assert (host["gpu_error"], host["gpu_error_age_s"], host["gpus"]) == ("driver not loaded", 90.0, [])
    markdown = render_markdown(report)
    assert "- host **gpu-a**: GPUs cannot be read: `driver not loaded` (for 1m 30s)" in markdown
    assert "### gpu-a (up)\n\nGPUs cannot be read: `driver not loaded`." in markdown


def test_what_does_not_work_on_an_up_host_is_listed_with_its_source() -> None:
    store = Store()
    store.set_host_status("gpu-a", HostState.UP, 0.0)
    store.set_host_problem("gpu-a", "ps", "ps: exit status 1: \x1b[2Jerror: garbage option", 40.0)
    store.set_host_problem("gpu-a", "log llama collector", "failed: ValueError: bad; restarting in 2 s", 70.0)
    report = build_report(store.snapshot(NOW))
    assert report["hosts"][0]["problems"] == [
        {
            "source": "log llama collector",
            "message": "failed: ValueError: bad; restarting in 2 s",
            "age_s": 30.0,
        },
        {"source": "ps", "message": "ps: exit status 1: error: garbage option", "age_s": 60.0},
    ]
    markdown = render_markdown(report)
    assert "- host **gpu-a**: ps: `ps: exit status 1: error: garbage option` (for 1m 00s)" in markdown


def test_logs_that_cannot_be_read_are_named_per_host() -> None:
    store = Store()
    store.set_run_status("llama", "gpu-b", "no such file: /runs/llama/rank*.log", 70.0)
    store.set_run_status("llama", "gpu-a", "permission denied: /runs/llama/rank0.log", 40.0)
    report = build_report(store.snapshot(NOW))
    (run,) = report["runs"]
    assert run["log_problems"] == [
        {"host": "gpu-a", "message": "permission denied: /runs/llama/rank0.log", "age_s": 60.0},
        {"host": "gpu-b", "message": "no such file: /runs/llama/rank*.log", "age_s": 30.0},
    ]
    assert (run["step"], run["eta_s"], run["ranks"]) == (None, None, [])
    markdown = render_markdown(report)
    assert "- run **llama** on gpu-b: `no such file: /runs/llama/rank*.log` (for 30 s)" in markdown
    assert "- Progress: step n/a" in markdown
    assert "- No progress read from the logs yet." in markdown


def test_gpu_numbers_of_a_host_that_went_down_are_stale_however_recent() -> None:
    store = Store()
    store.set_host_status("gpu-a", HostState.UP, 0.0)
    feed_dmon(store, "gpu-a", 98.0, rounds=2)
    store.set_host_status("gpu-a", HostState.DOWN, 99.5, "keepalive timeout")
    gpus = build_report(store.snapshot(NOW))["hosts"][0]["gpus"]
    assert [(gpu["age_s"], gpu["stale"]) for gpu in gpus] == [(1.0, True)] * 4


def test_report_command_line_options() -> None:
    args = build_parser().parse_args(["report", "--hosts", "hosts.yaml"])
    assert (args.command, args.hosts, args.seconds, args.format) == ("report", "hosts.yaml", 10.0, "markdown")
    args = build_parser().parse_args(["report", "--hosts", "h.yaml", "--seconds", "2.5", "--format", "json"])
    assert (args.seconds, args.format) == (2.5, "json")
    for bad in (["--seconds", "0"], ["--seconds", "-1"], ["--seconds", "inf"], ["--format", "html"], []):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["report", "--hosts", "h.yaml", *bad] if bad else ["report"])
        assert exit_info.value.code == 2


def test_a_config_error_is_one_line_and_exit_2_without_collecting(tmp_path: Path) -> None:
    config = tmp_path / "hosts.yaml"
    config.write_text("hosts:\n  - name: a\n    known_hosts: none\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_report(str(config), seconds=60, out=out, err=err) == 2
    assert out.getvalue() == ""
    message = err.getvalue()
    assert message.count("\n") == 1
    assert message.startswith(f"trainmon-tui report: {config}:3: host 'a': `known_hosts` cannot be 'none'")
    missing = io.StringIO()
    assert run_report(str(tmp_path / "absent.yaml"), out=out, err=missing) == 2
    assert missing.getvalue().startswith("trainmon-tui report: ") and "cannot read" in missing.getvalue()


def test_the_report_module_is_pure() -> None:
    """Rendering needs the model, state, analysis and sanitize layers only: no SSH, no UI, no YAML."""
    code = "import json, sys, trainmon_tui.report; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
    tops = {name.split(".")[0] for name in loaded}
    assert not tops & {"asyncssh", "textual", "yaml", "pynvml", "plotext"}
    assert not [name for name in loaded if name.startswith(("trainmon_tui.transport", "trainmon_tui.ui"))]
    assert "trainmon_tui.config" not in loaded


def test_the_command_exits_at_once_when_stopping_did_not_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is out; a connection still closing must not keep the process: it exits with the status."""
    config = tmp_path / "hosts.yaml"
    config.write_text("hosts:\n  - name: gpu-a\n    address: 10.0.0.1\n")
    store = Store()
    store.set_host_status("gpu-a", HostState.DOWN, 0.0, "keepalive timeout")

    async def collect(
        config: Config, seconds: float, *, on_snapshot: Callable[..., None], **_: object
    ) -> Collected:
        snapshot = store.snapshot(seconds)
        on_snapshot(snapshot)
        return Collected(snapshot, stopped_cleanly=False)

    exits: list[int] = []

    def fake_exit(status: int) -> None:
        exits.append(status)

    monkeypatch.setattr(report_cmd, "collect", collect)
    monkeypatch.setattr(os, "_exit", fake_exit)
    out, err = io.StringIO(), io.StringIO()
    report_cmd.run_report(str(config), seconds=3, output_format="json", out=out, err=err)
    assert exits == [1]
    assert json.loads(out.getvalue())["hosts"][0]["error"] == "keepalive timeout"
