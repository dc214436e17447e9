"""Tests for classifying nvidia-smi failure output into a host-badge reason, on real failure captures."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.parsers import smi_status
from trainmon_tui.parsers.smi_status import classify_smi_failure

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("smi_failed_couldnt_communicate_single_line.txt", smi_status.DRIVER_UNREACHABLE),
        ("smi_failed_couldnt_communicate_two_lines_curly_quote.txt", smi_status.DRIVER_UNREACHABLE),
        ("smi_no_devices_were_found_in_container.txt", smi_status.NO_DEVICES),
        ("smi_no_devices_were_found_with_nvrm_syslog.txt", smi_status.NO_DEVICES),
        ("smi_query_invalid_field.txt", smi_status.INVALID_QUERY),
        ("smi_unable_to_determine_device_handle.txt", smi_status.GPU_LOST),
    ],
)
def test_real_failures(name: str, reason: str) -> None:
    text = (FIXTURES / "smi_errors" / name).read_text(encoding="utf-8")
    assert classify_smi_failure(text) == reason


def test_every_failure_fixture_is_classified() -> None:
    for path in sorted((FIXTURES / "smi_errors").glob("*.txt")):
        assert classify_smi_failure(path.read_text(encoding="utf-8")) is not None, path.name


@pytest.mark.parametrize(
    "directory", ["dmon", "query_gpu", "pmon"], ids=lambda directory: f"{directory}-output-is-not-a-failure"
)
def test_normal_output_is_not_a_failure(directory: str) -> None:
    for path in sorted((FIXTURES / directory).glob("*.txt")):
        assert classify_smi_failure(path.read_text(encoding="utf-8")) is None, path.name


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Failed to initialize NVML: Driver/library version mismatch\n", smi_status.DRIVER_MISMATCH),
        ("Failed to initialize NVML: Unknown Error\n", smi_status.NVML_INIT_FAILED),
        ("bash: nvidia-smi: command not found\n", smi_status.NOT_INSTALLED),
        ("sh: 1: nvidia-smi: not found\n", smi_status.NOT_INSTALLED),
        ("Unable to determine the device handle for GPU 0000:01:00.0: GPU is lost.", smi_status.GPU_LOST),
    ],
)
def test_other_known_messages(text: str, reason: str) -> None:
    assert classify_smi_failure(text) == reason


def test_bracketed_permission_cell_is_not_a_failure() -> None:
    assert classify_smi_failure("0, [Insufficient Permissions], 45\n") is None


def test_reasons_are_short_and_distinct() -> None:
    reasons = smi_status.REASONS
    assert len(reasons) == len(set(reasons)) == 9
    assert all(len(reason) <= 24 for reason in reasons)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_never_raises(text: str) -> None:
    assert classify_smi_failure(text) in {None, *smi_status.REASONS}
