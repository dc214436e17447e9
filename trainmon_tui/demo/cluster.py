"""The simulated cluster behind ``trainmon-tui --demo``: hosts, GPUs, runs, ranks and processes.

Pure and deterministic: everything is a function of the seed and a simulated time ``t`` in seconds (0 is when
the demo starts; the runs began earlier, so there is history to show at once). Nothing here does I/O or
keeps state that changes with time, so a reading asked for twice, or by two connections, is the same.

What it plays, by default on 3 hosts x 8 GPUs (more hosts just add ranks to the first run; past
:data:`BIG_CLUSTER_HOSTS` hosts the cluster logs like a big job, see below):

- ``llama-7b``: a Megatron-LM pretraining run on every host but the last, one rank per GPU, resumed from a
  checkpoint: noisy falling loss, an evaluation every 200 iterations (~4 minutes) during which SM% dips,
  a validation loss after it, now and then an iteration with a NaN that is skipped (the run goes on).
  One rank (the fourth of the second host) runs on a hot, throttled GPU and is ~6% slower: its step lags.
- ``vit-sweep``: a Hugging Face Trainer run (ViT on ImageNet) on the last host, on all GPUs but one, with
  tqdm bars, loss dicts, an evaluation every 1000 steps, and an occasional NCCL warning on one rank.
- The last GPU of the last host trains nothing: a forgotten Jupyter kernel holds some of its memory.
- The last host drops off the network on a schedule (:class:`DropSchedule`), for ~30 s every 5 minutes.

On a big cluster (more than :data:`BIG_CLUSTER_HOSTS` hosts) every rank still runs and shows in ``ps``, but
only each node's local rank 0 writes a log (as with ``torchrun --local-ranks-filter 0`` or one SLURM output
file per node): one log per host, about a line per second, instead of one per GPU. The slow rank is then the
local rank 0 of the second host, so its own log shows it lagging, and the faults (NaN, NCCL warnings) are
logged by ranks that write a log. llama-7b launched later there, so there is less log history to replay.

GPU readings follow the rank on the GPU: SM%, memory bandwidth, power, clocks and temperature move together
(temperature lags the load by averaging it over the last 40 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from trainmon_tui.demo.noise import mix, normal, uniform, wobble

# Keys of the independent noise streams (see trainmon_tui.demo.noise): one per quantity.
_K_JITTER: Final = 1
_K_LOSS: Final = 2
_K_GRAD: Final = 3
_K_SM: Final = 4
_K_MEM: Final = 5
_K_POWER: Final = 6
_K_TEMP: Final = 7
_K_FB: Final = 8
_K_PID: Final = 9
_K_UUID: Final = 10
_K_STAT: Final = 11
_K_VAL: Final = 12
_K_CLOCK: Final = 13
_K_RATE: Final = 14

GPU_NAME: Final = "NVIDIA H100 80GB HBM3"
GPU_TOTAL_MIB: Final = 81559
GPU_POWER_LIMIT_W: Final = 700.0
GPU_MEM_CLOCK_MHZ: Final = 2619
GPU_MAX_SM_CLOCK_MHZ: Final = 1980
GPU_IDLE_SM_CLOCK_MHZ: Final = 345
GPU_IDLE_POWER_W: Final = 69.0
DRIVER_VERSION: Final = "550.90.07"
# PCI bus ids of the eight GPUs of an HGX H100 board, in nvidia-smi's order.
_HGX_BUS_IDS: Final = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")

#: Where every file the demo hosts show lives (the remote user's home, for `~` in log patterns).
DEMO_HOME: Final = "/home/demo"
PYTHON: Final = "/opt/conda/bin/python"


class Phase(StrEnum):
    """What a rank is doing at a moment."""

    NOT_STARTED = "not started"
    LOADING = "loading"
    TRAIN = "train"
    EVAL = "eval"
    DONE = "done"


class LogStyle(StrEnum):
    """The framework whose log format a run writes."""

    MEGATRON = "megatron"
    HF_TRAINER = "hf_trainer"


@dataclass(frozen=True, slots=True)
class DropSchedule:
    """When the dropping host is unreachable: from ``first_at_s`` on, for ``down_s`` every ``every_s``."""

    first_at_s: float = 90.0
    every_s: float = 300.0
    down_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.down_s < self.every_s:
            raise ValueError("need 0 < down_s < every_s")

    def is_down(self, t: float) -> bool:
        if t < self.first_at_s:
            return False
        return (t - self.first_at_s) % self.every_s < self.down_s

    def next_change(self, t: float) -> float:
        """The first time after ``t`` at which :meth:`is_down` changes."""
        if t < self.first_at_s:
            return self.first_at_s
        cycle = math.floor((t - self.first_at_s) / self.every_s)
        start = self.first_at_s + cycle * self.every_s
        return start + self.down_s if t < start + self.down_s else start + self.every_s


#: The default outage schedule of the dropping host.
DEFAULT_DROP: Final = DropSchedule()


@dataclass(frozen=True, slots=True)
class LossCurve:
    """A power law falling from ``start`` to ``floor``: floor + (start - floor) * (1 + k/k0) ** -alpha."""

    start: float
    floor: float
    k0: float
    alpha: float
    noise: float
    # How far below the training loss the validation loss lies.
    val_offset: float

    def at(self, step: int) -> float:
        decay: float = (1.0 + step / self.k0) ** -self.alpha
        return self.floor + (self.start - self.floor) * decay


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One training run: where it runs, how fast, what it logs."""

    index: int
    name: str
    style: LogStyle
    host_indexes: tuple[int, ...]
    gpus_per_host: int
    total_steps: int
    # The checkpoint the launch resumed from (0: a fresh start).
    first_step: int
    # Simulated time the launch began (negative: before the demo started) and how long loading took.
    launched_t: float
    loading_s: float
    step_s: float
    eval_every: int
    eval_s: float
    lr_peak: float
    warmup_steps: int
    loss: LossCurve
    log_dir: str
    process_pattern: str
    script: str
    script_args: str
    # The rank that now and then logs a fault worth an alert, and which steps it logs it at.
    fault_rank: int
    fault_every: int
    fault_offset: int
    # Steps per epoch (HF logs a fractional epoch) and how often a loss dict is logged.
    steps_per_epoch: int = 0
    log_every: int = 1

    @property
    def world_size(self) -> int:
        return len(self.host_indexes) * self.gpus_per_host

    @property
    def train_start_t(self) -> float:
        return self.launched_t + self.loading_s

    def log_path(self, rank: int) -> str:
        return f"{self.log_dir}/rank{rank}.log"

    @property
    def log_glob(self) -> str:
        return f"{self.log_dir}/rank*.log"

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth of the peak."""
        if step < self.warmup_steps:
            return self.lr_peak * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.lr_peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0))))

    def has_fault(self, rank: int, step: int) -> bool:
        return rank == self.fault_rank and step % self.fault_every == self.fault_offset


@dataclass(frozen=True, slots=True)
class Rank:
    """One rank of a run: which host and GPU it runs on, how fast it steps, and its timeline.

    Step ``k`` (for ``k > run.first_step``) ends at :meth:`step_end`; the evaluation after step ``k`` (when
    ``k`` is a multiple of ``run.eval_every``) runs for ``run.eval_s`` before step ``k + 1`` starts. Each step
    time carries jitter of +-12%, fixed by the seed.
    """

    run: RunSpec
    rank: int
    host: int
    local_rank: int
    gpu: int
    step_s: float
    seed: int
    pid: int
    slow: bool = False
    # Whether the rank writes a log file (on a big cluster only each node's local rank 0 does).
    writes_log: bool = True
    # mix(seed, _K_JITTER, run.index, rank), hashed once: step_end runs thousands of times per log read.
    jitter_key: int = 0
    # The same for the loss and gradient-norm noise: mix() folds its keys one by one, so
    # mix(mix(seed, a, b, c), step) == mix(seed, a, b, c, step) and the values do not change; hashing the
    # fixed prefix once makes each per-step draw one round instead of five (a 64-host demo replays
    # hundreds of thousands of log lines when the dashboard first connects).
    loss_key: int = field(init=False, repr=False, compare=False)
    grad_key: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss_key", mix(self.seed, _K_LOSS, self.run.index, self.rank))
        object.__setattr__(self, "grad_key", mix(self.seed, _K_GRAD, self.run.index, self.rank))

    @property
    def log_path(self) -> str:
        return self.run.log_path(self.rank)

    def evals_before(self, step: int) -> int:
        """Evaluations run between the launch and the end of ``step``."""
        every = self.run.eval_every
        return max(0, (step - 1) // every - self.run.first_step // every)

    def step_end(self, step: int) -> float:
        """Simulated time at which ``step`` ended (for the first step of the launch: when training began)."""
        run = self.run
        done = step - run.first_step
        if done <= 0:
            return run.train_start_t
        jitter = (uniform(self.jitter_key, step) - 0.5) * 0.24 * self.step_s
        return run.train_start_t + done * self.step_s + self.evals_before(step) * run.eval_s + jitter

    def _planned_end(self, step: int) -> float:
        """:meth:`step_end` without its jitter: how the step would end if every step took ``step_s``."""
        run = self.run
        return (
            run.train_start_t + (step - run.first_step) * self.step_s + self.evals_before(step) * run.eval_s
        )

    def steps_done(self, t: float) -> int:
        """The last step finished by ``t`` (``run.first_step`` while loading or before the launch)."""
        run = self.run
        first, total = run.first_step, run.total_steps
        if t < self.step_end(first + 1):
            return first
        if t >= self.step_end(total):
            return total
        # The planned ends are exact arithmetic and grow by at least step_s a step, and the jitter moves a
        # real end by at most 0.12 step_s, so the answer is the last step planned to end by t, or one of
        # its neighbours: two hashed step_end calls instead of a binary search of ~16 (dmon asks 5 times per
        # GPU per second, for the temperature's 40 s of history).
        cycle_s = run.eval_every * self.step_s + run.eval_s
        step = first + int((t - run.train_start_t) / cycle_s * run.eval_every)
        step = min(max(step, first + 1), total)
        while step < total and self._planned_end(step + 1) <= t:
            step += 1
        while step > first + 1 and self._planned_end(step) > t:
            step -= 1
        # step: the last one planned to end by t (or first + 1). The real end of step + 1 can be earlier.
        if step < total and self.step_end(step + 1) <= t:
            return step + 1
        if self.step_end(step) <= t:
            return step
        return step - 1

    def phase(self, t: float) -> Phase:
        run = self.run
        if t < run.launched_t:
            return Phase.NOT_STARTED
        if t < run.train_start_t:
            return Phase.LOADING
        step = self.steps_done(t)
        if step >= run.total_steps:
            return Phase.DONE
        if step > run.first_step and step % run.eval_every == 0 and t < self.step_end(step) + run.eval_s:
            return Phase.EVAL
        return Phase.TRAIN

    def finished_t(self) -> float:
        """When the rank's process exits: shortly after its last step."""
        return self.step_end(self.run.total_steps) + 5.0

    def loss(self, step: int) -> float:
        run = self.run
        curve = run.loss
        noise = normal(self.loss_key, step) * curve.noise
        return curve.at(step) * (1.0 + noise)

    def val_loss(self, step: int) -> float:
        run = self.run
        curve = run.loss
        noise = normal(self.seed, _K_VAL, run.index, step) * curve.noise * 0.2
        return (curve.at(step) - curve.val_offset) * (1.0 + noise)

    def grad_norm(self, step: int) -> float:
        base: float = 0.35 + 2.5 * (1.0 + step / 400.0) ** -0.7
        return base * (1.0 + 0.15 * normal(self.grad_key, step))

    def step_time_s(self, step: int) -> float:
        """How long ``step`` itself took, evaluation before it excluded (what the log reports per step)."""
        took = self.step_end(step) - self.step_end(step - 1)
        if step - 1 > self.run.first_step and (step - 1) % self.run.eval_every == 0:
            took -= self.run.eval_s
        return took


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """What does not change about a GPU."""

    index: int
    uuid: str
    bus_id: str
    name: str = GPU_NAME
    total_mib: int = GPU_TOTAL_MIB
    power_limit_w: float = GPU_POWER_LIMIT_W


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one moment, in the units nvidia-smi prints (dmon rounds to whole numbers)."""

    index: int
    sm_pct: int
    mem_pct: int
    fb_used_mib: int
    power_w: float
    gpu_temp_c: int
    mem_temp_c: int
    sm_clock_mhz: int
    mem_clock_mhz: int
    bar1_mib: int


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process on a host: its place in the tree, when it runs, and what ps shows about it.

    ``started_t``/``ended_t`` are simulated times (None: since boot / still running). ``rank_env`` holds the
    rank variables of its environment (``RANK``, ``LOCAL_RANK``), in the order the environment lists them.
    ``gpu``/``gpu_mib``: the GPU it holds memory on, as ``--query-compute-apps`` lists it.
    """

    pid: int
    ppid: int
    args: str
    started_t: float
    cpu_pct: float
    rss_kib: int
    stat: str = "S"
    ended_t: float | None = None
    rank_env: tuple[tuple[str, str], ...] = ()
    gpu: int | None = None
    gpu_mib: int = 0
    rank: Rank | None = None

    def alive(self, t: float) -> bool:
        return self.started_t <= t and (self.ended_t is None or t < self.ended_t)


