"""`trainmon-tui parse-log` as a user runs it: real logs in, documented text and JSON out, clean errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from trainmon_tui.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MEGATRON = FIXTURES / "logs/megatron/megatron_lm_core_iteration_lm_loss_validation_checkpoint.txt"
HF_NAN = FIXTURES / "logs/hf_trainer/hf_trainer_dict_loss0_gradnorm_nan.txt"
TORCHRUN = FIXTURES / "logs/torchrun/torchrun_tee3_role_host_rank_prefix_interleaved_traceback.txt"
RECORD_KEYS = {
    "line",
    "rank",
    "step",
    "total_steps",
    "epoch",
    "total_epochs",
    "batch",
    "batches_per_epoch",
    "metrics",
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_json_has_the_documented_shape_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(["parse-log", str(MEGATRON), "--json"], capsys)
    assert status == 0
    doc = json.loads(out)
    assert set(doc) == {"format", "records", "events"}
    assert doc["format"] == "megatron"
    assert all(set(record) == RECORD_KEYS for record in doc["records"])
    last_step = [r for r in doc["records"] if r["step"] is not None][-1]
    assert last_step["step"] == 120
    assert last_step["total_steps"] == 1000
    assert last_step["epoch"] is None
    assert doc["events"] == []


def test_json_writes_nan_as_a_string_and_stays_valid(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(["parse-log", str(HF_NAN), "--json"], capsys)
    assert status == 0
    records = json.loads(out)["records"]
    assert [r["metrics"]["loss"] for r in records] == [0.2051, 0.0, 0.0]
    assert records[0]["metrics"]["grad_norm"] == "nan"
    assert records[0]["line"] == 1
    assert math.isclose(records[0]["epoch"], 0.53)


def test_json_events_carry_line_rank_kind_text(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(["parse-log", str(TORCHRUN), "--json"], capsys)
    events = json.loads(out)["events"]
    assert [(e["line"], e["rank"], e["kind"]) for e in events] == [
        (4, 0, "traceback"),
        (10, 1, "traceback"),
        (11, 2, "traceback"),
        (12, 3, "traceback"),
    ]
    assert all(e["text"] for e in events)


def test_text_output_names_format_progress_metrics_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(["parse-log", str(MEGATRON)], capsys)
    assert status == 0
    assert "format   megatron" in out
    assert "step 120/1000" in out
    assert "loss=7.42658" in out
    assert "val_loss=7.39886" in out
    # The log has timestamps: an ETA with a range, not "unknown".
    eta_line = next(line for line in out.splitlines() if line.strip().startswith("eta"))
    assert "range" in eta_line and "unknown" not in eta_line


def test_secrets_and_control_sequences_never_reach_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "0123456789abcdef0123456789abcdef01234567"
    log = tmp_path / "rank3.log"
    log.write_text(
        f"export WANDB_API_KEY={key}\n"
        "\x1b]0;pwned\x07\x1b[2JTraceback (most recent call last):\n"
        '  File "train.py", line 1, in <module>\n'
        f"RuntimeError: login failed with token hf_{'a' * 34} \x1b[31mred\x1b[0m\n"
        "{'loss': 1.5, 'learning_rate': 0.001, 'epoch': 0.1}\n"
    )
    for argv in (["parse-log", str(log)], ["parse-log", str(log), "--json"]):
        status, out, _ = _run(argv, capsys)
        assert status == 0
        assert key not in out
        assert "hf_" + "a" * 34 not in out
        assert "\x1b" not in out and "\x07" not in out
    _, out, _ = _run(["parse-log", str(log), "--json"], capsys)
    doc = json.loads(out)
    # The rank comes from the file name when lines carry no prefix.
    assert {r["rank"] for r in doc["records"]} == {3}
    assert [e["kind"] for e in doc["events"]] == ["traceback"]


def test_missing_file_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ([], ["--json"]):
        status, out, err = _run(["parse-log", str(tmp_path / "nope.log"), *extra], capsys)
        assert status == 2
        assert out == ""
        assert (
            err.strip()
            == f"trainmon-tui parse-log: {tmp_path / 'nope.log'}: cannot read: No such file or directory"
        )


def test_directory_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(["parse-log", str(tmp_path)], capsys)
    assert status == 2
    assert "Is a directory" in err and "Traceback" not in err


def test_console_script_reads_standard_input() -> None:
    text = MEGATRON.read_text()
    done = subprocess.run(
        [sys.executable, "-m", "trainmon_tui", "parse-log", "-", "--json"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["format"] == "megatron"
