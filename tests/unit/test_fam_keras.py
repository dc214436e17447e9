"""Keras fit() progress (Keras 1, 2, 3), on the real logs in tests/fixtures/logs/keras/."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_keras import FAMILIES, KerasFamily

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def physical_lines(relative: str) -> list[str]:
    """The fixture's lines as a log reader sees them: split on newline only, \\r kept."""
    with (LOGS / relative).open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = handle.read().split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def parse_fixture(relative: str) -> tuple[list[LogRecord], list[LogEvent], str | None]:
    return parse_lines(physical_lines(relative))


def test_families_export() -> None:
    assert list(FAMILIES) == [KerasFamily]
    assert KerasFamily.name == "keras"


def test_header_then_bar_carries_the_epoch() -> None:
    lines = physical_lines("keras/keras2_epoch_bar_ms_step_val_metrics.txt")
    family = KerasFamily()
    header = family.parse(lines[4])
    assert header is not None
    assert (header.epoch, header.total_epochs, header.metrics) == (3.0, 10, {})
    bar = family.parse(lines[5])
    assert bar is not None
    assert (bar.epoch, bar.total_epochs, bar.batch, bar.batches_per_epoch) == (3.0, 10, 6072, 6072)
    assert bar.metrics == {
        "loss": 0.5045,
        "top_k_categorical_accuracy": 1.0,
        "val_loss": 0.4333,
        "val_top_k_categorical_accuracy": 1.0,
    }


def test_keras1_seconds_only_and_acc_names() -> None:
    records, _, detected = parse_fixture("keras/keras1_epoch_bar_seconds_only.txt")
    assert detected == "keras"
    last = records[-1]
    assert (last.line, last.epoch, last.total_epochs, last.batch, last.batches_per_epoch) == (
        20,
        48.0,
        200,
        1562,
        1562,
    )
    assert last.metrics == {"loss": 0.761, "acc": 0.7427, "val_loss": 0.645, "val_acc": 0.7818}


def test_interrupted_epoch_with_eta() -> None:
    records, _, _ = parse_fixture("keras/keras2_mnist_val_split_interrupted_eta_line.txt")
    last = records[-1]
    assert (last.line, last.epoch, last.total_epochs, last.batch, last.batches_per_epoch) == (
        24,
        12.0,
        15,
        237,
        422,
    )
    assert last.metrics == {"loss": 0.0398, "accuracy": 0.9877}


def test_microseconds_per_step() -> None:
    records, _, _ = parse_fixture("keras/keras_tf2_us_per_step.txt")
    last = records[-1]
    assert (last.epoch, last.total_epochs, last.batch, last.batches_per_epoch) == (10.0, 10, 32, 32)
    assert last.metrics == {"loss": 25.097, "mse": 25.097}


def test_keras3_unknown_total_steps() -> None:
    records, _, detected = parse_fixture("keras/keras3_unknown_total_steps_blank_lines.txt")
    assert detected == "keras"
    assert len(records) == 20
    assert [r.line for r in records[:3]] == [1, 4, 7]
    last = records[-1]
    assert (last.line, last.batch, last.batches_per_epoch, last.epoch) == (58, 20, None, None)
    assert last.metrics == {"loss": 7.0262, "mean_absolute_error": 2.2716}
    # A value whose last digit vanished leaves a trailing space: still read.
    assert records[5].metrics["mean_absolute_error"] == 2.8301


def test_keras3_known_total_with_line_glyphs() -> None:
    hit = KerasFamily().parse("195/195 ━━━━━━━━━━━━━━━━ 3s 12ms/step - accuracy: 0.9052 - loss: 0.3312")
    assert hit is not None
    assert (hit.batch, hit.batches_per_epoch, hit.metrics) == (195, 195, {"accuracy": 0.9052, "loss": 0.3312})


def test_first_update_of_an_epoch() -> None:
    hit = KerasFamily().parse("  1/422 [..............................] - ETA: 1:23 - loss: 2.3016")
    assert hit is not None
    assert (hit.batch, hit.batches_per_epoch, hit.metrics) == (1, 422, {"loss": 2.3016})


def test_a_count_alone_is_not_a_keras_bar() -> None:
    assert KerasFamily().parse("  5/249    0.868G   0.06393   0.01588  0.009617   0.08943        36") is None
    assert KerasFamily().parse("0/40, SamplesPerSec=83.48609168106144") is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    family = KerasFamily()
    family.parse("Epoch " + text)
    family.parse("12/34 [====>....] - 1s 5ms/step - " + text)
    family.parse(text)


def test_shape_reader_reads_values_float_refuses_as_parse() -> None:
    # The reader of a shape with fixed keys reads only the values; a value float() refuses ("12%", "n/a")
    # sends the line to the whole reading.
    reading, parsing = KerasFamily(), KerasFamily()
    for family in (reading, parsing):
        family.parse("Epoch 2/5")
    shape = "10/10 [==============================] - 1s 9ms/step - loss: {} - acc: {} - train_loss: {}"
    for values in [("0.51", "0.25", "0.49"), ("n/a", "0.25", "0.49"), ("0.51", "25%", "0.49")]:
        line = shape.format(*values)
        assert repr(reading.for_shape(line)(line)) == repr(parsing.parse(line)), line
    hit = reading.for_shape(shape.format("n/a", "0.25", "0.49"))(shape.format("n/a", "0.25", "0.49"))
    assert hit is not None and hit.metrics == {"acc": 0.25, "loss": 0.49} and hit.epoch == 2.0
