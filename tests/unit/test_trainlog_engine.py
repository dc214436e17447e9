"""The training-log engine: redraws, control codes, prefixes, glued lines, wrapped dicts, formats, ranks."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import EventKind, LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.engine import LogParser, _make_record, parse_lines
from trainmon_tui.parsers.trainlog.paths import rank_from_path

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"

BAR = "{pct:3d}%|{glyphs:<10}| {n}/200 [00:{n:02d}<01:00,  3.10it/s]"


def bar(n: int) -> str:
    return BAR.format(pct=n * 100 // 200, glyphs="█" * (n // 20), n=n)


def physical_lines(relative: str) -> list[str]:
    """The fixture's lines as a log reader sees them: split on newline only, \\r kept."""
    with (LOGS / relative).open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = handle.read().split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def parse_fixture(relative: str) -> tuple[list[LogRecord], list[LogEvent], str | None]:
    return parse_lines(physical_lines(relative))


def utc(*fields: int) -> float:
    return float(calendar.timegm((*fields, 0, 0, 0)))


# --- \r redraws --------------------------------------------------------------------------------------------


def test_redraws_keep_only_the_last_bar_state() -> None:
    parser = LogParser()
    records, _ = parser.feed("\r".join(["", bar(1), bar(2), bar(3)]))
    assert [(r.line, r.step, r.total_steps) for r in records] == [(1, 3, 200)]


def test_message_between_redraws_is_kept_and_line_number_is_physical() -> None:
    parser = LogParser()
    parser.feed("starting")
    records, events = parser.feed(
        "\r".join([bar(1), bar(2), "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", bar(3)])
    )
    assert [(r.line, r.step) for r in records] == [(2, 3)]
    assert [(e.line, e.kind) for e in events] == [(2, EventKind.OOM)]


def test_trailing_carriage_return_keeps_the_last_bar() -> None:
    records, _ = LogParser().feed(bar(7) + "\r" + bar(8) + "\r")
    assert [r.step for r in records] == [8]


def test_dict_printed_after_a_redraw_keeps_bar_and_dict() -> None:
    records, _ = LogParser().feed(bar(9) + "\r" + bar(10) + "\r{'loss': 0.5, 'epoch': 0.1}")
    assert [(r.step, r.metrics.get("loss"), r.epoch) for r in records] == [(10, None, None), (None, 0.5, 0.1)]


def test_real_line_of_1337_redraws() -> None:
    lines = physical_lines("basicsr/basicsr_iqa_epoch_iter_eta_with_raw_cr_validation_bar.txt")
    assert lines[11].count("\r") == 1336
    parser = LogParser()
    outputs = [parser.feed(line) for line in lines]
    # The validation bar counts images, not training steps: no record, and line numbers stay physical.
    assert outputs[11] == ([], [])
    assert [r.line for r in outputs[13][0]] == [14]


# --- control codes -----------------------------------------------------------------------------------------


def test_ansi_colours_are_removed() -> None:
    line = physical_lines("torchtitan/torchtitan_rank0_prefix_step_lines.txt")[0]
    coloured = line.replace("step:", "\x1b[31mstep:").replace("loss:", "\x1b[32mloss:\x1b[0m") + "\x1b[39m"
    plain, _ = LogParser().feed(line)
    colour, _ = LogParser().feed(coloured)
    assert colour == plain
    assert (colour[0].step, colour[0].metrics["loss"]) == (14, 3.24405)


def test_keras_backspace_erasure_is_removed() -> None:
    records, _ = LogParser().feed(
        "\x08" * 40 + " 12/100 [==>...........................] - ETA: 3s - loss: 0.5123"
    )
    assert [(r.batch, r.batches_per_epoch, r.metrics) for r in records] == [(12, 100, {"loss": 0.5123})]


# --- prefixes ----------------------------------------------------------------------------------------------


