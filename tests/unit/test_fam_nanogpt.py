"""nanoGPT and modded-nanogpt line families on the real logs in tests/fixtures/logs/nanogpt/."""

from __future__ import annotations

import calendar
import math
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from trainmon_tui.parsers.trainlog.base import Hit, LineFamily
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_nanogpt import FAMILIES, ModdedNanoGptFamily, NanoGptFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"
FULL_LOG = "nanogpt_full_log_startup_eval_ckpt_then_nan.txt"
QUOTED_LOG = "nanogpt_iter_loss_mfu_nan_after_ckpt_quoted.txt"
MODDED_LOG = "modded_nanogpt_step_total_trainloss_stepavg_nan.txt"
MODDED_TAIL_LOG = "modded_nanogpt_final_steps_val_loss_tail.txt"

# What the engine removes before a family sees a line: a [rankN]: prefix and a timestamp at the very start.
_ENGINE_PREFIX = re.compile(r"(?:\[rank\d+\]:)?(?:\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\]?\s*)?")


def fixture_lines(name: str) -> list[str]:
    return (LOGS / "nanogpt" / name).read_text(encoding="utf-8").splitlines()


def engine_cleaned(line: str) -> str:
    prefix = _ENGINE_PREFIX.match(line)
    return line[prefix.end() :] if prefix else line


