"""Generic ``key: value`` lines and the user's metric patterns, on the real logs in tests/fixtures/logs/
(BasicSR, Ignite, a custom print in errors/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import EventKind, LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.engine import parse_lines
from trainmon_tui.parsers.trainlog.fam_generic import FAMILIES, GenericFamily, MetricPatterns

LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "logs"


def physical_lines(relative: str) -> list[str]:
    """The fixture's lines as a log reader sees them: split on newline only, \\r kept."""
    with (LOGS / relative).open(encoding="utf-8", errors="replace", newline="\n") as handle:
        lines = handle.read().split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def parse_fixture(relative: str) -> tuple[list[LogRecord], list[LogEvent], str | None]:
    return parse_lines(physical_lines(relative))


def test_families_export() -> None:
    assert list(FAMILIES) == [GenericFamily]
    assert GenericFamily.name == "generic"


def test_basicsr_epoch_iter_lr_tuple_and_slash_keys() -> None:
    records, _, detected = parse_fixture("basicsr/basicsr_iqa_epoch_iter_eta_with_raw_cr_validation_bar.txt")
    assert detected == "generic"
    by_line = {r.line: r for r in records}
    first = by_line[2]
    assert (first.epoch, first.step) == (1.0, 100)
    assert first.metrics == {
        "lr": 2.999e-05,
        "l_mos": 2.6487e-03,
        "l_metric": 1.4853e-01,
        "train_metrics_srcc": 8.0588e-01,
        "train_metrics_plcc": 9.2887e-01,
    }
    # "2025-02-04 16:48:00,314 INFO: ..." -> UTC seconds.
    assert first.timestamp == 1738687680.314
    assert (by_line[10].epoch, by_line[10].step) == (14.0, 800)
    # The 108 KB validation bar (image/s) gives nothing; the validation block below it gives its metrics.
    assert 12 not in by_line
    assert by_line[14].metrics == {"srcc": 0.9193}
    assert by_line[15].metrics == {"plcc": 0.9371}


def test_thousands_separator_in_iteration() -> None:
    hit = GenericFamily().parse(
        "[basel..][epoch: 28, iter:   1,000, lr:(2.750e-05,)] [eta: 2:11:41] l_mos: 1.2e-03"
    )
    assert hit is not None
    assert (hit.epoch, hit.step, hit.metrics) == (28.0, 1000, {"lr": 2.75e-05, "l_mos": 1.2e-03})


def test_ignite_engine_lines_and_metric_block() -> None:
    records, _, detected = parse_fixture("ignite/ignite_engine_epoch_complete_eval_metrics.txt")
    assert detected == "generic"
    by_line = {r.line: r for r in records}
    assert by_line[1].total_epochs == 1  # "Engine run starting with max_epochs=1."
    assert by_line[3].epoch == 1.0  # "Epoch[1] Complete. Time taken: 00:00:07.221"
    assert by_line[6].epoch == 14.0  # the block's header
    assert by_line[7].metrics == {"abs_rel": 0.08523062198386379}
    assert by_line[9].metrics == {"rmse": 3.817461628217154}
    assert by_line[13].metrics == {"a3": 0.966446578502655}
    assert all(by_line[n].epoch == 14.0 for n in range(7, 14))


def test_custom_print_with_space_separated_pairs() -> None:
    records, events, detected = parse_fixture("errors/slurm_oom_kill_killed_after_epoch_lines.txt")
    assert detected == "generic"
    assert [r.line for r in records] == [7, 8, 9, 10]
    last = records[-1]
    assert (last.epoch, last.batch, last.batches_per_epoch) == (0.0, 511, 1736)
    assert last.metrics == {"loss": 0.5117, "mae": 0.6075, "rmse": 0.7153}
    assert EventKind.KILLED in {event.kind for event in events}  # the events still pass through the engine


def test_sentences_with_numbers_are_not_records() -> None:
    family = GenericFamily()
    assert family.parse("num decayed parameter tensors: 26, with 10,690,944 parameters") is None
    assert family.parse("[rank0]:[titan] ... - root - INFO - Dumping profiler traces at step 200") is None
    assert family.parse("Setting rerun_state_machine.current_iteration to 0...") is None
    assert family.parse("number of skipped iterations:   0 |") is None


def test_key_equals_value_line() -> None:
    hit = GenericFamily().parse("epoch=3 step=1200/5000 loss=0.25 lr=1e-4 acc=93.5%")
    assert hit is not None
    assert (hit.epoch, hit.step, hit.total_steps) == (3.0, 1200, 5000)
    assert hit.metrics == {"loss": 0.25, "lr": 1e-4, "acc": 93.5}


def test_metric_block_ends_at_a_line_that_is_not_a_pair() -> None:
    family = GenericFamily()
    assert family.parse("Validation results:") is not None
    block = family.parse("    psnr: 27.5")
    assert block is not None and block.metrics == {"psnr": 27.5}
    assert family.parse("Saving checkpoint") is None
    assert family.parse("    psnr: 28.0") is None


def test_user_metric_patterns() -> None:
    patterns = MetricPatterns(
        [("tokens/s", r"throughput (?P<value>[\d.]+) tok/s"), ("loss", r"L=(?P<value>\S+)")]
    )
    assert patterns.read("step 5 throughput 1234.5 tok/s L=nan") == {
        "tokens_s": 1234.5,
        "loss": pytest.approx(float("nan"), nan_ok=True),
    }
    assert patterns.read("nothing here") == {}
    assert not MetricPatterns([])


def test_user_metric_patterns_reject_bad_regexes() -> None:
    with pytest.raises(ValueError, match="value"):
        MetricPatterns([("x", r"x=(\d+)")])
    with pytest.raises(ValueError, match="invalid regex"):
        MetricPatterns([("x", r"x=(?P<value>\d+")])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text: str) -> None:
    family = GenericFamily()
    family.parse("epoch: " + text)
    family.parse("Validation metrics:")
    family.parse("  " + text)
    family.parse("iter " + text + " loss=" + text)
    family.parse("epoch: 1, iter: " + "1,000" * 1000 + ", loss: " + "9" * 5000)
    MetricPatterns([("m", r"(?P<value>\S+)")]).read(text)