@dataclass(frozen=True, slots=True)
class SimHost:
    """One machine: its GPUs, the ranks on them, its processes and log files."""

    index: int
    name: str
    gpus: tuple[GpuSpec, ...]
    ranks: tuple[Rank, ...]
    processes: tuple[ProcessSpec, ...]
    # The GPU a non-training process holds memory on (and how much), if any.
    idle_gpu: int | None
    idle_gpu_mib: int
    drops: bool
    rank_of_gpu: MappingProxyType[int, Rank] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def logging_ranks(self) -> tuple[Rank, ...]:
        """The ranks on this host that write a log file."""
        return tuple(rank for rank in self.ranks if rank.writes_log)

    @property
    def log_paths(self) -> tuple[str, ...]:
        return tuple(rank.log_path for rank in self.logging_ranks)


def _host_names(count: int) -> tuple[str, ...]:
    width = len(str(count - 1))
    return tuple(f"node-{index:0{width}d}" for index in range(count))


def _uuid(seed: int, host: int, gpu: int) -> str:
    text = f"{mix(seed, _K_UUID, host, gpu):016x}{mix(seed, _K_UUID, host, gpu, 1):016x}"
    return f"GPU-{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:32]}"


def _bus_id(gpu: int) -> str:
    slot = _HGX_BUS_IDS[gpu] if gpu < len(_HGX_BUS_IDS) else f"{0xE0 + gpu - len(_HGX_BUS_IDS):02X}"
    return f"00000000:{slot}:00.0"