def physical_lines(path: Path) -> list[str]:
    """The file's lines as the engine reads them: split on newline only."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def hits_by_line(family: LineFamily, lines: list[str]) -> dict[int, Hit]:
    """Feed every line to one family instance; 1-based line number -> Hit. A hit must pass the gate."""
    found: dict[int, Hit] = {}
    for number, line in enumerate(lines, start=1):
        hit = family.parse(line)
        if hit is not None:
            assert any(token in line for token in family.gate), line
            found[number] = hit
    return found


def test_module_exports_both_families() -> None:
    assert (NanoGptFamily, ModdedNanoGptFamily) == FAMILIES
    assert (NanoGptFamily.name, ModdedNanoGptFamily.name) == ("nanogpt", "modded_nanogpt")


def test_full_log_iter_and_eval_lines() -> None:
    lines = [engine_cleaned(line) for line in fixture_lines(FULL_LOG)]
    hits = hits_by_line(NanoGptFamily(), lines)
    # Startup chatter ("tokens per iteration will be: 512", "number of parameters: 10.65M", the warning and
    # "saving checkpoint to out-kirin") is not read: only 'iter' and 'step' lines from line 10 on are.
    assert min(hits) == 10
    assert {n for n in range(1, len(lines) + 1) if n not in hits} == {
        1, 2, 3, 4, 5, 6, 7, 8, 9, 32, 54, 76, 98
    }  # fmt: skip
    assert hits[10] == Hit(step=0, metrics={"loss": 4.2367, "val_loss": 4.2475})
    last = hits[len(lines)]
    assert last.step == 450
    assert last.total_steps is None
    assert math.isnan(last.metrics["loss"])
    assert last.metrics["time_ms"] == 1440.08
    assert last.metrics["mfu"] == 0.01


def test_mfu_placeholder_before_the_first_estimate_is_left_out() -> None:
    lines = [engine_cleaned(line) for line in fixture_lines(FULL_LOG)]
    first_iter = NanoGptFamily().parse(lines[10])
    assert lines[10].endswith("mfu -100.00%")
    assert first_iter == Hit(step=0, metrics={"loss": 4.2709, "time_ms": 10268.08})


def test_loss_turns_nan_at_iter_425() -> None:
    lines = [engine_cleaned(line) for line in fixture_lines(FULL_LOG)]
    hits = hits_by_line(NanoGptFamily(), lines)
    nan_lines = [number for number, hit in hits.items() if math.isnan(hit.metrics.get("loss", 0.0))]
    assert hits[min(nan_lines)].step == 425
    assert nan_lines == list(range(min(nan_lines), len(lines) + 1))


def test_quoted_issue_log_after_the_engine_strips_its_timestamps() -> None:
    # The issue pasted the log as a markdown quote; remove "> " the way a reader of the issue would.
    lines = [engine_cleaned(line.removeprefix(">").lstrip(" ")) for line in fixture_lines(QUOTED_LOG)]
    hits = hits_by_line(NanoGptFamily(), lines)
    assert [hit.step for hit in hits.values()][:3] == [2920, 2930, 2940]
    assert hits[17] == Hit(step=3000, metrics={"loss": 4.0390, "val_loss": 4.0427})
    assert hits[21].metrics == {"loss": 4.2490, "time_ms": 35392.33, "mfu": 13.85}
    assert 19 not in hits  # "saving checkpoint to out"
    assert hits[33].step == 3060
    assert math.isnan(hits[33].metrics["loss"])


def test_modded_log_steps_losses_and_nan_step_avg() -> None:
    lines = fixture_lines(MODDED_LOG)
    hits = hits_by_line(ModdedNanoGptFamily(), lines)
    assert 1 not in hits  # the "=====" separator
    assert hits[2] == Hit(step=0, total_steps=20344, metrics={"val_loss": 22.6137, "train_time_ms": 278.0})
    # step_avg prints "nanms" while the timer still skips warm-up steps: a placeholder, not a NaN fault.
    assert hits[3] == Hit(step=1, total_steps=20344, metrics={"loss": 22.6211, "train_time_ms": 81991.0})
    # The timer restarts after step 10.
    assert hits[13].metrics == {"loss": 8.9949, "train_time_ms": 1662.0}
    assert hits[15].metrics["step_avg_ms"] == 1695.46
    last = hits[len(lines)]
    assert (last.step, last.total_steps) == (139, 20344)
    assert last.metrics == {"loss": 6.2349, "train_time_ms": 220612.0, "step_avg_ms": 1710.17}
    val = [hit for hit in hits.values() if "val_loss" in hit.metrics]
    assert [(hit.step, hit.metrics["val_loss"]) for hit in val] == [(0, 22.6137), (125, 6.2335)]


def test_modded_tail_ends_at_the_total_with_final_val_loss() -> None:
    lines = fixture_lines(MODDED_TAIL_LOG)
    hits = hits_by_line(ModdedNanoGptFamily(), lines)
    assert len(hits) == len(lines) == 41
    final = hits[41]
    assert final.step == final.total_steps == 20344
    assert final.metrics == {"val_loss": 2.7737, "train_time_ms": 34640332.0, "step_avg_ms": 1703.57}


def test_families_do_not_read_each_others_lines() -> None:
    for line in fixture_lines(MODDED_LOG) + fixture_lines(MODDED_TAIL_LOG):
        assert NanoGptFamily().parse(line) is None, line
    for line in fixture_lines(FULL_LOG):
        assert ModdedNanoGptFamily().parse(engine_cleaned(line)) is None, line


def test_other_frameworks_lines_are_not_claimed() -> None:
    own = LOGS / "nanogpt"
    for path in sorted(LOGS.glob("*/*.txt")):
        if path.parent == own:
            continue
        families: list[LineFamily] = [NanoGptFamily(), ModdedNanoGptFamily()]
        for line in path.read_text(encoding="utf-8").splitlines():
            for family in families:
                assert family.parse(engine_cleaned(line)) is None, (family.name, path.name, line)


def test_through_the_log_engine() -> None:
    records, _, log_format = parse_lines(physical_lines(LOGS / "nanogpt" / QUOTED_LOG))
    assert log_format == "nanogpt"
    assert len(records) == 16
    # The engine removes the markdown quote and the user's timestamp, and keeps the time.
    evaluation = next(record for record in records if "val_loss" in record.metrics)
    assert (evaluation.line, evaluation.step, evaluation.metrics["val_loss"]) == (17, 3000, 4.0427)
    assert evaluation.timestamp == calendar.timegm((2023, 3, 22, 9, 32, 32, 0, 0, 0))
    records, _, log_format = parse_lines(physical_lines(LOGS / "nanogpt" / MODDED_TAIL_LOG))
    assert log_format == "modded_nanogpt"
    final = records[-1]
    assert (final.step, final.total_steps, final.metrics["val_loss"]) == (20344, 20344, 2.7737)


def test_absurdly_long_numbers_are_not_read() -> None:
    # Python refuses int() of more than 4300 digits; such a line is simply not a step line.
    assert ModdedNanoGptFamily().parse("step:" + "9" * 5000 + "/10 train_loss:1.0") is None
    assert NanoGptFamily().parse("iter " + "9" * 5000 + ": loss 1.0") is None


@given(st.text())
def test_parse_never_raises_on_arbitrary_text(text: str) -> None:
    NanoGptFamily().parse(text)
    ModdedNanoGptFamily().parse(text)


@given(
    st.sampled_from(["iter 1: loss ", "step 2: train loss ", "step:3/", "step:4 "]),
    st.text(alphabet="0123456789 ,.:%-nams_lostrainv", max_size=60),
)
def test_parse_never_raises_on_near_miss_text(head: str, tail: str) -> None:
    families: list[LineFamily] = [NanoGptFamily(), ModdedNanoGptFamily()]
    for family in families:
        hit = family.parse(head + tail)
        assert hit is None or not hit.is_empty()
