"""Which processes in a ps listing are a run's ranks, and which rank each one is: pure matching, no I/O.

A run names its processes with a regular expression over ps command lines. What it matches is more than the
ranks, and this module sorts it out:

* Launchers (``torchrun``, ``python -m torch.distributed.run``/``launch``, ``deepspeed``, ``accelerate
  launch``, ``mpirun``, ``srun`` ...) are not ranks; their direct children are, whatever their command line.
* Tools whose command line merely mentions the script (shells, ``tail -F train.log``, ``grep``, editors,
  ``timeout``, our own remote wrapper) are never ranks.
* A process below a possible rank that carries the same rank, or none, is that rank's helper - a forked
  DataLoader worker inherits its parent's environment and command line - not a rank of its own. A child
  with a *different* rank is a rank: PyTorch Lightning's rank 0 starts ranks 1..n-1 as its children.

Each rank's number comes from, best first: (1) its environment as read from ``/proc/PID/environ``
(:func:`rank_from_environ`: a global rank such as ``RANK`` is preferred over a per-node one such as
``LOCAL_RANK``), (2) its command line: ``--rank N`` (only next to ``--world_size``, because LoRA scripts
use ``--rank`` for the adapter's dimension), else ``--local_rank N`` made global with the ``--node_rank`` and
``--nproc_per_node`` of the process or of its launcher, (3) its position among a torch launcher's children
(they are started in local-rank order, so ascending pids), only when the launcher has exactly
``--nproc_per_node`` children and the position agrees with every rank already known, (4) a rank process
with no number whose rank children are exactly 1..k is rank 0 (Lightning again). Where nothing says, the
rank is unknown (None), never guessed as 0. Two processes claiming one rank: the older one keeps it.

:class:`RankMemory` carries a rank over polls, so a rank that turns defunct (a zombie has neither command
line nor environment) still shows with its number until it is reaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from trainmon_tui.model import ProcInfo

#: Environment variables that hold a process's global rank, most trusted first.
GLOBAL_RANK_VARIABLES: tuple[str, ...] = (
    "RANK",
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "PMIX_RANK",
    "SLURM_PROCID",
)
#: Variables that hold the rank within one node: used only when no global one is set.
LOCAL_RANK_VARIABLES: tuple[str, ...] = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
RANK_VARIABLES: tuple[str, ...] = GLOBAL_RANK_VARIABLES + LOCAL_RANK_VARIABLES
#: grep -E pattern for one NUL-separated environ entry that sets a rank variable (anchored, so that
#: torchrun's GROUP_RANK and ROLE_RANK do not match).
ENVIRON_GREP_PATTERN = "^(" + "|".join(RANK_VARIABLES) + ")="


def environ_grep_argv(pids: Iterable[int]) -> tuple[str, ...]:
    """One read-only command that prints the rank variables of many processes.

    ``-z``: environ entries are NUL-separated and so is the output; ``-H``: every entry is prefixed with its
    file name even for a single pid; ``-s``: unreadable files (other users' processes, processes that just
    exited) are skipped silently, which is normal, not an error; ``-a``: never "binary file matches".
    """
    paths = [f"/proc/{pid}/environ" for pid in pids]
    return ("grep", "-a", "-s", "-z", "-H", "-E", ENVIRON_GREP_PATTERN, "--", *paths)


_ENVIRON_RECORD = re.compile(r"/proc/([0-9]{1,10})/environ:([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
_SMALL_INT = re.compile(r"[0-9]{1,7}")


def parse_environ_grep(text: str) -> dict[int, dict[str, str]]:
    """pid -> variables from the output of :func:`environ_grep_argv`; records that do not fit are skipped.

    A variable set twice in one environment keeps its first value, as ``getenv`` would.
    """
    environs: dict[int, dict[str, str]] = {}
    for record in text.split("\0"):
        match = _ENVIRON_RECORD.fullmatch(record.lstrip("\n"))
        if match is None:
            continue
        variables = environs.setdefault(int(match[1]), {})
        variables.setdefault(match[2], match[3])
    return environs


def _small_int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if _SMALL_INT.fullmatch(text) else None


def rank_from_environ(variables: Mapping[str, str]) -> int | None:
    """The rank an environment gives: the first global rank variable set to a number, else the first local
    one."""
    for name in RANK_VARIABLES:
        rank = _small_int(variables.get(name))
        if rank is not None:
            return rank
    return None


def environ_ranks(environs: Mapping[int, Mapping[str, str]]) -> dict[int, int]:
    """pid -> rank for every environment in ``environs`` that names one."""
    ranks: dict[int, int] = {}
    for pid, variables in environs.items():
        rank = rank_from_environ(variables)
        if rank is not None:
            ranks[pid] = rank
    return ranks


# ----------------------------------------------------------------------------------------- command lines

_PYTHON = re.compile(r"(?:python|pypy)[0-9.]*(?:-dbg)?")
# Interpreter options that take the next word as their value.
_PYTHON_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "-Q"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_LAUNCHER_PROGRAMS = _words(
    "torchrun deepspeed accelerate-launch mpirun mpiexec orterun prterun horovodrun srun"
)
_LAUNCHER_MODULES = frozenset(
    {
        "torch.distributed.run",
        "torch.distributed.launch",
        "deepspeed.launcher.launch",
        "deepspeed.launcher.runner",
        "accelerate.commands.launch",
    }
)
# Programs that only start, follow or inspect a training process. Their command lines often name the
# script or its log (`tail -F train.log`, `sh -c "python train.py"`), but they are never a rank.
_NEVER_RANK_PROGRAMS = _words(
    "sh bash dash zsh ksh fish csh tcsh busybox env nohup timeout time setsid stdbuf nice ionice "
    "taskset numactl chrt sudo su runuser tmux screen conda mamba uv poetry pipenv pixi watch tee "
    "tail head less more cat grep egrep pgrep pkill kill ps top htop nvtop vi vim nvim nano emacs "
    "ssh scp rsync strace gdb py-spy perf nvidia-smi"
)


@dataclass(frozen=True, slots=True)
class Program:
    """What a command line runs: the executable's base name and, for a Python interpreter, the module
    (``-m``) or the script's base name."""

    name: str
    module: str | None = None
    script: str | None = None
    # The word after the executable or script (`accelerate launch` -> "launch").
    subcommand: str | None = None


