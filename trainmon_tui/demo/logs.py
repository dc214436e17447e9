"""The log file each simulated rank writes, in a real framework's format, as a pure function of time.

A rank's log is a sequence of *blocks* of timed lines: block ``run.first_step`` is the launch banner, and
block ``k`` holds what the rank prints when step ``k`` ends (the iteration report, and after an evaluation
step the validation report). Every line carries the simulated time it is written at, so "the file at time
t" is every line whose time is at most t, and a follower reads the lines that became due since it last
looked.

Formats, checked with ``trainmon-tui parse-log``:

- llama-7b writes Megatron-LM reports: ``[stamp] iteration k/ total | ... | lm loss: ... |`` with the total
  step count (so the ETA works), ``validation loss at iteration k | lm loss value: ...`` after each
  evaluation, checkpoint saves, and now and then an iteration skipped for a NaN
  (``number of nan iterations:   1``), which the parser reports as an event.
- vit-sweep writes Hugging Face Trainer output: a tqdm bar line per step (``k/total``), a loss dict every
  ``log_every`` steps, an ``eval_loss`` dict after each evaluation, and now and then an ``NCCL WARN`` line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from trainmon_tui.demo.cluster import LogStyle, Rank, SimHost
from trainmon_tui.demo.noise import normal

TimedLine = tuple[float, str]

_BAR_CELLS: Final = 10
_PARTIAL_BLOCKS: Final = " ▏▎▍▌▋▊▉"
_K_RATE: Final = 21
_K_EVAL_TIME: Final = 22
_CHECKPOINT_EVERY: Final = 1000
# Sequences of 4096 tokens per step, per rank: 3 (micro batch 1, three accumulation steps).
_SEQUENCES_PER_RANK: Final = 3
_HF_EXAMPLES: Final = 1_281_167
# Blocks kept per log: the listing, every tail and the replay after a reconnect ask for the same recent
# blocks, and building one costs tens of microseconds; this covers a `tail -n 500` with room to spare.
_CACHED_BLOCKS: Final = 2048


def _stamp(wall_epoch: float, t: float) -> str:
    # UTC, as the Megatron parser reads its stamps; the log clock only has to agree with itself.
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall_epoch + t))


def _interval(seconds: float) -> str:
    """An elapsed or remaining time as tqdm prints it: MM:SS, or H:MM:SS from an hour on."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _bar(fraction: float) -> str:
    cells = fraction * _BAR_CELLS
    full = int(cells)
    if full >= _BAR_CELLS:
        return "█" * _BAR_CELLS
    partial = _PARTIAL_BLOCKS[int((cells - full) * len(_PARTIAL_BLOCKS))]
    return ("█" * full + partial).ljust(_BAR_CELLS)


