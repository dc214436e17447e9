"""Bare tqdm bar family and the bar helpers other families share, on real bars from tests/fixtures/logs/."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_tqdm import (
    FAMILIES,
    TqdmFamily,
    add_metric,
    bar_unit,
    is_training_loop,
    last_bar,
    read_postfix,
)

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def physical_lines(relative: str) -> list[str]:
    """The fixture's lines as a log reader sees them: split on newline only, \\r kept."""
    with (LOGS / relative).open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = handle.read().split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def test_families_export() -> None:
    assert list(FAMILIES) == [TqdmFamily]
    assert TqdmFamily.name == "tqdm"


def test_numbered_hf_bar_lines_give_step_and_total() -> None:
    lines = physical_lines("hf_trainer/hf_trainer_tqdm_lines_numbered_then_nccl_timeout.txt")
    # "[1745]   1%|          | 10/1752 [00:29<1:22:01,  2.83s/it]" once the viewer's number is gone.
    text = lines[1].split("] ", 1)[1]
    hit = TqdmFamily().parse(text)
    assert hit is not None
    assert (hit.step, hit.total_steps) == (10, 1752)
    assert hit.metrics == {}


def test_bar_without_left_pipe_and_huge_total() -> None:
    lines = physical_lines("misc/killed_after_tqdm_100pct.txt")
    assert lines[2].startswith("100%██")
    hit = TqdmFamily().parse(lines[2])
    assert hit is not None
    assert (hit.step, hit.total_steps) == (3000001, 3000001)


def test_bar_followed_by_a_message_is_still_read() -> None:
    lines = physical_lines("misc/killed_after_tqdm_100pct.txt")
    hit = TqdmFamily().parse(lines[1])
    assert hit is not None
    assert (hit.step, hit.total_steps) == (0, 3000001)


def test_bar_of_other_units_and_named_jobs_gives_no_progress() -> None:
    family = TqdmFamily()
    map_bar = "Map:   5%|▌         | 1000/19999 [00:00<00:03, 5630.17 examples/s]"
    shards = "Loading checkpoint shards:  67%|██████▋   | 2/3 [00:02<00:01,  1.41s/it]"
    images = "Test      10043785683.jpg:   1%|          | 10/1000 [00:01<01:30, 10.9image/s]"
    for text in (map_bar, shards, images):
        hit = family.parse(text)
        assert hit is not None, text
        assert hit.is_empty(), text


def test_nested_evaluation_bar_is_ignored_until_training_bar_finishes() -> None:
    family = TqdmFamily()
    first = family.parse("  0%|          | 559/240003 [02:25<16:26:17,  4.05it/s]")
    assert first is not None
    assert first.step == 559
    evaluation = family.parse(" 67%|██████▋   | 2/3 [00:00<00:00,  3.10it/s]")
    assert evaluation is not None
    assert evaluation.is_empty()
    later = family.parse("  0%|          | 560/240003 [02:26<17:21:09,  3.83it/s]")
    assert later is not None
    assert later.step == 560
    family.parse("100%|██████████| 240003/240003 [16:26:17<00:00,  4.05it/s]")
    second_run = family.parse("  1%|          | 12/1000 [00:03<04:10,  3.95it/s]")
    assert second_run is not None
    assert (second_run.step, second_run.total_steps) == (12, 1000)


def test_postfix_metrics_and_days_in_eta() -> None:
    hit = TqdmFamily().parse(
        "Training:  12%|█▏        | 120/1000 [2 days, 01:02:03<14:02:11,  1.20s/it, loss=0.31, lr=1e-4]"
    )
    assert hit is not None
    assert (hit.step, hit.total_steps) == (120, 1000)
    assert hit.metrics == {"loss": 0.31, "lr": 1e-4}


def test_ascii_bar_with_digits_in_the_glyphs() -> None:
    hit = TqdmFamily().parse(" 45%|####5     | 450/1000 [01:02<01:10,  7.20it/s]")
    assert hit is not None
    assert (hit.step, hit.total_steps) == (450, 1000)


def test_glued_redraws_take_the_last_state() -> None:
    lines = physical_lines("accelerate/accelerate_trl_sft_tqdm_rank_warnings_swanlab.txt")
    bar = last_bar(lines[27])
    assert bar is not None
    assert (bar[2], bar[3]) == ("10", "4854")


def test_bar_unit_reads_rate_forms() -> None:
    assert bar_unit("00:29<1:22:01,  2.83s/it") == "it"
    assert bar_unit("00:00<?, ?it/s") == "it"
    assert bar_unit("00:00<00:59, 5349.52 examples/s") == "examples"
    assert bar_unit("00:01<21:37,  1.30s/image") == "image"
    assert bar_unit("00:48<00:") is None
    assert bar_unit(None) is None


def test_read_postfix_skips_version_and_reads_global_step() -> None:
    metrics: dict[str, float] = {}
    step = read_postfix(
        "6:28:43<94:39:17,  1.37it/s, loss=2.6, v_num=95nc, global_step=3.2e+4, x=abc", metrics
    )
    assert step == 32000
    assert metrics == {"loss": 2.6}


def test_add_metric_keeps_both_of_two_aliases() -> None:
    metrics: dict[str, float] = {}
    add_metric(metrics, "loss", 0.158)
    add_metric(metrics, "train_loss", 0.149)
    assert metrics == {"loss": 0.158, "train_loss": 0.149}


def test_training_loop_names() -> None:
    assert is_training_loop("")
    assert is_training_loop("Training")
    assert is_training_loop("Epoch 3")
    assert not is_training_loop("Map")
    assert not is_training_loop("Evaluating")


def test_engine_names_bare_bar_log_tqdm() -> None:
    with (LOGS / "misc/killed_after_tqdm_100pct.txt").open(encoding="utf-8", newline="\n") as handle:
        records, _, detected = parse_lines(handle)
    assert detected == "tqdm"
    assert [(r.line, r.step, r.total_steps) for r in records] == [(2, 0, 3000001), (3, 3000001, 3000001)]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    family = TqdmFamily()
    family.parse(text)
    family.parse(text + " 12%|█| 3/25 [00:01<00:09, 2.1it/s, loss=" + text + "]")