def _basename(word: str) -> str:
    return word.rstrip("/").rpartition("/")[2]


# Memoised: a host's processes keep their command lines, and every ps poll asks about each of them several
# times (is it a launcher, never a rank); reading one means splitting the whole line.
@lru_cache(maxsize=8192)
def program_of(command: str) -> Program:
    """Read the executable, and for Python the module or script, off a ps command line.

    ps joins arguments with spaces, so an argument holding spaces reads as several words; only the first
    few words matter here and those are executables, options and paths.
    """
    words = command.split()
    if not words:
        return Program(name="")
    name = _basename(words[0])
    if _PYTHON.fullmatch(name) is None:
        return Program(name=name, subcommand=words[1] if len(words) > 1 else None)
    at = 1
    while at < len(words):
        word = words[at]
        if word == "-m" or (word.startswith("-m") and len(word) > 2 and not word.startswith("--")):
            module = words[at + 1] if word == "-m" and at + 1 < len(words) else word[2:]
            return Program(name=name, module=module or None)
        if word.startswith("-c") and not word.startswith("--"):
            return Program(name=name)
        if word in _PYTHON_OPTIONS_WITH_VALUE:
            at += 2
            continue
        if word.startswith("-") and word != "-":
            at += 1
            continue
        following = words[at + 1] if at + 1 < len(words) else None
        return Program(name=name, script=_basename(word), subcommand=following)
    return Program(name=name)


def is_launcher(command: str) -> bool:
    """A process that starts ranks and is not one (torchrun, deepspeed, accelerate launch, mpirun ...)."""
    program = program_of(command)
    if program.module is not None:
        return program.module in _LAUNCHER_MODULES
    runs = program.script if program.script is not None else program.name
    if runs == "accelerate":
        return program.subcommand == "launch"
    return runs in _LAUNCHER_PROGRAMS


def is_never_rank(command: str) -> bool:
    """A shell, pager, follower or other tool that may mention the training script but never trains."""
    return program_of(command).name in _NEVER_RANK_PROGRAMS


def _flag_pattern(*names: str) -> re.Pattern[str]:
    # `--name=N` or `--name N` as whole words; `_` and `-` are interchangeable in the names.
    alternatives = "|".join(re.escape(name).replace("_", "[_-]") for name in names)
    return re.compile(rf"(?<!\S)--(?:{alternatives})(?:=|\s+)([0-9]{{1,7}})(?!\S)")