def test_rank_prefix_glued_to_logger_prefix() -> None:
    records, _, detected = parse_fixture("torchtitan/torchtitan_rank0_prefix_step_lines.txt")
    assert detected == "torchtitan"
    assert {r.rank for r in records} == {0}
    assert records[0].timestamp == utc(2026, 5, 18, 16, 4, 46) + 0.338


def test_role_and_host_rank_prefixes() -> None:
    records, _ = LogParser().feed("[default3]:{'loss': 1.5, 'epoch': 0.2}")
    assert [(r.rank, r.metrics) for r in records] == [(3, {"loss": 1.5})]
    parser = LogParser()
    for line in physical_lines("torchrun/torchrun_tee3_role_host_rank_prefix_interleaved_traceback.txt"):
        parser.feed(line)
    assert parser.ranks == frozenset({0, 1, 2, 3})
    assert parser.format is None


def test_events_carry_the_prefix_rank() -> None:
    _, events, _ = parse_fixture("torchrun/torchrun_tee3_role_host_rank_prefix_interleaved_traceback.txt")
    assert {event.rank for event in events} == {0, 1, 2, 3}
    assert all("[host1:" not in event.text for event in events)


def test_bracketed_glog_after_rank_prefix_and_bar_glued_before_it() -> None:
    parser = LogParser()
    line = physical_lines("accelerate/accelerate_trl_sft_tqdm_rank_warnings_swanlab.txt")[25]
    records, _ = parser.feed(line)
    assert [(r.step, r.total_steps, r.rank) for r in records] == [(0, 4854, None)]
    assert parser.ranks == frozenset({1})


def test_glog_prefix_is_removed() -> None:
    records, _ = LogParser().feed("I0204 16:43:58.892892 758648 train.py:10] epoch: 2, iter: 40, loss: 0.75")
    assert [(r.epoch, r.step, r.metrics, r.timestamp) for r in records] == [(2.0, 40, {"loss": 0.75}, None)]


def test_timestamp_prefixes() -> None:
    parser = LogParser()
    (dated,), _ = parser.feed("2023-03-22 10:11:12 iter 5: loss 1.25, time 10.00ms, mfu 1.00%")
    assert (dated.step, dated.timestamp) == (5, utc(2023, 3, 22, 10, 11, 12))
    (bracketed,), _ = parser.feed("[2025-04-13 23:41:12,250] epoch=1 step=7 loss=0.5")
    assert bracketed.timestamp == utc(2025, 4, 13, 23, 41, 12) + 0.25
    (offset,), _ = parser.feed("2024-01-01T10:00:00+02:00 epoch=1 step=8 loss=0.5")
    assert offset.timestamp == utc(2024, 1, 1, 8, 0, 0)
    (time_only,), _ = parser.feed("[05:50:11.624892] epoch=1 step=9 loss=0.5")
    assert (time_only.step, time_only.timestamp) == (9, None)
    (no_year,), _ = parser.feed("10/30 22:18:02 - epoch=1 step=10 loss=0.5")
    assert (no_year.step, no_year.timestamp) == (10, None)
    (not_a_date,), _ = parser.feed("2024-13-45 10:00:00 epoch=1 step=11 loss=0.5")
    assert (not_a_date.step, not_a_date.timestamp) == (11, None)


def test_markdown_quoted_paste_with_timestamps() -> None:
    records, _, detected = parse_fixture("nanogpt/nanogpt_iter_loss_mfu_nan_after_ckpt_quoted.txt")
    assert detected == "nanogpt"
    assert [r.line for r in records][:3] == [1, 3, 5]
    assert records[0].timestamp == utc(2023, 3, 22, 9, 30, 39)
    assert records[0].step == 2920
    assert records[-1].line == 33


def test_viewer_line_numbers_are_removed() -> None:
    records, _, detected = parse_fixture("hf_trainer/hf_trainer_tqdm_lines_numbered_then_nccl_timeout.txt")
    assert detected == "hf_trainer"
    steps = [r.step for r in records if r.step is not None]
    assert steps[0] == 10 and steps[-1] == 23
    (loss_record,) = [r for r in records if r.metrics]
    assert loss_record.line == 14
    assert loss_record.metrics["grad_norm"] == 1.4142135381698608


