"""PyTorch Lightning bars and checkpoint messages, on the real logs in tests/fixtures/logs/lightning/ (and the
NeMo bar fused with an NCCL timeout in tests/fixtures/logs/errors/)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_lightning import FAMILIES, LightningFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def physical_lines(relative: str) -> list[str]:
    """The fixture's lines as a log reader sees them: split on newline only, \\r kept."""
    with (LOGS / relative).open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = handle.read().split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def parse_fixture(relative: str) -> tuple[list[LogRecord], list[LogEvent], str | None]:
    return parse_lines(physical_lines(relative))


def test_families_export() -> None:
    assert list(FAMILIES) == [LightningFamily]
    assert LightningFamily.name == "lightning"


def test_last_epoch_bar_with_slash_keys() -> None:
    line = physical_lines("lightning/lightning2_bar_slash_metric_keys.txt")[0]
    hit = LightningFamily().parse(line)
    assert hit is not None
    # "Epoch 9" is Lightning's 0-based index: the tenth epoch.
    assert (hit.epoch, hit.batch, hit.batches_per_epoch) == (10.0, 195, 195)
    assert hit.metrics == {"loss": 3.86, "train_entropy": 0.591, "train_loss_epoch": 3.95}
    assert hit.step is None and hit.total_epochs is None


def test_notebook_bar_without_glyphs_keeps_both_losses() -> None:
    records, _, detected = parse_fixture("lightning/lightning_colab_bar_no_blocks_train_loss.txt")
    assert detected == "lightning"
    assert len(records) == 14
    last = records[-1]
    assert (last.line, last.epoch, last.batch, last.batches_per_epoch) == (14, 1.0, 1664, 1702)
    assert last.metrics == {"loss": 0.158, "train_loss": 0.149}


def test_bar_overwritten_by_checkpoint_message() -> None:
    records, _, detected = parse_fixture("lightning/lightning_bar_overwritten_by_checkpoint_msg.txt")
    assert detected == "lightning"
    bar, checkpoint = records
    # Lightning 0.8 numbered this bar from 1, which nothing before the checkpoint message shows: one high.
    assert (bar.epoch, bar.batch, bar.batches_per_epoch, bar.metrics) == (2.0, 996, 997, {"loss": 0.655})
    # The checkpoint counts epochs from 0 where this bar counted from 1: only its metric is taken.
    assert checkpoint.line == 2
    assert checkpoint.metrics == {"val_loss": 0.67374}
    assert checkpoint.epoch is None and checkpoint.batch is None


def test_pre_1_0_checkpoint_message_makes_later_bars_read_as_printed() -> None:
    bar_line, checkpoint_line = physical_lines("lightning/lightning_bar_overwritten_by_checkpoint_msg.txt")
    records, _, _ = parse_lines([bar_line, checkpoint_line, bar_line])
    assert [(r.line, r.epoch, r.batch) for r in records] == [(1, 2.0, 996), (2, None, None), (3, 1.0, 996)]


def test_checkpoint_message_of_lightning_1_x_keeps_the_shift() -> None:
    family = LightningFamily()
    family.parse(
        "Epoch 3, global step 400: 'val_loss' reached 0.31000 (best 0.31000), saving model to /c.ckpt"
    )
    hit = family.parse("Epoch 4:  10%|█         | 10/100 [00:01<00:09,  9.1it/s, loss=1.5]")
    assert hit is not None and hit.epoch == 5.0


def test_checkpoint_message_with_global_step() -> None:
    text = "Epoch 3, global step 400: 'val_loss' reached 0.31000 (best 0.31000), saving model to /ckpt/a.ckpt"
    hit = LightningFamily().parse(text)
    assert hit is not None
    assert (hit.step, hit.metrics) == (400, {"val_loss": 0.31})


def test_rich_progress_bar() -> None:
    line = physical_lines("lightning/lightning_rich_progressbar_line_from_issue_title.txt")[0]
    hit = LightningFamily().parse(line)
    assert hit is not None
    # "Epoch 0/0": the first (and last) epoch of one.
    assert (hit.epoch, hit.total_epochs, hit.batch, hit.batches_per_epoch) == (1.0, 1, 2, 2)
    assert hit.metrics == {"pixel_auroc": 0.0, "pixel_f1_score": 0.0}


