"""The event detector's cheap tests against the plain ones they stand for.

The detector finds a kind of event with substring tests where a regular expression of alternative phrases
would do, looks for a NaN report once per line, and tries each expression only where a substring shows it
can match. The plain reading below (each expression searched on every line that mentions its subject, the
NaN report searched again) is what it replaced: on every line of the fixtures, and on random text made of
the phrases' pieces, both must find the same kinds at the same places.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.model import EventKind
from trainmon_tui.parsers.trainlog.events import (
    _CHILD_FAILED,
    _EXIT_CODE,
    _KILLED,
    _NAN_FOLLOWER,
    _NAN_LEADERS,
    _NCCL_BENIGN_PHRASES,
    _NCCL_ERROR_PHRASES,
    _NCCL_TIMEOUT_PHRASES,
    _NOT_SEARCHED,
    _OOM_KILLER_PHRASES,
    _OOM_PHRASES,
    _RANK_IN_TEXT,
    _REVERSED_CONTEXT,
    _SMI_PHRASES,
    _XID,
    EventDetector,
    _leftmost,
    _nan_report_at,
    _standalone_at,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

_Found = list[tuple[EventKind, int, int | None]]


def _alternation(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(phrase) for phrase in phrases))


_NCCL_TIMEOUT = _alternation(_NCCL_TIMEOUT_PHRASES)
_NCCL_ERROR = _alternation(_NCCL_ERROR_PHRASES)
_NCCL_BENIGN = _alternation(_NCCL_BENIGN_PHRASES)


def _plain_find_any(text: str, phrases: tuple[str, ...]) -> int:
    for phrase in phrases:
        at = text.find(phrase)
        if at >= 0:
            return at
    return -1


def _plain_is_nan_report(text: str, at: int, end: int) -> bool:
    follower = _NAN_FOLLOWER.match(text, end)
    if follower is not None:
        count = follower["count"]
        return count is None or int(count) > 0
    before = _REVERSED_CONTEXT.match(text[max(0, at - 64) : at][::-1])
    if before is None:
        return False
    word = before[1][::-1].lower()
    if word in _NAN_LEADERS:
        return True
    return "loss" in word and "scale" not in word


def _plain_nan_report_at(text: str) -> int:
    for spelling in ("nan", "NaN"):
        at = _standalone_at(text, spelling, 0)
        while at >= 0:
            if _plain_is_nan_report(text, at, at + 3):
                return at
            at = _standalone_at(text, spelling, at + 3)
    return -1


def _plain_classify(text: str, rank: int | None) -> _Found:
    found: _Found = []
    killed_at = -1
    if "emory" in text or "OOM" in text or "ALLOC_FAILED" in text or "EXHAUSTED" in text or "kill" in text:
        lowered = text.lower()
        killer_at = _plain_find_any(lowered, _OOM_KILLER_PHRASES)
        if killer_at >= 0:
            killed_at = killer_at
        else:
            oom_at = _plain_find_any(lowered, _OOM_PHRASES)
            if oom_at >= 0:
                found.append((EventKind.OOM, oom_at, rank))
    if killed_at < 0 and ("kill" in text or "Kill" in text or "KILL" in text):
        killed = _KILLED.search(text)
        if killed is not None:
            killed_at = killed.start()
    if "NCCL" in text or "atchdog" in text:
        about = rank
        if about is None:
            named = _RANK_IN_TEXT.search(text)
            if named is not None:
                about = int(named[1])
        timeout = _NCCL_TIMEOUT.search(text)
        if timeout is not None:
            found.append((EventKind.NCCL_TIMEOUT, timeout.start(), about))
        else:
            error = _NCCL_ERROR.search(text)
            if error is not None and _NCCL_BENIGN.search(text) is None:
                found.append((EventKind.NCCL_ERROR, error.start(), about))
    if "xit" in text or "ChildFailed" in text or "terminated with" in text or "return code" in text:
        child = _CHILD_FAILED.search(text)
        if child is not None:
            found.append((EventKind.CHILD_FAILED, child.start(), rank))
        if killed_at < 0:
            exit_code = _EXIT_CODE.search(text)
            if exit_code is not None and (exit_code[1] or exit_code[2]) == "-9":
                killed_at = exit_code.start()
    if killed_at >= 0:
        found.append((EventKind.KILLED, killed_at, rank))
    if "nan" in text or "NaN" in text:
        nan_at = _plain_nan_report_at(text)
        if nan_at >= 0:
            found.append((EventKind.NAN, nan_at, rank))
    if "NVRM" in text or "Xid" in text or "fallen off" in text:
        xid = _XID.search(text)
        if xid is not None:
            found.append((EventKind.XID, xid.start(), rank))
    if "NVIDIA-SMI" in text or "NVML" in text or "evice" in text or "valid field" in text:
        smi_at = _plain_find_any(text, _SMI_PHRASES)
        if smi_at >= 0:
            found.append((EventKind.SMI_FAILED, smi_at, rank))
    return found


def _assert_read_alike(text: str, rank: int | None) -> None:
    detector = EventDetector()
    expected = _plain_classify(text, rank)
    nan_at = _nan_report_at(text)
    assert nan_at == _plain_nan_report_at(text), text
    # As feed calls it: the NaN report not searched yet, or already found by the gate.
    assert detector._classify(text, rank, _NOT_SEARCHED) == expected, text
    assert detector._classify(text, rank, nan_at) == expected, text
    for phrases, plain in (
        (_NCCL_TIMEOUT_PHRASES, _NCCL_TIMEOUT),
        (_NCCL_ERROR_PHRASES, _NCCL_ERROR),
    ):
        match = plain.search(text)
        assert _leftmost(text, phrases) == (-1 if match is None else match.start()), text


def test_every_fixture_line_is_classified_as_the_plain_reading_does() -> None:
    seen = 0
    for path in sorted(FIXTURES.rglob("*.txt")):
        for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
            for piece in line.split("\r"):
                text = piece.strip()
                _assert_read_alike(text, None)
                _assert_read_alike(text, 3)
                seen += 1
    assert seen > 1000


_PIECES = st.sampled_from(
    [
        *_NCCL_TIMEOUT_PHRASES,
        *_NCCL_ERROR_PHRASES,
        *_NCCL_BENIGN_PHRASES,
        *_OOM_KILLER_PHRASES,
        *_OOM_PHRASES,
        *_SMI_PHRASES,
        "Out Of Memory",
        "OutOfMemoryError",
        "OOM",
        "Killed",
        "killed by signal 9",
        "Killed process 12",
        "SIGKILL",
        "failed (exitcode: -9)",
        "exit code -9",
        "return code = -9",
        "exit status 1",
        "ChildFailedError",
        "terminated with signal",
        "[Rank 3]",
        "Rank 12]",
        "NVRM: Xid 79",
        "fallen off the bus",
        "loss nan",
        "loss: nan",
        "'loss': NaN",
        "nan iterations: 0",
        "nan iterations: 2",
        " nan",
        "nan ",
        "/inf",
        "tensor(",
        "grad_norm: nan",
        "Loss is ",
        "-",
        ": ",
        " ",
        "\t",
        "7",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES | st.text(max_size=5), max_size=10), st.none() | st.integers(0, 7))
def test_any_text_is_classified_as_the_plain_reading_does(parts: list[str], rank: int | None) -> None:
    _assert_read_alike("".join(parts), rank)


def test_nan_reports_at_the_edges_of_the_window_read_alike() -> None:
    # A nan that starts the line has no word before it; the word before a later one is read from the 64
    # characters before it, the rest cut off.
    for text in (
        "nan, final loss",
        "NaN found in loss",
        "loss" + "a" * 60 + " nan",
        "loss" + "a" * 59 + " nan",
        "zloss" + "a" * 60 + " nan",
        "x" * 70 + " loss: nan",
        "x" * 70 + "-nan",
    ):
        _assert_read_alike(text, None)
    assert _nan_report_at("nan, final loss") == -1
    assert _nan_report_at("loss" + "a" * 60 + " nan") == -1
    assert _nan_report_at("loss" + "a" * 59 + " nan") == 64
    assert _nan_report_at("zloss" + "a" * 60 + " nan") == -1


def test_caret_lines_that_lost_their_indentation_stay_inside_the_traceback() -> None:
    # Carets under a source line (Python 3.11+), the indentation removed with a prefix: not stray output,
    # however many there are.
    lines = [
        'File "train.py", line 9, in <module>',
        "main()",
        "~~~~^^",
        "~~~~~~~~~~~",
        "~^^^^^^^^^^^",
        "~~~~~~~~~~~^^^^^",
        "^^^^^^",
        "ValueError: boom",
    ]
    detector = EventDetector()
    events = [event for number, text in enumerate(lines, 1) for event in detector.feed(text, number, None)]
    assert [(event.line, event.kind, event.text) for event in events] == [
        (8, EventKind.TRACEBACK, "ValueError: boom")
    ]
    assert detector.finish() == []