def test_default_rank_applies_to_lines_without_prefix() -> None:
    parser = LogParser(default_rank=5)
    (record,), _ = parser.feed("{'loss': 1.0, 'epoch': 0.5}")
    (prefixed,), _ = parser.feed("[rank2]:{'loss': 2.0, 'epoch': 0.5}")
    assert (record.rank, prefixed.rank) == (5, 2)
    assert parser.ranks == frozenset({2, 5})


# --- wrapped dicts -----------------------------------------------------------------------------------------


def test_wrapped_dict_is_read_at_its_first_line() -> None:
    parser = LogParser()
    assert parser.feed("{'eval_loss': 2.5, 'eval_runtime': 27") == ([], [])
    assert parser.feed("4.3799, 'eval_samples_pe") == ([], [])
    (record,), _ = parser.feed("r_second': 7.289, 'epoch': 0.01}   ")
    assert (record.line, record.epoch) == (1, 0.01)
    assert record.metrics == {"val_loss": 2.5, "eval_runtime": 274.3799, "eval_samples_per_second": 7.289}


def test_dict_that_never_closes_holds_only_a_few_lines() -> None:
    parser = LogParser()
    parser.feed("{'loss': 0.5, 'learning_rate': 0.001,")
    parser.feed("epoch: 2, iter: 100, acc: 0.8")
    for _ in range(5):
        assert parser.feed("some unrelated output") == ([], [])
    # Past the bound the dict is read as it is, and the lines held behind it are read on their own.
    records, _ = parser.feed("epoch: 3, iter: 120, acc: 0.9")
    assert [(r.line, r.step, r.metrics) for r in records] == [
        (1, None, {"loss": 0.5, "lr": 0.001}),
        (2, 100, {"acc": 0.8}),
        (8, 120, {"acc": 0.9}),
    ]


def test_blank_or_prefixed_line_ends_a_held_dict() -> None:
    parser = LogParser()
    parser.feed("{'loss': 0.5, 'epoch': 0.1,")
    (flushed,), _ = parser.feed("")
    assert (flushed.line, flushed.metrics) == (1, {"loss": 0.5})
    parser.feed("{'loss': 0.6, 'epoch': 0.2,")
    records, _ = parser.feed("[rank1]:{'loss': 0.7, 'epoch': 0.3}")
    assert [(r.line, r.rank, r.metrics["loss"]) for r in records] == [(3, None, 0.6), (4, 1, 0.7)]


def test_finish_reads_a_dict_cut_off_at_the_end() -> None:
    parser = LogParser()
    parser.feed("{'loss': 0.25, 'epoch': 0.75, 'grad_no")
    records, _ = parser.finish()
    assert [(r.line, r.epoch, r.metrics) for r in records] == [(1, 0.75, {"loss": 0.25})]


# --- format detection, records, API ------------------------------------------------------------------------


def test_specific_family_names_the_format_even_when_bars_are_more_numerous() -> None:
    parser = LogParser()
    for n in range(1, 30):
        parser.feed(bar(n))
    assert parser.format == "tqdm"
    parser.feed("{'loss': 0.5, 'epoch': 0.1}")
    assert parser.format == "hf_trainer"


def test_no_record_without_progress_or_metric() -> None:
    parser = LogParser()
    assert parser.feed("Map:  50%|█████     | 160000/320004 [00:30<00:30, 5300.0 examples/s]") == ([], [])
    assert parser.feed("      Epoch    GPU_mem   box_loss   cls_loss   dfl_loss  Instances       Size") == (
        [],
        [],
    )
    assert parser.format is None


def test_lines_with_newline_read_like_stripped_lines() -> None:
    path = LOGS / "keras/keras2_epoch_bar_ms_step_val_metrics.txt"
    with path.open(encoding="utf-8", newline="\n") as handle:
        from_file = parse_lines(handle)
    assert from_file == parse_fixture("keras/keras2_epoch_bar_ms_step_val_metrics.txt")


