"""Read Hugging Face Trainer log dicts (also TRL and Accelerate runs), with the tqdm bar glued to them.

Shapes handled (one cleaned line each; the engine joins a dict hard-wrapped at 80 columns)::

    {'loss': 0.2051, 'grad_norm': nan, 'learning_rate': 9.774074342405685e-06, 'epoch': 0.53}
    {'eval_loss': 2.22, 'eval_runtime': 274.3799, 'eval_samples_per_second': 7.289, 'epoch': 0.01}
    {'loss': 0.0, 'rewards/chosen': nan, 'logps/rejected': nan, 'epoch': 0.01}      (TRL: keys with '/')
      0%|          | 560/240003 [02:25<16:26:52,  4.04it/s]{'loss': 0.4117, 'epoch': 0.01}   (after a bar)
    {'train_runtime': 20909.335, 'train_samples_per_second': 15.304, 'train_loss': 0.0892, 'epoch': 1.0}

The dict's ``epoch`` is the fractional epoch; a bar on the same line gives step and total steps. The closing
``train_runtime`` summary keeps ``train_loss`` under its own name: it is the mean over the whole run, not the
loss at the last step. Values that are not numbers (``None``, lists, tensors) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import ClassVar

from trainmon_tui.parsers.trainlog.base import (
    ColumnReader,
    Columns,
    Hit,
    Span,
    float_column,
    float_word,
    has_digit,
    int_column,
    lazy_float_column,
    never_reads,
    parse_number,
    plain_float_shape,
)
from trainmon_tui.parsers.trainlog.fam_tqdm import METRIC_NAMES, last_bar, metric_name, own_name, to_int

_STEP_KEYS = frozenset({"step", "global_step"})
_SUMMARY_KEY = "train_runtime'"


class HfTrainerFamily:
    """HF Trainer ``{'key': value, ...}`` log dicts, alone or glued to the training bar."""

    name: ClassVar[str] = "hf_trainer"
    gate: ClassVar[tuple[str, ...]] = ("{'",)

    def parse(self, text: str) -> Hit | None:
        start = text.find("{'")
        before = text[:start].rstrip() if start else ""
        # A dict inside a sentence ("Updated tokens: {'pad_token_id': 151643}") is a message, not a log dict.
        if before and before[-1] != "]":
            return None
        end = text.find("}", start)
        body = text[start + 2 : end] if end > 0 else text[start + 2 :]
        summary = _SUMMARY_KEY in body
        hit = Hit()
        metrics = hit.metrics
        # Splitting on the quotes is several times faster than a regex over the line, and HF prints the dict's
        # repr, so every pair after the first starts with ", '".
        for pair in body.split(", '"):
            key, sep, raw = pair.partition("':")
            if not sep:
                continue
            try:
                value = float(raw)
            except ValueError:
                parsed = parse_number(raw)
                if parsed is None:
                    continue
                value = parsed
            if key == "epoch":
                hit.epoch = value
            elif key in _STEP_KEYS:
                hit.step = to_int(value)
            elif summary:
                metrics[own_name(key)] = value
            else:
                name = METRIC_NAMES.get(key) or metric_name(key)
                if name in metrics:
                    name = own_name(key)
                metrics[name] = value
        bar = last_bar(before) if before else None
        if bar is None and end > 0 and "%" in text[end:]:
            bar = last_bar(text[end:])
        if bar is not None:
            if hit.step is None:
                hit.step = int(bar[2])
            hit.total_steps = int(bar[3])
        if not metrics and hit.epoch is None and hit.step is None:
            return None
        return hit

    def for_shape(self, text: str) -> Callable[[str], Hit | None]:
        """A reader for every line of ``text``'s shape (its digits masked): the dict's pairs and the bar's
        counts sit at the same places on all of them (see parse); only the values are read."""
        start = text.find("{'")
        if start < 0:
            return self.parse
        before = text[:start].rstrip() if start else ""
        if before and before[-1] != "]":
            return never_reads
        end = text.find("}", start)
        body_at = start + 2
        body = text[body_at:end] if end > 0 else text[body_at:]
        summary = _SUMMARY_KEY in body
        pairs: list[tuple[int, int, int, int, tuple[str, str] | None]] = []
        at = body_at
        for pair in body.split(", '"):
            key, sep, _ = pair.partition("':")
            if sep:
                # A key without a digit is the same on every line of the shape: name it once.
                fixed = None if has_digit(key) else (key, own_name(key) if summary else metric_name(key))
                pairs.append((at, at + len(key), at + len(key) + len(sep), at + len(pair), fixed))
            at += len(pair) + 3
        bar = last_bar(before) if before else None
        bar_at = 0
        if bar is None and end > 0 and "%" in text[end:]:
            bar = last_bar(text[end:])
            bar_at = end
        counts = None
        if bar is not None:
            counts = (bar.start(2) + bar_at, bar.end(2) + bar_at, bar.start(3) + bar_at, bar.end(3) + bar_at)
        return partial(_read_dict, tuple(pairs), summary, counts)

    def columns_for_shape(self, text: str) -> ColumnReader | None:
        """A column reader for ``text``'s shape (see base.ColumnFamily): a training dict (not the run's
        summary) whose keys are fixed and values plain digits (a metric's may be a word ``float()`` reads:
        ``nan``), a step or an epoch at most once, a step without an exponent (so ``to_int`` keeps every
        value)."""
        reader = self.for_shape(text)
        if not isinstance(reader, partial):
            return None
        pairs: tuple[tuple[int, int, int, int, tuple[str, str] | None], ...] = reader.args[0]
        summary: bool = reader.args[1]
        counts: tuple[int, int, int, int] | None = reader.args[2]
        if summary or not pairs:
            return None
        names: list[str] = []
        spans: list[Span] = []
        step_span: Span | None = None
        epoch_span: Span | None = None
        for _key_at, _key_end, raw_at, raw_end, fixed in pairs:
            raw = text[raw_at:raw_end].strip()
            if fixed is None:
                return None
            key, name = fixed
            if not plain_float_shape(raw) and (key == "epoch" or key in _STEP_KEYS or not float_word(raw)):
                return None
            if key == "epoch" or key in _STEP_KEYS:
                if key == "epoch" and epoch_span is None:
                    epoch_span = (raw_at, raw_end)
                elif (
                    key != "epoch" and step_span is None and sum(c.isdigit() for c in raw) <= _MAX_STEP_DIGITS
                ):
                    step_span = (raw_at, raw_end)
                else:
                    return None
                if "e" in raw.lower():
                    return None
                continue
            if name in names:
                name = own_name(key)
            names.append(name)
            spans.append((raw_at, raw_end))
        bar_step = None if counts is None or step_span is not None else (counts[0], counts[1])
        total = None if counts is None else (counts[2], counts[3])
        return partial(_dict_columns, tuple(names), tuple(spans), epoch_span, step_span, bar_step, total)


# A step printed with at most this many digits is below to_int's limit (1e15).
_MAX_STEP_DIGITS = 15


def _dict_columns(  # noqa: PLR0917 - bound by partial, positional
    names: tuple[str, ...],
    spans: tuple[Span, ...],
    epoch_span: Span | None,
    step_span: Span | None,
    bar_step: Span | None,
    total_span: Span | None,
    lines: Sequence[str],
    start: int,
) -> Columns | None:
    """What _read_dict reads from each of ``lines`` (one shape, see columns_for_shape), by column."""
    try:
        values = tuple(lazy_float_column(lines, start, span) for span in spans)
        epoch = None if epoch_span is None else float_column(lines, start, epoch_span)
        step: list[int] | None = None
        if step_span is not None:
            step = list(map(int, float_column(lines, start, step_span)))
    except ValueError:
        return None
    if bar_step is not None:
        step = int_column(lines, start, bar_step)
    total = None if total_span is None else int_column(lines, start, total_span)
    return Columns(step, total, epoch, None, None, None, names, values)


def _read_dict(
    pairs: tuple[tuple[int, int, int, int, tuple[str, str] | None], ...],
    summary: bool,
    counts: tuple[int, int, int, int] | None,
    text: str,
) -> Hit | None:
    """What HfTrainerFamily.parse reads from a line of the shape ``pairs`` and ``counts`` were found in."""
    hit = Hit()
    metrics = hit.metrics
    for key_at, key_end, raw_at, raw_end, fixed in pairs:
        key, name = (text[key_at:key_end], "") if fixed is None else fixed
        raw = text[raw_at:raw_end]
        try:
            value = float(raw)
        except ValueError:
            parsed = parse_number(raw)
            if parsed is None:
                continue
            value = parsed
        if key == "epoch":
            hit.epoch = value
        elif key in _STEP_KEYS:
            hit.step = to_int(value)
        elif summary:
            metrics[name or own_name(key)] = value
        else:
            name = name or METRIC_NAMES.get(key) or metric_name(key)
            if name in metrics:
                name = own_name(key)
            metrics[name] = value
    if counts is not None:
        if hit.step is None:
            hit.step = int(text[counts[0] : counts[1]])
        hit.total_steps = int(text[counts[2] : counts[3]])
    if not metrics and hit.epoch is None and hit.step is None:
        return None
    return hit


FAMILIES = (HfTrainerFamily,)