#: Up to this many hosts, llama-7b launched :data:`_LLAMA_LAUNCH_T` before the demo starts; on a bigger
#: cluster it launched :data:`_BIG_CLUSTER_LAUNCH_T` before. Every rank's log is replayed (``tail -n 500``,
#: and the listing sizes each file from its start) when the dashboard first connects, and building a log
#: line costs tens of microseconds: 64 hosts with ten minutes of history each meant ~300,000 lines built
#: while the simulator could answer nothing else, and hosts that took half a minute to come up.
BIG_CLUSTER_HOSTS: Final = 8
_LLAMA_LAUNCH_T: Final = -640.0
# Loading (40 s) and then about 110 steps by the start: a rate and an ETA at once, a fifth of the lines.
_BIG_CLUSTER_LAUNCH_T: Final = -160.0


def _llama_run(
    host_indexes: tuple[int, ...], gpus: int, launched_t: float = _LLAMA_LAUNCH_T, *, big: bool = False
) -> RunSpec:
    world_size = len(host_indexes) * gpus
    # On a big cluster only local ranks 0 log: the NaN is then reported by the third node's first rank.
    fault_rank = min(2 * gpus if big else 5, world_size - 1)
    return RunSpec(
        index=0,
        name="llama-7b",
        style=LogStyle.MEGATRON,
        host_indexes=host_indexes,
        gpus_per_host=gpus,
        total_steps=50_000,
        first_step=1_000,
        launched_t=launched_t,
        loading_s=40.0,
        step_s=1.1,
        eval_every=200,
        eval_s=18.0,
        lr_peak=3.0e-4,
        warmup_steps=500,
        loss=LossCurve(start=10.8, floor=1.7, k0=170.0, alpha=0.6, noise=0.02, val_offset=0.04),
        log_dir="/data/llama-7b/logs",
        process_pattern=r"pretrain_gpt\.py",
        script="pretrain_gpt.py",
        script_args=(
            "--num-layers 32 --hidden-size 4096 --ffn-hidden-size 11008 --num-attention-heads 32 "
            "--seq-length 4096 --max-position-embeddings 4096 --micro-batch-size 1 "
            "--train-iters 50000 --lr 3e-4 --min-lr 3e-5 --lr-decay-style cosine --lr-warmup-iters 500 "
            "--bf16 --use-flash-attn --swiglu --normalization RMSNorm --tokenizer-type Llama2Tokenizer "
            "--data-path /data/llama-7b/tokens/redpajama_text_document --save /ckpt/llama-7b "
            "--load /ckpt/llama-7b --log-interval 1 --eval-interval 200 --eval-iters 20 "
            "--save-interval 1000 --distributed-backend nccl"
        ),
        fault_rank=fault_rank,
        fault_every=677,
        fault_offset=1450 % 677,
    )


