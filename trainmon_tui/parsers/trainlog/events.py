"""Find the failure reports in a training log (OOM, NCCL, NaN, tracebacks, kills, driver faults), once each.

:class:`EventDetector` reads cleaned log lines one at a time (the engine has already removed ANSI codes
and rank/host/glog/timestamp prefixes, and passes the rank separately). It returns :class:`LogEvent` values
for the lines that report something a person must see. Three concerns shape it:

* Speed. Almost every line of a log is ordinary, so ``feed`` first runs a handful of substring tests (the
  gate) and returns at once when none hits; only gated lines meet a regular expression. A caller can do
  better still: :func:`could_report` says, from no digit's value, whether the gate could pass, so the engine
  decides it once per line shape and skips ``feed`` for the rest (while no traceback is open).
* One failure, few events. A crash prints many lines (every rank repeats the NCCL timeout, a traceback is
  twenty lines, the launcher then reports the dead child). Events of a kind from one rank are suppressed for
  a while after the last line that reported the same thing, and a traceback gives one event, carrying its
  final exception line, unless that exception is itself a more specific event (an OOM, a NaN ...).
* What is not an event. fp16 loss-scale overflows ("OVERFLOW! Skipping step"), a NaN grad-norm in a metric
  dict, ``step_avg:nanms``, NCCL INFO lines, SIGTERMs sent to siblings by the launcher.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import astuple, dataclass

from trainmon_tui.model import EventKind, LogEvent
from trainmon_tui.sanitize import clean_remote_text

#: Longest event text kept; longer lines are cut around the part that made them an event.
MAX_TEXT = 300
#: A kind reported again by the same rank within this many lines of its last report is the same failure.
REPEAT_WINDOW_LINES = 200
# Lines of other output tolerated inside a traceback before it is taken as cut off.
_MAX_STRAY_LINES = 3
# Bound on per-rank state, whatever the log contains.
_MAX_TRACKED = 4096

# Each family of event is found in two steps: plain substring tests (cheap, and enough to rule most lines
# out), then, only where one hits, a regular expression or a closer look around the hit.
_OOM_KILLER_PHRASES = (
    "out of memory: kill",  # kernel: "Out of memory: Killed process 25315 (python3)" (lower-cased)
    "invoked oom-killer",
    "oom-kill event",  # slurm: "Detected 1 oom-kill event(s) in StepId=191.batch cgroup"
    "killed by the cgroup out-of-memory handler",
)
_OOM_PHRASES = (
    "out of memory",  # CUDA/HIP/XPU/MPS, "CUDA error: out of memory", XLA "RESOURCE_EXHAUSTED: Out of memory"
    "outofmemoryerror",
    "cublas_status_alloc_failed",
    "cuda_error_out_of_memory",
    "oom when allocating",  # TensorFlow ResourceExhaustedError
    "resource_exhausted",
    "not enough memory",  # PyTorch CPU allocator
)
_KILLED = re.compile(
    r"^\s*Killed\.?\s*$"  # the shell's report of a SIGKILLed foreground job
    r"|\d\s+Killed\s"  # bash job control: "line 28:  8156 Killed   python3 main.py"
    r"|[Kk]illed by signal|Killed process \d|SIGKILL"
)
_EXIT_CODE = re.compile(r"(?:exitcode|exit code|return code)\s*[:=]?\s*(-?\d+)|exit status (-?\d+)")
_CHILD_FAILED = re.compile(
    r"failed \(exitcode: -?\d+\)|ChildFailedError|terminated with (?:exit code|signal)"
    r"|exits with return code = -?\d+|returned non-zero exit status"
)
# A literal part of each alternative of _CHILD_FAILED.
_CHILD_FAILED_PARTS = (
    "failed (exitcode: ",
    "ChildFailedError",
    "terminated with ",
    "exits with return code = ",
    "returned non-zero exit status",
)
# Plain phrases, looked for with substring tests: a regular expression made of alternative phrases walks the
# whole line at tens of instructions a character, where a substring test that fails costs a few hundred.
_NCCL_TIMEOUT_PHRASES = (
    "collective operation timeout",
    "milliseconds before timing out",
    "Timeout at NCCL work",
    "watchdog got stuck",
)
# (NCCL's result names, ncclSystemError and the like, follow an "NCCL error" line that is reported already.)
_NCCL_ERROR_PHRASES = (
    "NCCL WARN",
    "NCCL error",
    "Some NCCL operations have failed",
    "NCCL communicator was aborted",
    "detected by watchdog",
    "NCCL watchdog thread terminated",
)
# NCCL WARN lines that only say an optional transport is missing.
_NCCL_BENIGN_PHRASES = ("libibverbs", "Could not find: libnccl-net", "NET/Plugin")
_RANK_IN_TEXT = re.compile(r"\bRank (\d{1,6})\]")
_XID = re.compile(
    r"\bXid\b|fallen off the bus|RmInitAdapter failed|rm_init_adapter failed"
    r"|No NVIDIA graphics adapter probed|NVIDIA probe routine (?:failed|was not called)"
)
_SMI_PHRASES = (
    "NVIDIA-SMI has failed",
    "No devices were found",
    "Unable to determine the device handle",
    "is not a valid field to query",
    "Failed to initialize NVML",
    "NVML library version mismatch",
)

# Words around a standalone "nan" that make it a report: "NaN or Inf found", "nan detected", "found NaN".
_NAN_FOLLOWER = re.compile(
    r"(?i: or inf|/inf| detected| encountered| found| value| loss| gradient)| iterations:\s*(?P<count>\d+)"
)
# What every alternative of _NAN_FOLLOWER starts with: after any other character it cannot match.
_NAN_FOLLOWER_STARTS = frozenset(" /")
_NAN_LEADERS = frozenset({"found", "detected", "encountered", "got"})
_NAN_SPELLINGS = ("nan", "NaN")
# Reversed, what stands before a nan value: spaces and signs, "tensor(", separators and quotes, a verb, then
# the word it is the value of ("train/loss", "frame_0.loss_cls", "Loss", "found").
_REVERSED_CONTEXT = re.compile(r"[ +-]*(?:\(rosnet)?[ '\":=]*(?:(?:si|saw|emaceb)\s+)?([\w./-]+)")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

#: Substrings of which every line that :meth:`EventDetector.feed` examines outside a traceback holds at least
#: one (the union of the gate's phrases). A caller that sees none of them in a line, while no traceback is
#: open, may skip ``feed`` for that line: it would return no event and change no state. None holds a digit,
#: so a line's digits can be masked (the engine caches per line shape) without changing the answer.
GATE_PHRASES: tuple[str, ...] = (
    "nan",
    "NaN",
    "kill",
    "illed",
    "Traceback",
    "Kill",
    "KILL",
    "NCCL",
    "ChildFailed",
    "ALLOC_FAILED",
    "OUT_OF_MEMORY",
    "xit",
    "xhaust",
    "Xid",
    "EXHAUSTED",
    "of memory",
    "enough memory",
    "OOM when",
    "NV",
    "devices were",
    "device handle",
    'File "',
    'Field "',
)

# The phrases other than a NaN's spellings: a line holding one of them is always examined.
_WORDY_PHRASES = tuple(phrase for phrase in GATE_PHRASES if phrase not in ("nan", "NaN"))


def could_report(text: str) -> bool:
    """False only for a line that :meth:`EventDetector.feed` is sure to pass by (while no traceback is open):
    none of :data:`GATE_PHRASES`, or only a "nan" inside a word ("step_avg:nanms", "nanoGPT") or one that
    reports nothing whatever the digits ("'grad_norm': nan", see :func:`_nan_report_at`).

    The answer depends on no digit's value (a digit counts as a letter of a word either way), so it may be
    cached per line shape with the digits masked.
    """
    for phrase in _WORDY_PHRASES:
        if phrase in text:
            return True
    return _standalone_nan_at(text) >= 0 and _nan_may_report(text)


def _nan_may_report(text: str) -> bool:
    """Whether a standalone nan in ``text`` may report a NaN on some line of its shape: one that
    :func:`_nan_report_at` takes as a report, or one whose count decides ("nan iterations: N"). Whether a nan
    is standalone, and the word before it, read the same whatever the digits; only that count does not."""
    for spelling in _NAN_SPELLINGS:
        at = _standalone_at(text, spelling, 0)
        while at >= 0:
            if _NAN_FOLLOWER.match(text, at + 3) is not None or _is_nan_report(text, at, at + 3):
                return True
            at = _standalone_at(text, spelling, at + 3)
    return False


_TRACEBACK_HEADER = "Traceback (most recent call last):"
_FRAME = re.compile(r'\s*File "[^"]*", line \d+')
# The last line of a traceback: "ValueError: ...", "KeyboardInterrupt", "torch.OutOfMemoryError: ...".
_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(?::(?:\s.*)?)?$")
# Right after a frame comes its source line, which may lose its indentation to prefix stripping; only a name
# that reads as an exception class is taken as the exception there.
_STRONG_EXCEPTION_LINE = re.compile(
    r"[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning|Failure|Fault|Abort|Timeout|StopIteration)"
    r"(?::(?:\s.*)?)?$"
)
# What the caret lines under a source line are made of (Python 3.11+ marks the failing expression).
_CARETS = "^~ "

# Events that share a group describe the same failure; within a group a more specific kind may still be
# reported after a generic one (a timeout after "NCCL error"), never the other way round.
_GROUP: dict[EventKind, tuple[str, int]] = {
    EventKind.NCCL_ERROR: ("nccl", 0),
    EventKind.NCCL_TIMEOUT: ("nccl", 1),
}
# Every kind's group and priority, a kind alone in its group named by its value (read once here: an enum
# member's ``value`` is a Python-level property, dear on a path run for every report).
_GROUP_OF: dict[EventKind, tuple[str, int]] = {kind: _GROUP.get(kind, (kind.value, 0)) for kind in EventKind}
# For _classify's ``nan_at``: the line has not been searched for a NaN report yet.
_NOT_SEARCHED = -2


@dataclass(slots=True)
class _OpenTraceback:
    """A traceback being read for one rank."""

    # Text before "Traceback" on the header line ("stderr: "), repeated on the lines that follow.
    prefix: str
    last_frame_line: int
    # Empty until a frame is seen: a "Traceback (most recent call last):" with no frame is not a traceback.
    last_frame_text: str
    after_frame: bool
    stray: int = 0


@dataclass(slots=True)
class _LastReport:
    line: int
    priority: int


class EventDetector:
    """Feed cleaned log lines one at a time; returns the events each line completes.

    One detector per log file: it keeps a little state (open tracebacks, recent reports per rank).
    """

    def __init__(self) -> None:
        self._tracebacks: dict[int | None, _OpenTraceback] = {}
        self._reported: dict[tuple[str, int | None], _LastReport] = {}

    @property
    def open_tracebacks(self) -> Mapping[int | None, object]:
        """The ranks with a traceback open, a live view. While it is not empty every line must be fed,
        whatever it holds; otherwise a line without any of :data:`GATE_PHRASES` may be skipped."""
        return self._tracebacks

    def resume_state(self, line: int) -> tuple[object, ...]:
        """What decides the events of the lines after ``line`` (the last one fed), as a value to compare: the
        open tracebacks and the reports recent enough to silence a repeat (see LogParser.resume_state)."""
        tracebacks = {rank: astuple(open_traceback) for rank, open_traceback in self._tracebacks.items()}
        recent = {
            key: (last.line, last.priority)
            for key, last in self._reported.items()
            if line - last.line <= REPEAT_WINDOW_LINES
        }
        return (tracebacks, recent)

    def feed(self, text: str, line: int, rank: int | None) -> list[LogEvent]:
        """Examine one cleaned line (1-based ``line``); return the events it produced (usually none)."""
        if self._tracebacks:
            open_traceback = self._tracebacks.get(rank)
            if open_traceback is not None:
                return self._continue_traceback(open_traceback, text, line, rank)
        # The gate, run on every line: a single-character test (memchr-fast) that most metric lines fail, and
        # only then the phrases that need that character. Every phrase _classify looks for on a line outside a
        # traceback is admitted here: "kill"/"illed"/"Traceback" (oom-kill, killed by signal), "Kill"/"KILL"
        # (Killed, SIGKILL), exitcode/exit status/ResourceExhausted, Xid, out of memory, TensorFlow's
        # "OOM when allocating", NVRM/NVML/NVIDIA-SMI, "No devices were found", a frame's 'File "'; and a
        # reporting NaN, looked for last as it costs most and only once: _classify is told what it found.
        # Keep GATE_PHRASES in step with this test: it lists every phrase admitted here.
        if (
            ("k" in text and ("kill" in text or "illed" in text or "Traceback" in text))
            or ("K" in text and ("Kill" in text or "KILL" in text))
            or (
                "C" in text
                and (
                    "NCCL" in text
                    or "ChildFailed" in text
                    or "ALLOC_FAILED" in text
                    or "OUT_OF_MEMORY" in text
                )
            )
            or ("x" in text and ("xit" in text or "xhaust" in text))
            or ("X" in text and ("Xid" in text or "EXHAUSTED" in text))
            or ("y" in text and ("of memory" in text or "enough memory" in text))
            or ("w" in text and "OOM when" in text)
            or ("V" in text and "NV" in text)
            or ("v" in text and ("devices were" in text or "device handle" in text))
            or ('"' in text and ('File "' in text or 'Field "' in text))
        ):
            return self._examine(text, line, rank, _NOT_SEARCHED)
        if "nan" in text or "NaN" in text:
            nan_at = _nan_report_at(text)
            if nan_at >= 0:
                return self._examine(text, line, rank, nan_at)
        return []

    def finish(self) -> list[LogEvent]:
        """End of input: report tracebacks that never reached their exception line."""
        events: list[LogEvent] = []
        for rank, open_traceback in list(self._tracebacks.items()):
            events.extend(self._close_unfinished(open_traceback, rank))
        self._tracebacks.clear()
        events.sort(key=lambda event: event.line)
        return events

    # --- reading ------------------------------------------------------------------------------------------

    def _examine(self, text: str, line: int, rank: int | None, nan_at: int) -> list[LogEvent]:
        """A gated line outside a traceback: classify it, and open a traceback if one starts here. ``nan_at``
        is where the gate found a NaN report, or _NOT_SEARCHED."""
        if "Traceback" in text:
            header = text.find(_TRACEBACK_HEADER)
            if header >= 0:
                self._open_traceback(rank, _OpenTraceback(text[:header], line, "", after_frame=False))
                return []
        if '"' in text and _FRAME.match(text) is not None:
            # A traceback whose header was not seen (cut off, or interleaved with other ranks' output).
            self._open_traceback(rank, _OpenTraceback("", line, text.strip(), after_frame=True))
            return []
        found = self._classify(text, rank, nan_at)
        return self._report(found, text, line, rank) if found else []

    def _continue_traceback(
        self, open_traceback: _OpenTraceback, text: str, line: int, rank: int | None
    ) -> list[LogEvent]:
        body = text
        if open_traceback.prefix and body.startswith(open_traceback.prefix):
            body = body[len(open_traceback.prefix) :]
        stripped = body.strip()
        # (Stripped, a frame line starts with its 'File "'; one character tells most lines apart cheaply.)
        if stripped[:1] == "F" and _FRAME.match(stripped) is not None:
            open_traceback.last_frame_line = line
            open_traceback.last_frame_text = stripped
            open_traceback.after_frame = True
            open_traceback.stray = 0
            return []
        if not stripped or stripped.startswith(_TRACEBACK_HEADER) or body[:1] in (" ", "\t"):
            # Source lines, caret lines, exception-group framing, chained-exception headers.
            open_traceback.after_frame = False
            return []
        if stripped[0] in "^~" and not stripped.strip(_CARETS):
            return []  # a caret line under the source line
        if open_traceback.after_frame:
            open_traceback.after_frame = False
            if _STRONG_EXCEPTION_LINE.match(stripped) is None:
                return []  # the source line of the frame above, its indentation lost to prefix stripping
        elif _EXCEPTION_LINE.match(stripped) is None:
            # Output from elsewhere interleaved with the traceback; read it as an ordinary line.
            open_traceback.stray += 1
            if open_traceback.stray <= _MAX_STRAY_LINES:
                return self._report(self._classify(stripped, rank, _NOT_SEARCHED), stripped, line, rank)
            del self._tracebacks[rank]
            return self._close_unfinished(open_traceback, rank) + self.feed(text, line, rank)
        del self._tracebacks[rank]
        kinds = self._classify(stripped, rank, _NOT_SEARCHED)
        if not kinds and open_traceback.last_frame_text:
            kinds = [(EventKind.TRACEBACK, 0, rank)]
        # A classified exception (an OOM, a failed child) says more than "a traceback": it is reported alone.
        return self._report(kinds, stripped, line, rank) if kinds else []

    def _open_traceback(self, rank: int | None, open_traceback: _OpenTraceback) -> None:
        if rank in self._tracebacks or len(self._tracebacks) < _MAX_TRACKED:
            self._tracebacks[rank] = open_traceback

    def _close_unfinished(self, open_traceback: _OpenTraceback, rank: int | None) -> list[LogEvent]:
        """A traceback cut off before its exception line: report it at its last frame, if it had one."""
        if not open_traceback.last_frame_text:
            return []
        frame_line, frame_text = open_traceback.last_frame_line, open_traceback.last_frame_text
        return self._report([(EventKind.TRACEBACK, 0, rank)], frame_text, frame_line, rank)

    # --- classifying --------------------------------------------------------------------------------------

    def _classify(self, text: str, rank: int | None, nan_at: int) -> list[tuple[EventKind, int, int | None]]:
        """The kinds of event ``text`` reports, each with where it matched and the rank it is about.

        ``nan_at`` is what :func:`_nan_report_at` gives for ``text`` when the caller has run it already,
        else _NOT_SEARCHED. Each regular expression is tried only where a substring test shows it can match.
        """
        found: list[tuple[EventKind, int, int | None]] = []
        killed_at = -1
        # As in feed's gate, a phrase is looked for only where a character it holds occurs.
        if (
            ("y" in text and "emory" in text)
            or ("O" in text and ("OOM" in text or "ALLOC_FAILED" in text))
            or ("X" in text and "EXHAUSTED" in text)
            or ("k" in text and "kill" in text)
        ):
            lowered = text.lower()
            killer_at = _find_any(lowered, _OOM_KILLER_PHRASES)
            if killer_at >= 0:
                # The kernel or slurm killed a process for host memory: that is a kill, not a CUDA OOM.
                killed_at = killer_at
            else:
                oom_at = _find_any(lowered, _OOM_PHRASES)
                if oom_at >= 0:
                    found.append((EventKind.OOM, oom_at, rank))
        # A literal part of each alternative of _KILLED: "Killed", "illed by signal", "SIGKILL".
        if killed_at < 0 and (
            ("K" in text and ("Killed" in text or "SIGKILL" in text))
            or ("y" in text and "illed by signal" in text)
        ):
            killed = _KILLED.search(text)
            if killed is not None:
                killed_at = killed.start()
        if ("C" in text and "NCCL" in text) or "atchdog" in text:
            about = rank
            if about is None and "Rank " in text:
                named = _RANK_IN_TEXT.search(text)
                if named is not None:
                    about = int(named[1])
            timeout_at = _leftmost(text, _NCCL_TIMEOUT_PHRASES)
            if timeout_at >= 0:
                found.append((EventKind.NCCL_TIMEOUT, timeout_at, about))
            else:
                error_at = _leftmost(text, _NCCL_ERROR_PHRASES)
                if error_at >= 0 and not any(phrase in text for phrase in _NCCL_BENIGN_PHRASES):
                    found.append((EventKind.NCCL_ERROR, error_at, about))
        if (
            ("x" in text and "xit" in text)
            or ("C" in text and "ChildFailed" in text)
            or ("w" in text and "terminated with" in text)
            or "return code" in text
        ):
            if any(part in text for part in _CHILD_FAILED_PARTS):
                child = _CHILD_FAILED.search(text)
                if child is not None:
                    found.append((EventKind.CHILD_FAILED, child.start(), rank))
            # Only the first exit code the line gives counts, and only a -9 (SIGKILL): none without a "-9".
            if killed_at < 0 and "-9" in text:
                exit_code = _EXIT_CODE.search(text)
                if exit_code is not None and (exit_code[1] or exit_code[2]) == "-9":
                    killed_at = exit_code.start()
        if killed_at >= 0:
            found.append((EventKind.KILLED, killed_at, rank))
        if nan_at == _NOT_SEARCHED:
            nan_at = _nan_report_at(text) if "nan" in text or "NaN" in text else -1
        if nan_at >= 0:
            found.append((EventKind.NAN, nan_at, rank))
        if ("V" in text and "NVRM" in text) or ("X" in text and "Xid" in text) or "fallen off" in text:
            xid = _XID.search(text)
            if xid is not None:
                found.append((EventKind.XID, xid.start(), rank))
        if ("V" in text and ("NVIDIA-SMI" in text or "NVML" in text)) or (
            "v" in text and ("evice" in text or "valid field" in text)
        ):
            smi_at = _find_any(text, _SMI_PHRASES)
            if smi_at >= 0:
                found.append((EventKind.SMI_FAILED, smi_at, rank))
        return found

    def _report(
        self, kinds: list[tuple[EventKind, int, int | None]], text: str, line: int, rank: int | None
    ) -> list[LogEvent]:
        """Turn classified kinds into events, dropping those that repeat a recent report."""
        events: list[LogEvent] = []
        for kind, at, about in kinds:
            group, priority = _GROUP_OF[kind]
            key = (group, about)
            last = self._reported.get(key)
            if last is not None and line - last.line <= REPEAT_WINDOW_LINES and priority <= last.priority:
                # The same failure still being printed: stay quiet, and keep quiet for a window from here.
                last.line = line
                continue
            if len(self._reported) >= _MAX_TRACKED and key not in self._reported:
                self._forget_old(line)
            self._reported[key] = _LastReport(line, priority)
            events.append(LogEvent(line, about, kind, _excerpt(text, at)))
        return events

    def _forget_old(self, line: int) -> None:
        stale = [key for key, last in self._reported.items() if line - last.line > REPEAT_WINDOW_LINES]
        for key in stale:
            del self._reported[key]
        if len(self._reported) >= _MAX_TRACKED:
            self._reported.clear()


def _excerpt(text: str, at: int) -> str:
    """The sanitised event text: the whole line, or for a long line the part around position ``at``.

    Secrets are masked on the whole line before it is cut, so a cut can never leave part of a key unmasked.
    """
    anchor = text[at : at + 24]
    cleaned = clean_remote_text(text).strip()
    if len(cleaned) <= MAX_TEXT:
        return cleaned
    found = cleaned.find(anchor) if anchor else -1
    start = max(0, min(found - 60, len(cleaned) - MAX_TEXT)) if found >= 0 else 0
    end = start + MAX_TEXT - 2
    return ("…" if start else "") + cleaned[start:end].strip() + ("…" if end < len(cleaned) else "")


def _find_any(text: str, phrases: tuple[str, ...]) -> int:
    """Where the first of ``phrases`` found in ``text`` starts, else -1."""
    for phrase in phrases:
        # A failing ``in`` costs a fraction of a failing find(), whose arguments are parsed the slow way.
        if phrase in text:
            return text.find(phrase)
    return -1


def _leftmost(text: str, phrases: tuple[str, ...]) -> int:
    """Where the earliest occurrence of any of ``phrases`` in ``text`` starts, else -1: what searching for
    the alternation of the phrases gives."""
    leftmost = -1
    for phrase in phrases:
        if phrase in text:
            at = text.find(phrase)
            if leftmost < 0 or at < leftmost:
                leftmost = at
    return leftmost


def _nan_report_at(text: str) -> int:
    """Where ``text`` reports a NaN (a NaN loss, "nan detected", "found NaN" ...), else -1.

    A standalone nan is a report when it is the value of a loss ("loss nan", "'loss': nan", "Loss is nan",
    "frame_0.loss_cls: nan") or sits in a reporting phrase. NaN in other metrics (grad_norm in fp16 runs,
    reward statistics), inside words ("nanms", "nanoGPT") or as a running average ("(nan)") is not.
    """
    for spelling in _NAN_SPELLINGS:
        if spelling in text:
            at = _standalone_at(text, spelling, 0)
            while at >= 0:
                if _is_nan_report(text, at, at + 3):
                    return at
                at = _standalone_at(text, spelling, at + 3)
    return -1


def _standalone_nan_at(text: str) -> int:
    """Where a "nan" or "NaN" that is not part of a longer word first occurs, else -1."""
    at = _standalone_at(text, "nan", 0)
    return at if at >= 0 else _standalone_at(text, "NaN", 0)


def _standalone_at(text: str, spelling: str, start: int) -> int:
    """Where ``spelling`` next occurs from ``start`` as a word of its own, else -1."""
    at = text.find(spelling, start)
    while at >= 0:
        end = at + len(spelling)
        if (at == 0 or text[at - 1] not in _WORD_CHARS) and (
            end == len(text) or text[end] not in _WORD_CHARS
        ):
            return at
        at = text.find(spelling, end)
    return -1


def _is_nan_report(text: str, at: int, end: int) -> bool:
    if text[end : end + 1] in _NAN_FOLLOWER_STARTS:
        follower = _NAN_FOLLOWER.match(text, end)
        if follower is not None:
            # Megatron/GPT-NeoX "number of nan iterations: N" counts NaN steps; 0 is the healthy value.
            count = follower["count"]
            return count is None or int(count) > 0
    if at == 0:
        return False  # no word before it
    # The word before the nan, read backwards (an anchored match, linear in the window): past separators,
    # quotes, "tensor(" and a verb ("Loss is nan") to the metric name or the reporting word ("found NaN").
    # The window is the 64 characters before the nan, reversed, cut in one step.
    window = text[at - 1 : at - 65 : -1] if at > 64 else text[at - 1 :: -1]
    before = _REVERSED_CONTEXT.match(window)
    if before is None:
        return False
    word = before[1][::-1].lower()
    if word in _NAN_LEADERS:
        return True
    return "loss" in word and "scale" not in word
