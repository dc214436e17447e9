"""could_report and GATE_PHRASES, the engine's licence to skip the event detector: a line they rule out (while
no traceback is open) gives no event and changes nothing, and the answer never depends on a digit's value."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.parsers.trainlog.events import GATE_PHRASES, EventDetector, could_report

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Pieces of the phrases and of what the detector's expressions look for, so random text comes near them.
_PIECES = [
    *GATE_PHRASES,
    *(phrase[:-1] for phrase in GATE_PHRASES),
    *(phrase[1:] for phrase in GATE_PHRASES),
    "loss",
    " is ",
    ": ",
    "Error",
    "exitcode: -9",
    "SIGKILL",
    "signal",
    "Rank 3]",
    "CUDA",
    "memory",
    "Killed process 12",
    "timeout",
    "watchdog",
    "inf",
    "\t",
    "step_avg:nanms",
    "loss nan",
    "'loss': nan",
    "number of nan iterations: ",
    "'grad_norm': nan",
    "train/loss=",
    "nan detected",
    "0",
    "7",
]
_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")


def _without_phrases(text: str) -> bool:
    return not any(phrase in text for phrase in GATE_PHRASES)


def test_no_phrase_holds_a_digit() -> None:
    # The engine caches its decision per line shape, with every digit masked.
    assert not any(char.isdigit() for phrase in GATE_PHRASES for char in phrase)


def test_every_fixture_line_without_a_phrase_gives_nothing() -> None:
    detector = EventDetector()
    seen = 0
    for path in sorted(FIXTURES.rglob("*.txt")):
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").split("\n"), start=1
        ):
            for piece in line.split("\r"):
                if _without_phrases(piece):
                    seen += 1
                    assert detector.feed(piece, number, None) == [], piece
                    assert not detector.open_tracebacks
    assert seen > 1000
    assert detector.finish() == []


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=6)), max_size=12),
    st.none() | st.integers(0, 7),
)
def test_a_line_ruled_out_gives_nothing(parts: list[str], rank: int | None) -> None:
    text = "".join(parts)
    masked = text.translate(_DIGITS_TO_ZERO)
    assert could_report(text) == could_report(masked)
    if _without_phrases(text):
        assert not could_report(text)
    if could_report(text):
        return
    detector = EventDetector()
    assert detector.feed(text, 1, rank) == []
    assert not detector.open_tracebacks
    assert detector.finish() == []


def test_the_view_of_open_tracebacks_is_live() -> None:
    detector = EventDetector()
    view = detector.open_tracebacks
    assert not view
    detector.feed("Traceback (most recent call last):", 1, 0)
    assert 0 in view
    detector.feed('  File "train.py", line 3, in <module>', 2, 0)
    detector.feed("ValueError: boom", 3, 0)
    assert not view


def test_a_nan_that_reports_nothing_whatever_the_digits_is_ruled_out() -> None:
    # A NaN gradient norm of an fp16 run (HF Trainer's dict) is no event on any line of its shape.
    line = "{'loss': 0.0, 'grad_norm': nan, 'learning_rate': 9.773696745450087e-06, 'epoch': 0.53}"
    assert not could_report(line)
    assert EventDetector().feed(line, 1, None) == []
    # A NaN loss is reported, and whether a NaN count is depends on its digits: not ruled out.
    assert could_report("{'loss': nan, 'grad_norm': nan, 'epoch': 0.53}")
    assert could_report("number of skipped iterations:   0 | number of nan iterations:   0 |")
    assert EventDetector().feed("number of nan iterations:   0 |", 1, None) == []
    assert EventDetector().feed("number of nan iterations:   2 |", 1, None) != []