def _vit_run(host_index: int, gpus: int, *, big: bool = False) -> RunSpec:
    return RunSpec(
        index=1,
        name="vit-sweep",
        style=LogStyle.HF_TRAINER,
        host_indexes=(host_index,),
        gpus_per_host=gpus,
        total_steps=34_320,
        first_step=0,
        launched_t=-920.0,
        loading_s=25.0,
        step_s=0.42,
        eval_every=1000,
        eval_s=15.0,
        lr_peak=1.0e-3,
        warmup_steps=1500,
        loss=LossCurve(start=6.9, floor=2.2, k0=400.0, alpha=0.7, noise=0.03, val_offset=0.35),
        log_dir="/scratch/vit-sweep/trial-07/logs",
        process_pattern=r"run_image_classification\.py",
        script="run_image_classification.py",
        script_args=(
            "--model_name_or_path google/vit-base-patch16-224-in21k --dataset_name imagenet-1k "
            "--output_dir /scratch/vit-sweep/trial-07 --do_train --do_eval --learning_rate 1e-3 "
            "--per_device_train_batch_size 128 --num_train_epochs 24 --warmup_steps 1500 "
            "--weight_decay 0.05 --logging_steps 20 --eval_strategy steps --eval_steps 1000 --bf16"
        ),
        # On a big cluster only rank 0 logs, so it is the one whose NCCL warnings show.
        fault_rank=0 if big else min(3, gpus - 1),
        fault_every=1733,
        fault_offset=1900 % 1733,
        steps_per_epoch=1430,
        log_every=20,
    )


