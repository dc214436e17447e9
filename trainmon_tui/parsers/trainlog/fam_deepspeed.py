"""Read DeepSpeed engine log lines and the GPT-NeoX iteration reports that run on top of DeepSpeed.

Shapes handled (each may follow DeepSpeed's ``[date] [INFO] [file.py:line:func]`` logger prefix, which is read
for the timestamp when the engine left it in place)::

    [Rank 0] step=40, skipped=2, lr=[5e-05], mom=[[0.9, 0.999]]
    epoch=0/micro_step=34/global_step=34, RunningAvgSamplesPerSec=7.86, ..., MemAllocated=59.65GB, ...
    0/40, SamplesPerSec=83.48609168106144, MemAllocated=0.26GB, MaxMemAllocated=9.02GB
    [deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768
     samples/sec: 7.799 | iteration       34/   10000 | learning rate: 2.111E-06 | lm_loss: 1.118665E+01 | ...
     validation results at iteration 100 | lm_loss value: 6.1E+00 | lm_loss_ppl value: 4.5E+02 |

The ``step=`` line is also found after other text on the same physical line (a tqdm bar that did not end its
line). A value printed with a unit (``59.65GB``, ``112.9TFLOPS``) keeps the unit in the metric name
(``mem_allocated_gb``), so the number is never read in the wrong unit.
"""

from __future__ import annotations

import calendar
import re
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import Hit, LineFamily, canonical_metric_name, parse_number

_LEADING_STAMP_RE = re.compile(r"\s*\[(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:[,.](\d{1,6}))?\]")
_STEP_RE = re.compile(r"step=(\d{1,18}), skipped=(\d{1,18}), lr=\[([^\]]*)\]")
_RANK_RE = re.compile(r"\[Rank (\d{1,18})\]")
_GLOBAL_STEP_RE = re.compile(r"global_step=(\d{1,18}),(.*)")
_OLD_TIMER_RE = re.compile(r"(\d{1,18})/(\d{1,18}), (SamplesPerSec=.*)")
_OVERFLOW_RE = re.compile(
    r"(?:Rank (\d{1,18}) )?Skipping step\. Attempted loss scale: (\d+(?:\.\d+)?)"
    r"(?:, reducing to (\d+(?:\.\d+)?))?"
)
_NEOX_RE = re.compile(r"\s*samples/sec: ([^|]*)\|\s*iteration\s+(\d{1,18})\s*/\s*(\d{1,18})\s*\|(.*)")
_NEOX_EVAL_RE = re.compile(r"\s*(validation|test) results at (?:iteration (\d{1,18})|[^|]*?)\s*\|(.*)")
_VALUE_UNIT_RE = re.compile(r"\s*([-+]?(?:\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?|nan|inf))\s*([A-Za-z/]*)\s*")


def _leading_timestamp(text: str) -> float | None:
    """UTC seconds of a ``[YYYY-MM-DD HH:MM:SS,mmm]`` stamp at the start of ``text``, else None."""
    if not text or text[0] not in "[ ":
        return None
    match = _LEADING_STAMP_RE.match(text)
    if match is None:
        return None
    try:
        seconds = calendar.timegm((*(int(g) for g in match.groups()[:6]), 0, 0, 0))
    except ValueError:
        return None
    millis = match[7]
    return seconds + (int(millis) / 10 ** len(millis) if millis else 0.0)


def _value_with_unit(raw_name: str, raw_value: str) -> tuple[str, float] | None:
    """``("MemAllocated", "59.65GB")`` -> ``("mem_allocated_gb", 59.65)``; None when not a number."""
    try:
        return canonical_metric_name(raw_name), float(raw_value)
    except ValueError:
        pass
    match = _VALUE_UNIT_RE.fullmatch(raw_value)
    if match is None:
        return None
    number = parse_number(match[1])
    if number is None:
        return None
    unit = match[2]
    name = canonical_metric_name(raw_name + "_" + unit if unit else raw_name)
    return name, number


def _read_pairs(body: str, separator: str, assign: str, metrics: dict[str, float], prefix: str = "") -> None:
    """Add every ``key<assign>value`` pair of ``body`` (split on ``separator``) that holds a number."""
    for pair in body.split(separator):
        key, sep, value = pair.partition(assign)
        if not sep:
            continue
        key = key.strip()
        if prefix:
            # NeoX eval fields read "lm_loss value: X": the loss itself, under the split's prefix.
            key = prefix + key.removesuffix(" value")
        read = _value_with_unit(key, value)
        if read is not None:
            metrics[read[0]] = read[1]


