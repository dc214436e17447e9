"""Recognise nvidia-smi failure messages and name each kind with a short, stable reason for a host badge.

nvidia-smi reports trouble as free text on stdout or stderr instead of its table or CSV (driver not loaded,
no devices visible in a container, a GPU fallen off the bus, a bad query field ...). The reason strings are
constants so the UI and tests can compare them; the text around a message (prompts, syslog) does not matter.
"""

from __future__ import annotations

import re

NOT_INSTALLED = "nvidia-smi not installed"
DRIVER_UNREACHABLE = "driver not loaded"
DRIVER_MISMATCH = "driver/library mismatch"
NVML_INIT_FAILED = "NVML init failed"
NO_DEVICES = "no GPUs visible"
GPU_LOST = "GPU lost"
NO_PERMISSION = "no permission"
INVALID_QUERY = "invalid query field"
INVALID_ARGUMENTS = "invalid arguments"
#: Every reason :func:`classify_smi_failure` can return.
REASONS: tuple[str, ...] = (
    NOT_INSTALLED,
    DRIVER_UNREACHABLE,
    DRIVER_MISMATCH,
    NVML_INIT_FAILED,
    NO_DEVICES,
    GPU_LOST,
    NO_PERMISSION,
    INVALID_QUERY,
    INVALID_ARGUMENTS,
)

# Most specific first: "Failed to initialize NVML: Driver/library version mismatch" must not be reported as
# a plain NVML failure. Patterns are searched case-insensitively anywhere in the text.
_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (
            r"nvidia-smi: (?:command )?not found|command not found: nvidia-smi|nvidia-smi: No such file",
            NOT_INSTALLED,
        ),
        # Pasted copies of this message carry typographic quotes ("couldn't"), so the quote is not matched.
        (r"NVIDIA-SMI has failed|couldn.t communicate with the NVIDIA driver", DRIVER_UNREACHABLE),
        (r"Driver/library version mismatch", DRIVER_MISMATCH),
        (r"Failed to initialize NVML", NVML_INIT_FAILED),
        (r"No devices were found", NO_DEVICES),
        (r"Unable to determine the device handle|GPU is lost|fallen off the bus", GPU_LOST),
        # "[Insufficient Permissions]" in a CSV cell hides only that field; the rest of the output is fine.
        (r"(?<!\[)Insufficient Permissions", NO_PERMISSION),
        (r"is not a valid field to query", INVALID_QUERY),
        (
            r"Invalid combination of input arguments|is not a valid option|Invalid value for",
            INVALID_ARGUMENTS,
        ),
    )
)


def classify_smi_failure(text: str) -> str | None:
    """The reason nvidia-smi failed, from its output; None when the text is not a failure message."""
    for pattern, reason in _FAILURES:
        if pattern.search(text):
            return reason
    return None