#: Which rank of llama-7b is slow: the fourth of the second host, or the last when there are fewer; on a big
#: cluster, where only local ranks 0 log, the first of the second host.
def _slow_rank(run: RunSpec, big: bool) -> int:
    return min(run.gpus_per_host + (0 if big else 3), run.world_size - 1)


SLOW_FACTOR: Final = 1.06


class Simulation:
    """The whole cluster: ``hosts`` machines with ``gpus_per_host`` GPUs each, two runs, fixed by ``seed``.

    ``drop`` is the schedule of the last host's outages (None: it never drops).
    """

    def __init__(
        self,
        hosts: int = 3,
        gpus_per_host: int = 8,
        *,
        seed: int = 1,
        drop: DropSchedule | None = DEFAULT_DROP,
    ) -> None:
        if hosts < 2:
            raise ValueError("the demo needs at least 2 hosts (one per run)")
        if gpus_per_host < 2:
            raise ValueError("the demo needs at least 2 GPUs per host")
        self.seed = seed
        self.drop = drop
        self.gpus_per_host = gpus_per_host
        names = _host_names(hosts)
        #: One log per host (each node's local rank 0) instead of one per rank: see the module docstring.
        self.one_log_per_host = hosts > BIG_CLUSTER_HOSTS
        big = self.one_log_per_host
        launched_t = _BIG_CLUSTER_LAUNCH_T if big else _LLAMA_LAUNCH_T
        llama = _llama_run(tuple(range(hosts - 1)), gpus_per_host, launched_t, big=big)
        vit = _vit_run(hosts - 1, gpus_per_host - 1, big=big)
        self.runs: tuple[RunSpec, ...] = (llama, vit)
        self.slow_rank = _slow_rank(llama, big)
        built = [self._build_host(index, name, names[0]) for index, name in enumerate(names)]
        self.hosts: tuple[SimHost, ...] = tuple(built)
        self.host_by_name = MappingProxyType({host.name: host for host in self.hosts})
        self.ranks: tuple[Rank, ...] = tuple(rank for host in self.hosts for rank in host.ranks)

    @property
    def dropping_host(self) -> SimHost | None:
        return next((host for host in self.hosts if host.drops), None)

    def run_named(self, name: str) -> RunSpec:
        return next(run for run in self.runs if run.name == name)

    def rank(self, run: str, rank: int) -> Rank:
        return next(entry for entry in self.ranks if entry.run.name == run and entry.rank == rank)

    def is_down(self, host: SimHost, t: float) -> bool:
        return host.drops and self.drop is not None and self.drop.is_down(t)

    # ------------------------------------------------------------------------------------------ building

    def _build_host(self, index: int, name: str, master: str) -> SimHost:
        seed = self.seed
        gpus = tuple(GpuSpec(gpu, _uuid(seed, index, gpu), _bus_id(gpu)) for gpu in range(self.gpus_per_host))
        run = next(run for run in self.runs if index in run.host_indexes)
        # Process ids: a boot's daemons low, the user's session and the run higher, varied per host.
        base = 30_000 + int(uniform(seed, _K_PID, index) * 20_000)
        processes = list(_system_processes(seed, index))
        tmux, shell = base, base + 1
        processes.append(ProcessSpec(tmux, 1, "tmux new-session -d -s train", -86_400.0, 0.0, 4_812, "Ss"))
        processes.append(ProcessSpec(shell, tmux, "-bash", -86_000.0, 0.0, 5_204, "Ss"))
        launcher_pid = base + 400
        node_rank = run.host_indexes.index(index)
        launcher = _launcher_args(run, node_rank, master)
        ranks: list[Rank] = []
        rank_of_gpu: dict[int, Rank] = {}
        for local in range(run.gpus_per_host):
            global_rank = node_rank * run.gpus_per_host + local
            slow = run.index == 0 and global_rank == self.slow_rank
            rank = Rank(
                run=run,
                rank=global_rank,
                host=index,
                local_rank=local,
                gpu=local,
                step_s=run.step_s * (SLOW_FACTOR if slow else 1.0),
                seed=seed,
                pid=launcher_pid + 31 + local * 2 + int(uniform(seed, _K_PID, index, local) * 2),
                slow=slow,
                writes_log=local == 0 or not self.one_log_per_host,
                jitter_key=mix(seed, _K_JITTER, run.index, global_rank),
            )
            ranks.append(rank)
            rank_of_gpu[local] = rank
        done_t = max(rank.finished_t() for rank in ranks)
        processes.append(
            ProcessSpec(launcher_pid, shell, launcher, run.launched_t - 3.0, 0.4, 412_000, "Sl", done_t + 2.0)
        )
        for rank in ranks:
            rss = 27_000_000 + int(uniform(seed, _K_PID, index, rank.rank, 7) * 6_000_000)
            cpu = 140.0 + uniform(seed, _K_PID, index, rank.rank, 8) * 90.0
            processes.append(
                ProcessSpec(
                    pid=rank.pid,
                    ppid=launcher_pid,
                    args=f"{PYTHON} -u {run.script} {run.script_args}",
                    started_t=run.launched_t,
                    cpu_pct=cpu,
                    rss_kib=rss,
                    stat="Sl",
                    ended_t=rank.finished_t(),
                    rank_env=(("LOCAL_RANK", str(rank.local_rank)), ("RANK", str(rank.rank))),
                    gpu=rank.gpu,
                    rank=rank,
                )
            )
        idle_gpu: int | None = None
        idle_mib = 0
        if run.index == 1:
            idle_gpu = self.gpus_per_host - 1
            idle_mib = 7_612
            jupyter = base + 90
            processes.append(
                ProcessSpec(
                    jupyter,
                    shell,
                    f"{PYTHON} /opt/conda/bin/jupyter-lab --no-browser --port 8888",
                    -30_000.0,
                    0.1,
                    182_400,
                    "Sl",
                )
            )
            processes.append(
                ProcessSpec(
                    jupyter + 57,
                    jupyter,
                    f"{PYTHON} -m ipykernel_launcher -f "
                    f"{DEMO_HOME}/.local/share/jupyter/runtime/kernel-3f2a9c1e.json",
                    -29_000.0,
                    0.2,
                    3_912_000,
                    "Ssl",
                    gpu=idle_gpu,
                    gpu_mib=idle_mib - 512,
                )
            )
        return SimHost(
            index=index,
            name=name,
            gpus=gpus,
            ranks=tuple(ranks),
            processes=tuple(sorted(processes, key=lambda process: process.pid)),
            idle_gpu=idle_gpu,
            idle_gpu_mib=idle_mib,
            drops=run.index == 1,
            rank_of_gpu=MappingProxyType(rank_of_gpu),
        )

    # ------------------------------------------------------------------------------------------ readings

    def gpu_readings(self, host: SimHost, t: float) -> tuple[GpuReading, ...]:
        return tuple(self.gpu_reading(host, gpu.index, t) for gpu in host.gpus)

    def gpu_reading(self, host: SimHost, gpu: int, t: float) -> GpuReading:
        """The GPU at ``t``: its load follows its rank; power, clocks and temperature follow the load."""
        seed, key = self.seed, host.index * 1024 + gpu
        rank = host.rank_of_gpu.get(gpu)
        phase = rank.phase(t) if rank is not None else Phase.NOT_STARTED
        sm = _sm_for(phase, seed, key, t)
        mem_pct = _mem_pct_for(phase, seed, key, t)
        # Temperature follows the load of the last 40 s, not of this instant.
        recent = [sm] + [
            _sm_for(rank.phase(t - back) if rank is not None else Phase.NOT_STARTED, seed, key, t - back)
            for back in (10.0, 20.0, 30.0, 40.0)
        ]
        load = sum(recent) / len(recent) / 100.0
        hot = rank is not None and rank.slow
        temp = (
            31.0
            + 38.0 * load
            + 3.0 * uniform(seed, _K_TEMP, key)
            + 1.2 * wobble(seed, _K_TEMP << 20 | key, t, 23.0)
        )
        if hot:
            temp += 16.0 * load
        busy = sm / 100.0
        power = GPU_IDLE_POWER_W + (GPU_POWER_LIMIT_W * 0.93 - GPU_IDLE_POWER_W) * busy**1.3
        power += (14.0 if busy > 0.05 else 2.5) * wobble(seed, _K_POWER << 20 | key, t, 3.0)
        if phase in (Phase.TRAIN, Phase.EVAL, Phase.LOADING):
            # Near the power limit the driver trims the SM clock in 15 MHz bins.
            over = max(0, int(power) - 640)
            clock = GPU_MAX_SM_CLOCK_MHZ - 15 * (over // 10)
            if hot:
                clock = 1395 + 15 * int(2.0 * (1.0 + wobble(seed, _K_CLOCK << 20 | key, t, 7.0)))
        else:
            clock = GPU_IDLE_SM_CLOCK_MHZ
        if rank is not None and phase in (Phase.TRAIN, Phase.EVAL):
            fb = (
                68_200
                + int(uniform(seed, _K_FB, key) * 5_000)
                + int(180 * wobble(seed, _K_FB << 20 | key, t, 11.0))
            )
            if phase is Phase.EVAL:
                fb += 1_350
        elif rank is not None and phase is Phase.LOADING:
            fb = int(30_000 * min(1.0, (t - rank.run.launched_t) / rank.run.loading_s))
        elif gpu == host.idle_gpu:
            fb = host.idle_gpu_mib
        else:
            fb = 0
        return GpuReading(
            index=gpu,
            sm_pct=sm,
            mem_pct=mem_pct,
            fb_used_mib=min(fb, GPU_TOTAL_MIB),
            power_w=round(min(power, GPU_POWER_LIMIT_W), 2),
            gpu_temp_c=round(temp),
            mem_temp_c=round(temp + 5.0 + 2.0 * load),
            sm_clock_mhz=clock,
            mem_clock_mhz=GPU_MEM_CLOCK_MHZ,
            bar1_mib=5 if fb else 1,
        )

    def live_processes(self, host: SimHost, t: float) -> tuple[ProcessSpec, ...]:
        return tuple(process for process in host.processes if process.alive(t))


def _sm_for(phase: Phase, seed: int, key: int, t: float) -> int:
    if phase is Phase.TRAIN:
        value = 96.0 + 3.5 * wobble(seed, _K_SM << 20 | key, t, 4.0)
    elif phase is Phase.EVAL:
        value = 34.0 + 9.0 * wobble(seed, _K_SM << 20 | key, t, 3.0)
    elif phase is Phase.LOADING:
        value = 4.0 + 4.0 * wobble(seed, _K_SM << 20 | key, t, 2.0)
    else:
        return 0
    return max(0, min(100, round(value)))


def _mem_pct_for(phase: Phase, seed: int, key: int, t: float) -> int:
    if phase is Phase.TRAIN:
        value = 54.0 + 6.0 * wobble(seed, _K_MEM << 20 | key, t, 5.0)
    elif phase is Phase.EVAL:
        value = 19.0 + 4.0 * wobble(seed, _K_MEM << 20 | key, t, 3.0)
    elif phase is Phase.LOADING:
        value = 2.0
    else:
        return 0
    return max(0, min(100, round(value)))


def _system_processes(seed: int, host: int) -> tuple[ProcessSpec, ...]:
    boot = -5 * 86_400.0 - 4_000.0 * uniform(seed, _K_PID, host, 99)
    return (
        ProcessSpec(1, 0, "/sbin/init", boot, 0.0, 13_180, "Ss"),
        ProcessSpec(612, 1, "/lib/systemd/systemd-journald", boot + 2, 0.0, 88_400, "Ss"),
        ProcessSpec(
            1043, 1, "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", boot + 5, 0.0, 9_232, "Ss"
        ),
        ProcessSpec(
            1120,
            1,
            "/usr/bin/nvidia-persistenced --user nvidia-persistenced --verbose",
            boot + 5,
            0.0,
            2_344,
            "Ss",
        ),
        ProcessSpec(
            1204,
            1,
            "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock",
            boot + 6,
            0.1,
            98_212,
            "Ssl",
        ),
        ProcessSpec(1288, 1, "/usr/sbin/cron -f", boot + 6, 0.0, 2_816, "Ss"),
        ProcessSpec(
            1391, 1, "/usr/bin/nv-hostengine -n --service-account nvidia-dcgm", boot + 7, 0.3, 41_032, "Ssl"
        ),
    )


def _launcher_args(run: RunSpec, node_rank: int, master: str) -> str:
    nodes = len(run.host_indexes)
    return (
        f"{PYTHON} /opt/conda/bin/torchrun --nnodes={nodes} --nproc-per-node={run.gpus_per_host} "
        f"--node-rank={node_rank} --rdzv-backend=c10d --rdzv-endpoint={master}:29500 "
        f"{run.script} {run.script_args}"
    )


def steps_per_second(rank: Rank) -> float:
    """The rank's mean training speed, evaluations included."""
    run = rank.run
    return run.eval_every / (run.eval_every * rank.step_s + run.eval_s)