class RankLog:
    """The log file of one rank on ``host``; ``wall_epoch`` is the wall-clock time of simulated time 0."""

    def __init__(self, rank: Rank, host: SimHost, wall_epoch: float) -> None:
        self.rank = rank
        self.host = host
        self.path = rank.log_path
        self.wall_epoch = wall_epoch
        run = rank.run
        self.first_block = run.first_step
        self.last_block = run.total_steps
        self._banner = self._megatron_banner() if run.style is LogStyle.MEGATRON else self._hf_banner()
        self._blocks: dict[int, tuple[TimedLine, ...]] = {}

    def exists(self, t: float) -> bool:
        return t >= self.rank.run.launched_t

    def block_start(self, index: int) -> float:
        """The time of the first line of block ``index``."""
        if index <= self.first_block:
            return self.rank.run.launched_t
        return self.rank.step_end(index)

    def block(self, index: int) -> tuple[TimedLine, ...]:
        if index <= self.first_block:
            return self._banner
        if index > self.last_block:
            return ()
        cached = self._blocks.get(index)
        if cached is None:
            if len(self._blocks) >= _CACHED_BLOCKS:
                self._blocks.clear()
            if self.rank.run.style is LogStyle.MEGATRON:
                cached = self._megatron_step(index)
            else:
                cached = self._hf_step(index)
            self._blocks[index] = cached
        return cached

    # --------------------------------------------------------------------------------------------- Megatron

    def _megatron_banner(self) -> tuple[TimedLine, ...]:
        run = self.rank.run
        start = run.launched_t
        lines = (
            f"using world size: {run.world_size}, data-parallel size: {run.world_size}, "
            "context-parallel size: 1, tensor-model-parallel size: 1, pipeline-model-parallel size: 1 ",
            "> building Llama2Tokenizer tokenizer ...",
            " > padded vocab (size: 32000) with 0 dummy tokens (new size: 32000)",
            "> initializing torch distributed ...",
            "> setting random seeds to 1234 ...",
            f" loading checkpoint from /ckpt/llama-7b at iteration {run.first_step}",
            "  successfully loaded checkpoint from /ckpt/llama-7b [ t 1/1, p 1/1 ] "
            f"at iteration {run.first_step}",
            "> building train, validation, and test datasets ...",
            "training ...",
        )
        timed = [(start + 0.7 * number, line) for number, line in enumerate(lines)]
        before = run.train_start_t - 0.5
        timed.append(
            (before, f"[before the start of training step] datetime: {_stamp(self.wall_epoch, before)} ")
        )
        return tuple(timed)

    def _megatron_step(self, step: int) -> tuple[TimedLine, ...]:
        rank, run = self.rank, self.rank.run
        ended = rank.step_end(step)
        took_ms = rank.step_time_s(step) * 1000.0
        batch = _SEQUENCES_PER_RANK * run.world_size
        # 6 FLOP per parameter per token: a 6.7e9-parameter model, 4096 tokens per sequence.
        tflops = 6 * 6.7e9 * 4096 * _SEQUENCES_PER_RANK / (took_ms / 1000.0) / 1e12
        head = (
            f" [{_stamp(self.wall_epoch, ended)}] iteration {step:8d}/{run.total_steps:8d} | "
            f"consumed samples: {step * batch:12d} | "
            f"elapsed time per iteration (ms): {took_ms:.1f} | "
            f"throughput per GPU (TFLOP/s/GPU): {tflops:.1f} | "
            f"learning rate: {run.lr_at(step):.6E} | global batch size: {batch:5d} | "
        )
        if run.has_fault(rank.rank, step):
            # A step whose gradients held a NaN is skipped: no loss is reported for it, and the run goes on.
            body = "loss scale: 1.0 | number of skipped iterations:   1 | number of nan iterations:   1 |"
        else:
            body = (
                f"lm loss: {rank.loss(step):.6E} | loss scale: 1.0 | grad norm: {rank.grad_norm(step):.3f} | "
                "number of skipped iterations:   0 | number of nan iterations:   0 |"
            )
        lines: list[TimedLine] = [(ended, head + body)]
        if step % run.eval_every == 0:
            done = ended + run.eval_s
            spread = 1.0 + 0.002 * abs(normal(rank.seed, _K_EVAL_TIME, run.index, step))
            eval_ms = run.eval_s * 1000.0
            val = rank.val_loss(step)
            rule = "-" * 95
            lines += [
                (done, "(min, max) time across ranks (ms):"),
                (
                    done,
                    f"    evaluate {'.' * 40}: ({eval_ms:.2f}, {eval_ms * spread:.2f})",
                ),
                (done, rule),
                (
                    done,
                    f" validation loss at iteration {step} | lm loss value: {val:.6E} | "
                    f"lm loss PPL: {2.718281828459045**val:.6E} | ",
                ),
                (done, rule),
            ]
            if step % _CHECKPOINT_EVERY == 0:
                lines += [
                    (
                        done,
                        f"saving checkpoint at iteration {step:7d} to /ckpt/llama-7b in torch_dist format",
                    ),
                    (
                        done,
                        f"  successfully saved checkpoint from iteration {step:7d} to /ckpt/llama-7b "
                        "[ t 1/1, p 1/1 ]",
                    ),
                ]
        return tuple(lines)

    # ------------------------------------------------------------------------------------------ HF Trainer

    def _hf_banner(self) -> tuple[TimedLine, ...]:
        run = self.rank.run
        batch = 128
        total_batch = batch * run.world_size
        lines = (
            "***** Running training *****",
            f"  Num examples = {_HF_EXAMPLES:,}",
            f"  Num Epochs = {run.total_steps // max(1, run.steps_per_epoch)}",
            f"  Instantaneous batch size per device = {batch}",
            f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch:,}",
            "  Gradient Accumulation steps = 1",
            f"  Total optimization steps = {run.total_steps:,}",
            "  Number of trainable parameters = 85,806,346",
        )
        start = run.launched_t + run.loading_s * 0.5
        timed = [(start + 0.1 * number, line) for number, line in enumerate(lines)]
        timed.append((run.train_start_t - 0.1, self._hf_bar(run.first_step, run.train_start_t)))
        return tuple(timed)

    def _hf_bar(self, step: int, at: float) -> str:
        rank, run = self.rank, self.rank.run
        elapsed = at - run.train_start_t
        if step <= run.first_step or elapsed <= 0:
            return f"  0%|          | 0/{run.total_steps} [00:00<?, ?it/s]"
        rate = (step - run.first_step) / elapsed * (1.0 + 0.01 * normal(rank.seed, _K_RATE, rank.rank, step))
        remaining = (run.total_steps - step) / rate
        fraction = step / run.total_steps
        rate_text = f"{rate:5.2f}it/s" if rate >= 1.0 else f"{1.0 / rate:5.2f}s/it"
        return (
            f"{int(fraction * 100):3d}%|{_bar(fraction)}| {step}/{run.total_steps} "
            f"[{_interval(elapsed)}<{_interval(remaining)}, {rate_text}]"
        )

    def _hf_step(self, step: int) -> tuple[TimedLine, ...]:
        rank, run = self.rank, self.rank.run
        ended = rank.step_end(step)
        lines: list[TimedLine] = []
        if run.has_fault(rank.rank, step):
            # A flaky InfiniBand link: NCCL warns and retries, and training carries on.
            peer = f"10.0.{self.host.index}.{12 + rank.local_rank}<{33092 + step % 1000}>"
            lines.append(
                (
                    ended,
                    f"{self.host.name}:{rank.pid}:{rank.pid + 159} [{rank.local_rank}] "
                    "transport/net_ib.cc:1296 "
                    f"NCCL WARN NET/IB : Got completion from peer {peer} with error 12, opcode 0, len 0, "
                    "vendor err 129 (Recv)",
                )
            )
        lines.append((ended, self._hf_bar(step, ended)))
        epoch = round(step / run.steps_per_epoch, 2)
        if step % run.log_every == 0:
            lines.append(
                (
                    ended,
                    f"{{'loss': {rank.loss(step):.4f}, 'grad_norm': {rank.grad_norm(step):.4f}, "
                    f"'learning_rate': {run.lr_at(step):.6g}, 'epoch': {epoch}}}",
                )
            )
        if step % run.eval_every == 0:
            done = ended + run.eval_s
            accuracy = 0.81 * (1.0 - 2.718281828459045 ** (-step / 6000.0))
            samples = 50_000 / run.eval_s
            lines.append(
                (
                    done,
                    f"{{'eval_loss': {rank.val_loss(step):.4f}, 'eval_accuracy': {accuracy:.4f}, "
                    f"'eval_runtime': {run.eval_s:.4f}, 'eval_samples_per_second': {samples:.3f}, "
                    f"'eval_steps_per_second': {samples / 128:.3f}, 'epoch': {epoch}}}",
                )
            )
        return tuple(lines)