class DeepSpeedFamily:
    """DeepSpeed engine progress (``step=``, throughput timers, fp16 overflow notes) and GPT-NeoX reports."""

    name: ClassVar[str] = "deepspeed"
    gate: ClassVar[tuple[str, ...]] = ("step=", "PerSec=", "samples/sec", "Skipping step", "results at")

    def parse(self, text: str) -> Hit | None:
        if "step=" in text:
            hit = self._parse_step(text)
            if hit is None:
                hit = self._parse_global_step_timer(text)
        elif "PerSec=" in text:
            hit = self._parse_old_timer(text)
        elif "Skipping step" in text:
            hit = self._parse_overflow(text)
        elif "samples/sec" in text:
            hit = self._parse_neox(text)
        else:
            hit = self._parse_neox_eval(text)
        if hit is not None:
            hit.timestamp = _leading_timestamp(text)
        return hit

    @staticmethod
    def _parse_step(text: str) -> Hit | None:
        match = _STEP_RE.search(text)
        if match is None:
            return None
        start = match.start()
        if start and (text[start - 1].isalnum() or text[start - 1] == "_"):
            # "global_step=" / "micro_step=" belong to the throughput timer, not to this line shape.
            return None
        metrics = {"skipped": float(match[2])}
        # One lr per parameter group; the first group is the one schedules are usually written for. The
        # optimizer momentum/betas ("mom=") are constants of the run, not progress, and are left out.
        first_lr = parse_number(match[3].partition(",")[0])
        if first_lr is not None:
            metrics["lr"] = first_lr
        rank = _RANK_RE.search(text, 0, start)
        return Hit(step=int(match[1]), metrics=metrics, rank=None if rank is None else int(rank[1]))

    @staticmethod
    def _parse_global_step_timer(text: str) -> Hit | None:
        at = text.find("global_step=")
        if at < 0:
            return None
        match = _GLOBAL_STEP_RE.match(text, at)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        _read_pairs(match[2], ",", "=", metrics)
        # The timer's "epoch=" counter is left out: training loops rarely advance it, so it reads 0 forever.
        return Hit(step=int(match[1]), metrics=metrics)

    @staticmethod
    def _parse_old_timer(text: str) -> Hit | None:
        at = text.find(", SamplesPerSec=")
        if at < 0:
            return None
        # The old timer prints "EPOCH/GLOBAL_STEP, SamplesPerSec=..." right after the logger prefix.
        head = text.rfind(" ", 0, at) + 1
        match = _OLD_TIMER_RE.match(text, head)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        _read_pairs(match[3], ",", "=", metrics)
        if not metrics:
            return None
        return Hit(step=int(match[2]), metrics=metrics)

    @staticmethod
    def _parse_overflow(text: str) -> Hit | None:
        match = _OVERFLOW_RE.search(text)
        if match is None:
            return None
        # With hysteresis left, DeepSpeed keeps the attempted scale; otherwise it drops to the new one.
        scale = float(match[3] or match[2])
        rank = match[1]
        return Hit(metrics={"loss_scale": scale}, rank=None if rank is None else int(rank))

    @staticmethod
    def _parse_neox(text: str) -> Hit | None:
        match = _NEOX_RE.match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        samples_per_sec = parse_number(match[1])
        if samples_per_sec is not None:
            metrics["samples_per_sec"] = samples_per_sec
        _read_pairs(match[4], "|", ":", metrics)
        return Hit(step=int(match[2]), total_steps=int(match[3]), metrics=metrics)

    @staticmethod
    def _parse_neox_eval(text: str) -> Hit | None:
        match = _NEOX_EVAL_RE.match(text)
        if match is None:
            return None
        metrics: dict[str, float] = {}
        _read_pairs(match[3], "|", ":", metrics, "val_" if match[1] == "validation" else "test_")
        if not metrics:
            return None
        step = match[2]
        return Hit(step=None if step is None else int(step), metrics=metrics)


FAMILIES: tuple[type[LineFamily], ...] = (DeepSpeedFamily,)