_RANK_FLAG = _flag_pattern("rank", "global_rank")
_WORLD_SIZE_FLAG = _flag_pattern("world_size")
_LOCAL_RANK_FLAG = _flag_pattern("local_rank")
_NODE_RANK_FLAG = _flag_pattern("node_rank")
_NPROC_FLAG = _flag_pattern("nproc_per_node")


def _flag(command: str, pattern: re.Pattern[str]) -> int | None:
    match = pattern.search(command)
    return None if match is None else int(match[1])


def global_rank_flag(command: str) -> int | None:
    """``--rank N`` when the same command line also gives ``--world_size M`` with N < M, else None.

    Without the world size the flag is not trusted: LoRA training scripts use ``--rank`` for the
    adapter's dimension.
    """
    rank = _flag(command, _RANK_FLAG)
    world_size = _flag(command, _WORLD_SIZE_FLAG)
    if rank is None or world_size is None or rank >= world_size:
        return None
    return rank


def local_rank_flag(command: str) -> int | None:
    """``--local_rank N`` / ``--local-rank=N`` (what torch.distributed.launch and deepspeed pass)."""
    return _flag(command, _LOCAL_RANK_FLAG)


# --------------------------------------------------------------------------------------------- matching


class _Tree:
    """Parent links of one listing, walked safely even if pid reuse made a loop."""

    def __init__(self, processes: Sequence[ProcInfo]) -> None:
        self.by_pid: dict[int, ProcInfo] = {process.pid: process for process in processes}
        self.children: dict[int, list[int]] = {}
        for process in processes:
            if process.ppid is not None and process.ppid != process.pid:
                self.children.setdefault(process.ppid, []).append(process.pid)

    def ancestors(self, pid: int) -> list[int]:
        """Parent, grandparent ... that appear in the listing, nearest first."""
        found: list[int] = []
        seen = {pid}
        current = self.by_pid.get(pid)
        while current is not None and current.ppid is not None and current.ppid not in seen:
            seen.add(current.ppid)
            current = self.by_pid.get(current.ppid)
            if current is None:
                break
            found.append(current.pid)
        return found


def _candidates(
    tree: _Tree, pattern: re.Pattern[str] | None, environ_rank_of: Mapping[int, int]
) -> tuple[set[int], set[int]]:
    """(possible ranks, launchers) among the processes the run's pattern selects."""
    if pattern is None:
        selected = {pid for pid in environ_rank_of if pid in tree.by_pid}
    else:
        selected = {pid for pid, process in tree.by_pid.items() if pattern.search(process.command)}
    launchers = {pid for pid in selected if is_launcher(tree.by_pid[pid].command)}
    possible = {pid for pid in selected - launchers if not is_never_rank(tree.by_pid[pid].command)}
    for launcher in launchers:
        for child in tree.children.get(launcher, ()):
            command = tree.by_pid[child].command
            if not is_launcher(command) and not is_never_rank(command):
                possible.add(child)
    return possible, launchers


def environ_candidates(processes: Sequence[ProcInfo], pattern: re.Pattern[str]) -> set[int]:
    """The pids whose environment is worth reading for a run: those that could be its ranks, less zombies
    (a zombie's environment reads empty)."""
    tree = _Tree(processes)
    possible, _ = _candidates(tree, pattern, {})
    return {pid for pid in possible if not tree.by_pid[pid].defunct}


def _nearest_launcher(tree: _Tree, pid: int) -> ProcInfo | None:
    for ancestor in tree.ancestors(pid):
        process = tree.by_pid[ancestor]
        if is_launcher(process.command):
            return process
    return None


def _rank_from_command(tree: _Tree, process: ProcInfo) -> int | None:
    command = process.command
    rank = global_rank_flag(command)
    if rank is not None:
        return rank
    local = local_rank_flag(command)
    if local is None:
        return None
    launcher = _nearest_launcher(tree, process.pid)
    launcher_command = launcher.command if launcher is not None else ""
    node_rank = _flag(command, _NODE_RANK_FLAG)
    if node_rank is None:
        node_rank = _flag(launcher_command, _NODE_RANK_FLAG)
    if not node_rank:
        # No node rank anywhere (a single-node launch) or node 0: local and global ranks are the same.
        return local
    per_node = _flag(command, _NPROC_FLAG) or _flag(launcher_command, _NPROC_FLAG)
    if per_node is None or local >= per_node:
        return None
    return node_rank * per_node + local