@dataclass(slots=True)
class LogCursor:
    """Where a reader of a log stands: the next line to read is line ``line`` of block ``block``."""

    block: int
    line: int = 0


def read_due(log: RankLog, cursor: LogCursor, t: float) -> list[str]:
    """The lines written since ``cursor`` up to time ``t``; moves the cursor past them."""
    out: list[str] = []
    while cursor.block <= log.last_block:
        if cursor.line == 0 and log.block_start(cursor.block) > t:
            break
        lines = log.block(cursor.block)
        while cursor.line < len(lines) and lines[cursor.line][0] <= t:
            out.append(lines[cursor.line][1])
            cursor.line += 1
        if cursor.line < len(lines):
            break
        cursor.block += 1
        cursor.line = 0
    return out


def last_lines(log: RankLog, t: float, count: int) -> tuple[list[str], LogCursor]:
    """The last ``count`` lines written by ``t`` (``tail -n count``), and a cursor just after them."""
    if not log.exists(t):
        return [], LogCursor(log.first_block)
    newest = log.rank.steps_done(t)
    cursor = LogCursor(newest)
    lines = log.block(newest)
    due = [text for at, text in lines if at <= t]
    cursor.line = len(due)
    if cursor.line == len(lines):
        cursor.block, cursor.line = newest + 1, 0
    collected = [due]
    have = len(due)
    block = newest - 1
    while have < count and block >= log.first_block:
        earlier = [text for _, text in log.block(block)]
        collected.append(earlier)
        have += len(earlier)
        block -= 1
    ordered = [line for part in reversed(collected) for line in part]
    return (ordered[-count:] if count > 0 else []), cursor


class FileGrowth:
    """How big a log is and what its first ``head_bytes`` are, as time goes on (what ``stat`` and the
    listing's checksum see). Times passed to :meth:`advance` must not go backwards."""

    def __init__(self, log: RankLog, head_bytes: int) -> None:
        self.log = log
        self.size = 0
        self._head = bytearray()
        self._head_bytes = head_bytes
        self._cursor = LogCursor(log.first_block)

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    def advance(self, t: float) -> None:
        for line in read_due(self.log, self._cursor, t):
            data = (line + "\n").encode()
            self.size += len(data)
            missing = self._head_bytes - len(self._head)
            if missing > 0:
                self._head += data[:missing]


def logs_of(host: SimHost, wall_epoch: float) -> dict[str, RankLog]:
    """Every log file on ``host``, by path (of the ranks that write one)."""
    return {rank.log_path: RankLog(rank, host, wall_epoch) for rank in host.logging_ranks}