def test_extra_metric_patterns() -> None:
    records, _, _ = parse_lines(
        ["custom: throughput 812.5 samples/s", "{'loss': 0.5, 'epoch': 0.1} gpu_temp=71C"],
        extra_metrics=[
            ("samples/s", r"throughput (?P<value>[\d.]+)"),
            ("gpu_temp", r"gpu_temp=(?P<value>\d+)C"),
        ],
    )
    assert [r.metrics for r in records] == [{"samples_s": 812.5}, {"loss": 0.5, "gpu_temp": 71.0}]
    with pytest.raises(ValueError, match="value"):
        LogParser(extra_metrics=[("x", r"x=(\d+)")])


@pytest.mark.parametrize(
    ("path", "rank"),
    [
        ("rank0.log", 0),
        ("logs/rank_3.txt", 3),
        ("/runs/a/train-rank12.log", 12),
        ("worker_2.log", 2),
        ("node1_rank3.log", 3),
        ("logs/rank5/out.txt", 5),
        ("train.log", None),
        ("frank1.log", None),
        ("epoch3.log", None),
    ],
)
def test_rank_from_path(path: str, rank: int | None) -> None:
    assert rank_from_path(path) == rank


def test_record_maker_builds_what_the_constructor_builds() -> None:
    fields = (7, 1, 20, 100, 0.5, 3, 4, 50, {"loss": 1.0}, 12.5)
    assert _make_record(*fields) == LogRecord(*fields)
    assert type(_make_record(*fields)) is LogRecord


def test_state_stays_bounded() -> None:
    parser = LogParser()
    for rank in range(5000):
        parser.feed(f"[rank{rank}]:hello")
    assert len(parser.ranks) == 4096
    records, _ = parser.feed("[rank1]:{'loss': 1.0, 'epoch': 1.0}")
    assert records[0].rank == 1


# --- robustness --------------------------------------------------------------------------------------------

_TOKENS = st.sampled_from(
    [
        "\r",
        "\x1b[31m",
        "\x1b]0;t\x07",
        "\x08",
        "[rank3]:",
        "[host:1]",
        "[1745] ",
        "> ",
        "2024-01-01 10:00:00 ",
        "[2024-02-30 25:61:00]",
        "I0204 16:43:58.892892 758648 f.py:7] ",
        "{'loss': ",
        "nan",
        "}",
        "][",
        " 45%|####5     | 450/1000 [01:02<01:10, 7.2it/s, loss=0.3]",
        "Epoch 3/10",
        "Epoch 1: ",
        " 12/34 [====>....] - 1s 5ms/step - loss: 0.2",
        "iter: 9,999,",
        "      Epoch    GPU_mem   box_loss",
        "  3/9  1.2G  0.5  640: ",
        "all 1 2 3",
        "step:",
        "Traceback (most recent call last):",
        "é漢🙂",
        " ",
        "9" * 40,
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30), _TOKENS), max_size=25))
def test_feed_never_raises(parts: list[str]) -> None:
    parser = LogParser(default_rank=0)
    text = "".join(parts)
    for line in (text, *text.split("\n")):
        parser.feed(line)
    parser.finish()
    assert parser.format is None or isinstance(parser.format, str)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_feed_never_raises_on_any_text(text: str) -> None:
    parser = LogParser()
    parser.feed(text)
    parser.finish()


def test_very_long_lines() -> None:
    parser = LogParser()
    parser.feed("x" * 1_000_000)
    parser.feed("\r".join(bar(n % 200) for n in range(20_000)))
    parser.feed("{'loss': " + "1" * 100_000 + ", 'epoch': 1}")
    parser.feed("\x1b[" + "9" * 100_000 + "m step: 3")
    records, _ = parser.feed(bar(5))
    assert records[0].step == 5