def _positions_under_launchers(
    tree: _Tree, launchers: Iterable[ProcInfo], known: Mapping[int, int | None]
) -> dict[int, int]:
    """Ranks from the order a torch launcher started its children in, where that order can be trusted."""
    inferred: dict[int, int] = {}
    for launcher in launchers:
        per_node = _flag(launcher.command, _NPROC_FLAG)
        children = sorted(tree.children.get(launcher.pid, ()))
        if per_node is None or len(children) != per_node:
            continue
        base = (_flag(launcher.command, _NODE_RANK_FLAG) or 0) * per_node
        expected = {child: base + position for position, child in enumerate(children)}
        if any(known.get(child) not in (None, rank) for child, rank in expected.items()):
            continue
        inferred.update(expected)
    return inferred


def _age_order(process: ProcInfo) -> tuple[int, int]:
    # Oldest first: the longest elapsed time, then the lowest pid; an unknown age counts as youngest.
    return (-(process.elapsed_s if process.elapsed_s is not None else -1), process.pid)


def _oldest_keeps_rank(
    by_pid: Mapping[int, ProcInfo], ranks: Mapping[int, int | None]
) -> tuple[dict[int, int | None], bool]:
    """Where several processes claim one rank, only the oldest keeps it (the others are dropped); and
    whether that happened (the answer then depends on the processes' ages)."""
    claimants: dict[int, list[ProcInfo]] = {}
    for pid, rank in ranks.items():
        if rank is not None:
            claimants.setdefault(rank, []).append(by_pid[pid])
    losers = {
        process.pid
        for processes in claimants.values()
        if len(processes) > 1
        for process in sorted(processes, key=_age_order)[1:]
    }
    return {pid: rank for pid, rank in ranks.items() if pid not in losers}, bool(losers)


def find_rank_processes(
    processes: Sequence[ProcInfo],
    pattern: re.Pattern[str] | None,
    environ_ranks: Mapping[int, int],
) -> dict[int, int | None]:
    """pid -> rank (None where unknown) of every rank process of the run that ``pattern`` selects.

    ``environ_ranks`` is pid -> rank from the processes' environments (:func:`rank_from_environ`); pids not
    in it had no rank variable or could not be read. Without a pattern, the processes with an environment
    rank are the candidates.
    """
    return _rank_processes(processes, pattern, environ_ranks)[0]


def _rank_processes(
    processes: Sequence[ProcInfo],
    pattern: re.Pattern[str] | None,
    environ_ranks: Mapping[int, int],
) -> tuple[dict[int, int | None], bool]:
    """:func:`find_rank_processes`, and whether the processes' ages decided it (see _oldest_keeps_rank):
    otherwise the answer depends only on their pids, parents and command lines."""
    tree = _Tree(processes)
    possible, _ = _candidates(tree, pattern, environ_ranks)
    # Ancestors up to the nearest launcher: what a launcher starts is a new set of ranks, never a helper of
    # whatever started the launcher.
    launcher_of: dict[int, bool] = {}
    ancestors: dict[int, list[int]] = {}
    for pid in possible:
        below_launcher: list[int] = []
        for ancestor in tree.ancestors(pid):
            if ancestor not in launcher_of:
                launcher_of[ancestor] = is_launcher(tree.by_pid[ancestor].command)
            if launcher_of[ancestor]:
                break
            below_launcher.append(ancestor)
        ancestors[pid] = below_launcher
    own: dict[int, int | None] = {}
    for pid in possible:
        rank = environ_ranks.get(pid)
        own[pid] = rank if rank is not None else _rank_from_command(tree, tree.by_pid[pid])
    # A helper (a forked DataLoader worker ...) carries the rank of a possible rank above it, or no rank.
    ranks: dict[int, int | None] = {
        pid: rank
        for pid, rank in own.items()
        if not any(ancestor in own and rank in (None, own[ancestor]) for ancestor in ancestors[pid])
    }
    parents = {tree.by_pid[pid].ppid for pid in ranks}
    launchers = [
        tree.by_pid[parent]
        for parent in parents
        if parent in tree.by_pid and is_launcher(tree.by_pid[parent].command)
    ]
    for pid, rank in _positions_under_launchers(tree, launchers, ranks).items():
        if pid in ranks and ranks[pid] is None:
            ranks[pid] = rank
    # Lightning's rank 0 is the user's own process; it starts ranks 1..n-1 as its children.
    ranks_below: dict[int, set[int | None]] = {}
    for pid, rank in ranks.items():
        for ancestor in ancestors[pid]:
            if ancestor in ranks and ranks[ancestor] is None:
                ranks_below.setdefault(ancestor, set()).add(rank)
    for pid, below in ranks_below.items():
        if below == set(range(1, len(below) + 1)):
            ranks[pid] = 0
    return _oldest_keeps_rank(tree.by_pid, ranks)