def test_truncated_bar_line_and_init_bars() -> None:
    records, _, _ = parse_fixture("lightning/lightning_tqdm_file_lines_v_num_loss_truncated_line.txt")
    by_line = {r.line: r for r in records}
    # Line 5 was cut mid-bracket: the counts before the cut are still read.
    assert (by_line[5].epoch, by_line[5].batch, by_line[5].batches_per_epoch) == (1.0, 6, 18)
    assert by_line[5].metrics == {}
    assert 6 not in by_line  # "Training: 0it [00:00, ?it/s]": no total, nothing to report
    assert (by_line[18].batch, by_line[18].metrics) == (5, {"loss": 9.847})


def test_startup_summary_then_fit_stopped() -> None:
    records, _, detected = parse_fixture("lightning/lightning_startup_summary_bar_fit_stopped_max_epochs.txt")
    assert detected == "lightning"
    bar = next(r for r in records if r.line == 18)
    assert (bar.epoch, bar.batch, bar.batches_per_epoch, bar.metrics) == (1.0, 100, 100, {"loss": 0.0663})
    # "`Trainer.fit` stopped: `max_epochs=1` reached." tells the total.
    assert [(r.line, r.total_epochs) for r in records if r.line == 20] == [(20, 1)]


def test_nemo_bar_fused_with_nccl_timeout() -> None:
    records, events, detected = parse_fixture(
        "errors/nccl_watchdog_timeout_fused_with_nemo_lightning_bar.txt"
    )
    assert detected == "lightning"
    (bar,) = records
    assert (bar.line, bar.epoch, bar.batch, bar.batches_per_epoch, bar.step) == (2, 1.0, 32040, 500150, 32000)
    assert bar.metrics == {"loss": 2.6, "reduced_train_loss": 2.59, "consumed_samples": 25600000.0}
    assert 2 in {event.line for event in events}


def test_validation_bar_is_not_an_epoch_bar() -> None:
    assert (
        LightningFamily().parse("Validation DataLoader 0:  50%|█████  | 5/10 [00:01<00:01,  4.2it/s]") is None
    )


def test_glued_redraws_take_the_last_state() -> None:
    text = (
        "Epoch 2:  10%|█         | 10/100 [00:01<00:09,  9.1it/s, loss=1.5]"
        "Epoch 2:  11%|█         | 11/100 [00:01<00:09,  9.1it/s, loss=1.4]"
    )
    hit = LightningFamily().parse(text)
    assert hit is not None
    assert (hit.batch, hit.metrics) == (11, {"loss": 1.4})


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    family = LightningFamily()
    family.parse("Epoch " + text)
    family.parse("Epoch 1: 5%|█| 1/20 [00:01<00:19, 1.0it/s, " + text + "]")
    family.parse("Epoch 0/3 " + text + " 2/2 0:00:15 • 0:00:00 6.37it/s " + text)


def test_shape_reader_reads_values_float_refuses_as_parse() -> None:
    # The reader of a shape with fixed keys reads only the values; a value float() refuses ("n/a", "12%")
    # sends the line to the whole reading, where a skipped "loss" leaves its name to "train_loss".
    bar = "Epoch 1:  50%|█████     | 5/10 [00:05<00:05,  1.00it/s, loss={}, v_num=0, train_loss={}, step={}]"
    reading, parsing = LightningFamily(), LightningFamily()
    for values in [("0.5", "0.4", "7"), ("n/a", "0.4", "7"), ("0.5", "12%", "3.2e+4"), ("0.5", "0.4", "nan")]:
        line = bar.format(*values)
        assert repr(reading.for_shape(line)(line)) == repr(parsing.parse(line)), line
    line = bar.format("n/a", "0.4", "7")
    hit = reading.for_shape(line)(line)
    assert hit is not None and hit.metrics == {"loss": 0.4} and hit.step == 7