def match_ranks(
    processes: Sequence[ProcInfo],
    pattern: re.Pattern[str] | None,
    environ_ranks: Mapping[int, int],
) -> dict[int, int]:
    """pid -> rank of the run's rank processes whose rank is known (see :func:`find_rank_processes`)."""
    return _known_ranks(find_rank_processes(processes, pattern, environ_ranks))


def _known_ranks(found: Mapping[int, int | None]) -> dict[int, int]:
    return {pid: rank for pid, rank in found.items() if rank is not None}


class RankMatcher:
    """:func:`match_ranks` for one run, listing after listing, worked out again only when its inputs changed.

    A host lists its processes every few seconds, and between two listings a run's processes usually stay
    the same: only their CPU, memory and elapsed times move, which the answer does not depend on (ages
    decide only between processes that claim one rank, and such an answer is never reused).
    """

    def __init__(self) -> None:
        self._inputs: tuple[object, ...] | None = None
        self._ranks: dict[int, int] = {}

    def match(
        self,
        processes: Sequence[ProcInfo],
        pattern: re.Pattern[str] | None,
        environ_ranks: Mapping[int, int],
    ) -> dict[int, int]:
        inputs = (
            pattern,
            [(process.pid, process.ppid, process.command) for process in processes],
            dict(environ_ranks),
        )
        if inputs != self._inputs:
            found, ages_decided = _rank_processes(processes, pattern, environ_ranks)
            self._ranks = _known_ranks(found)
            self._inputs = None if ages_decided else inputs
        return dict(self._ranks)


# ----------------------------------------------------------------------------------------------- memory

#: How far apart two estimates of one process's start may be (ps prints whole seconds; polls jitter).
START_TOLERANCE_S = 3.0


@dataclass(frozen=True, slots=True)
class _Remembered:
    rank: int
    # Start time on the caller's clock (now - elapsed): tells this process from a later one on the same pid.
    started: float | None


class RankMemory:
    """The ranks of one run across polls: a rank stays attached to its pid while that process lives on.

    A rank that turns defunct loses the command line and environment that identified it; remembering its
    pid keeps it visible as that rank until its parent reaps it (then ps no longer lists it, and neither
    do we). A pid that ps lists again but for a process started later (pid reuse) is forgotten.
    """

    def __init__(self) -> None:
        self._known: dict[int, _Remembered] = {}

    def update(self, processes: Sequence[ProcInfo], ranks: Mapping[int, int], now: float) -> dict[int, int]:
        """This poll's ranks (``ranks``, from :func:`match_ranks`) plus remembered ones still listed (alive or
        defunct)."""
        by_pid = {process.pid: process for process in processes}
        merged: dict[int, int | None] = {pid: rank for pid, rank in ranks.items() if pid in by_pid}
        for pid, remembered in self._known.items():
            process = by_pid.get(pid)
            if pid in merged or process is None or not self._same_process(remembered, process, now):
                continue
            merged[pid] = remembered.rank
        kept, _ = _oldest_keeps_rank(by_pid, merged)
        result = {pid: rank for pid, rank in kept.items() if rank is not None}
        self._known = {pid: _Remembered(rank, _started(by_pid[pid], now)) for pid, rank in result.items()}
        return result

    @staticmethod
    def _same_process(remembered: _Remembered, process: ProcInfo, now: float) -> bool:
        started = _started(process, now)
        if remembered.started is None or started is None:
            return True
        return abs(started - remembered.started) <= START_TOLERANCE_S


def _started(process: ProcInfo, now: float) -> float | None:
    return None if process.elapsed_s is None else now - process.elapsed_s
