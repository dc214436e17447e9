"""Poll one host's processes into the store: the ps listing, which process holds which GPU, and each rank.

Every ``interval_s`` a :class:`ProcessCollector` runs, through its :class:`CommandRunner`:

1. ``ps`` (:data:`~trainmon_tui.parsers.ps.PS_ARGV`): every process; our own ``ps`` is left out.
2. At most one ``grep`` over ``/proc/PID/environ`` of the processes that could be ranks and whose
   environment has not been read yet (:func:`~trainmon_tui.analysis.ranks.environ_grep_argv`). An
   environment never changes after exec, so each process is read once; unreadable ones (another user's
   processes) are simply skipped. A run without a ``process`` pattern reads the processes that held GPU
   memory at the previous poll.
3. ``nvidia-smi --query-compute-apps`` (:data:`~trainmon_tui.parsers.smi_csv.QUERY_APPS_ARGV`): GPU <-> pid,
   handed to ``store.apply_compute_apps``, which maps GPU UUIDs to indexes from the GPUs it knows. It runs
   after the listing is stored, so a hanging nvidia-smi cannot hold the listing back. It runs when the
   processes that matter changed since its last answer (one started, one ended, a GPU holder left the
   listing) and otherwise every ``apps_refresh_s``: a steady run's GPU holders stay put, and each query is a
   channel and a process on the host. A process no run's pattern names is thus seen holding a GPU at most
   ``apps_refresh_s`` after it starts to. When it fails the
   mapping is emptied (once) and tried again after ``apps_retry_s``; the host is not marked as failing,
   because the GPUs' own state is the GPU collector's business.

Between steps 2 and 3, ranks are matched per run by :mod:`trainmon_tui.analysis.ranks` and remembered
across polls, so a rank that turns defunct keeps its number while ps still lists it; ``store.apply_processes``
gets the processes that matter (command lines cleaned of control sequences and secrets) with every run's
``pid -> rank``. A rank that disappears is simply no longer in the store's list: that list is the truth.

The processes that matter are those a run's ``process`` pattern matches, those holding GPU memory, those
whose environment gave a rank or that had a rank at the last poll, the ancestors of all of these, their
children, and the children of launchers among the ancestors: everything rank matching looks at, and
everything a report lists. Only their lines are parsed and cleaned (:func:`relevant_ps_lines` picks them with
one split per line); a busy host lists hundreds of processes every poll, and reading each one fully cost
more than all the rest of collecting. A process that starts holding GPU memory is added as soon as
``--query-compute-apps`` names it, from the same listing.

The host going down (:class:`TransportError`) is waited out with ``runner.wait_up()``; the session
reconnects by itself. A command that fails is logged when its failure starts and when it ends, not per poll.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any, NamedTuple

from trainmon_tui.analysis.ranks import (
    RankMemory,
    environ_candidates,
    environ_grep_argv,
    environ_ranks,
    is_launcher,
    match_ranks,
    parse_environ_grep,
)
from trainmon_tui.config import RunConfig
from trainmon_tui.model import ProcInfo
from trainmon_tui.parsers.ps import PS_ARGV, PS_COLUMNS, parse_ps
from trainmon_tui.parsers.smi_csv import QUERY_APPS_ARGV, QUERY_APPS_FIELDS, parse_compute_apps
from trainmon_tui.parsers.smi_status import classify_smi_failure
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import Store
from trainmon_tui.transport.remote import WRAPPER_NAME
from trainmon_tui.transport.runner import CommandRunner
from trainmon_tui.transport.session import TransportError
from trainmon_tui.transport.streams import ChannelRefusedError, CommandResult, OutputTooLargeError
from trainmon_tui.transport.ticks import sleep_until

_log = logging.getLogger(__name__)

# Every few seconds: a rank that died shows within 5 s, and each poll is a channel here and an sshd session,
# a shell and a ps on the host (polling the 64-host demo cluster every 3 s took about 3.5 % of a core here).
DEFAULT_INTERVAL_S = 5.0
#: How long one ps / nvidia-smi / grep may take before it counts as failed (and is killed).
DEFAULT_COMMAND_TIMEOUT_S = 10.0
#: After a failed --query-compute-apps, how long to wait before trying it again.
DEFAULT_APPS_RETRY_S = 30.0
#: Longest time between --query-compute-apps runs while the processes that matter stay the same.
DEFAULT_APPS_REFRESH_S = 15.0
#: Environments read per poll at most; the rest are read on the next polls (each is read only once).
MAX_ENVIRON_PIDS_PER_POLL = 512

#: How ps shows itself in its own listing.
PS_COMMAND = " ".join(PS_ARGV)
# grep exits 1 when nothing matched and 2 when some file could not be read (permission, process gone): both
# are normal here, and the output holds whatever was readable.
_GREP_STATUSES = frozenset({0, 1, 2})
_STDERR_SHOWN_CHARS = 200

# What each poll step is called in the log and in :attr:`ProcessCollector.problems`.
PS_STEP = "ps"
APPS_STEP = "nvidia-smi --query-compute-apps"
ENVIRON_STEP = "rank environment"


# parse_ps reads a line with this word (and no number) as a header naming the columns of the lines after it.
_PID_HEADER = "PID"
_PS_WIDTH = len(PS_COLUMNS)
_PID_AT = PS_COLUMNS.index("pid")
_PPID_AT = PS_COLUMNS.index("ppid")
# As parse_ps: longer digit strings are not pids (and int() refuses very long ones).
_MAX_PID_DIGITS = 18


class PsSelection(NamedTuple):
    """What :func:`relevant_ps_lines` picked out of a listing."""

    # The lines to parse, in listing order; None when the listing must be parsed whole.
    text: str | None
    # Every pid the listing shows.
    listed: frozenset[int]


def _is_pid(token: str) -> bool:
    return len(token) <= _MAX_PID_DIGITS and token.isascii() and token.isdigit()


def relevant_ps_lines(
    listing: str, patterns: Sequence[re.Pattern[str]], known_pids: Collection[int]
) -> PsSelection:
    """The lines of a :data:`PS_ARGV` listing that rank matching and the store need.

    Kept: processes a pattern matches (searched in the command line, as rank matching does), processes in
    ``known_pids``, the ancestors of both, their children, and the children of launchers among those
    ancestors. Parsing just these gives the same ranks as parsing everything. A listing with a header line
    (another ps format) is left to be parsed whole.
    """
    lines = listing.splitlines()
    parent: dict[int, int] = {}
    at_line: dict[int, int] = {}
    seeds: list[int] = []
    for index, line in enumerate(lines):
        # The loop every listed process goes through: C-level string methods only, no calls of our own.
        tokens = line.split(None, _PS_WIDTH - 1)
        if len(tokens) < _PS_WIDTH - 1:
            if _PID_HEADER in tokens:
                return PsSelection(None, frozenset(at_line))
            continue  # too short for a process: parse_ps skips it too
        pid_text, ppid_text = tokens[_PID_AT], tokens[_PPID_AT]
        if not (_is_pid(pid_text) and _is_pid(ppid_text)):
            if _PID_HEADER in tokens:
                return PsSelection(None, frozenset(at_line))
            continue
        pid = int(pid_text)
        at_line[pid] = index
        parent[pid] = int(ppid_text)
        if pid in known_pids:
            seeds.append(pid)
        elif patterns:
            command = tokens[-1].rstrip() if len(tokens) == _PS_WIDTH else ""
            if any(pattern.search(command) for pattern in patterns):
                seeds.append(pid)
    listed = frozenset(at_line)
    if not seeds:
        return PsSelection("", listed)
    kept = set(seeds)
    ancestors: set[int] = set()
    for pid in seeds:
        ancestor = parent.get(pid)
        while ancestor is not None and ancestor != pid and ancestor in at_line and ancestor not in ancestors:
            ancestors.add(ancestor)
            ancestor = parent.get(ancestor)
    kept |= ancestors
    # Whose children are kept: the seeds', and those of launchers above them (their other ranks).
    parents_kept = set(seeds)
    for pid in ancestors:
        tokens = lines[at_line[pid]].split(None, _PS_WIDTH - 1)
        if len(tokens) == _PS_WIDTH and is_launcher(tokens[-1].rstrip()):
            parents_kept.add(pid)
    kept.update(pid for pid, ppid in parent.items() if ppid in parents_kept and ppid != pid)
    chosen = sorted(at_line[pid] for pid in kept)
    return PsSelection("\n".join(lines[index] for index in chosen), listed)


class _Outcome(NamedTuple):
    result: CommandResult | None
    problem: str | None


def _is_own_ps(process: ProcInfo) -> bool:
    # Our ps, and the remote wrapper shell (and its watcher subshell) that runs it.
    return process.command == PS_COMMAND or process.command.endswith(f"{WRAPPER_NAME} {PS_COMMAND}")


# Memoised for the same reason as ranks.program_of: the same command lines come back every poll, and
# making one inert and masking its secrets runs a dozen regular expressions over it.
_clean_command = lru_cache(maxsize=8192)(clean_remote_text)


def _cleaned(process: ProcInfo) -> ProcInfo:
    command = _clean_command(process.command)
    return process if command == process.command else replace(process, command=command)


def _failure(program: str, result: CommandResult) -> str:
    text = result.stderr.strip() or result.stdout.strip()
    reason = classify_smi_failure(text) if program == "nvidia-smi" else None
    if reason is None:
        first_line = clean_remote_text(text.splitlines()[0] if text else "")[:_STDERR_SHOWN_CHARS]
        reason = first_line or "no message"
    return f"exit status {result.exit_status}: {reason}"


def _raise_lost_cancellation(task: asyncio.Task[Any] | None) -> None:
    """Raise CancelledError if this task was cancelled and the cancellation got lost on the way.

    On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising when a cancellation lands
    just as the awaited thing completes (CPython gh-86296), and the transport awaits through ``wait_for``
    (channel slots, channel close). Without this check a collector could outlive ``task.cancel()`` and keep
    whoever awaits it waiting forever. ``Task.cancelling()`` still counts the request in that case.
    """
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ProcessCollector:
    """Polls ps, compute apps and rank environments of one host into ``store`` until cancelled."""

    def __init__(
        self,
        runner: CommandRunner,
        store: Store,
        host: str,
        runs: Sequence[RunConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = DEFAULT_INTERVAL_S,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        apps_retry_s: float = DEFAULT_APPS_RETRY_S,
        apps_refresh_s: float = DEFAULT_APPS_REFRESH_S,
    ) -> None:
        if not interval_s > 0 or not command_timeout_s > 0 or apps_retry_s < 0 or apps_refresh_s < 0:
            raise ValueError(
                "interval_s and command_timeout_s must be positive, apps_retry_s and apps_refresh_s not "
                "negative"
            )
        self._runner = runner
        self._store = store
        self._host = host
        self._runs = tuple(runs)
        self._clock = clock
        self._interval_s = interval_s
        self._command_timeout_s = command_timeout_s
        self._apps_retry_s = apps_retry_s
        self._apps_refresh_s = apps_refresh_s
        # When compute apps last answered, and the pids stored after that poll (None: never answered).
        self._apps_answered_at: float | None = None
        self._apps_saw_pids: frozenset[int] | None = None
        self._memories = {run.name: RankMemory() for run in self._runs}
        self._patterns = tuple(run.process for run in self._runs if run.process is not None)
        # Ranks of the last poll, every pid of the last listing, and those of it that were stored.
        self._rank_pids: frozenset[int] = frozenset()
        self._listed_pids: frozenset[int] = frozenset()
        self._stored_pids: frozenset[int] = frozenset()
        # pid -> (command line it had when read, rank its environment gave or None).
        self._environ_read: dict[int, tuple[str, int | None]] = {}
        self._gpu_pids: frozenset[int] = frozenset()
        self._apps_retry_at: float | None = None
        self._apps_cleared = False
        self._problems: dict[str, str] = {}
        self._host_down = False

    @property
    def problems(self) -> Mapping[str, str]:
        """What fails right now, by poll step (``ps``, ``nvidia-smi --query-compute-apps`` ...)."""
        return dict(self._problems)

    async def run(self) -> None:
        """Poll every ``interval_s`` (measured start to start) until cancelled, waiting out host outages."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while True:
            started = loop.time()
            try:
                await self.poll()
            except TransportError as exc:
                if not self._host_down:
                    self._host_down = True
                    _log.info("%s: processes not polled while the host is down (%s)", self._host, exc.reason)
                await self._runner.wait_up()
                # Falls through to the pause: a host that reads as up but keeps dropping channels must not
                # be polled in a tight loop.
            else:
                self._recovered()
            _raise_lost_cancellation(task)
            await sleep_until(started + self._interval_s)

    def _recovered(self) -> None:
        if self._host_down:
            self._host_down = False
            _log.info("%s: polling processes again", self._host)

    async def poll(self) -> None:
        """One round: ps and new environments into the store, then compute apps. Raises TransportError if
        the host is down."""
        ps = await self._attempt(PS_ARGV)
        now = self._clock()
        problem = ps.problem
        if problem is None and ps.result is not None and ps.result.exit_status != 0:
            problem = _failure("ps", ps.result)
        self._report(PS_STEP, problem)
        listing = ps.result.stdout if problem is None and ps.result is not None else None
        if listing is not None:
            await self._store_processes(listing, now)
        # Last: a hanging nvidia-smi (a wedged driver) must not hold the process listing back.
        answered = await self._poll_compute_apps(now)
        if listing is not None and (self._gpu_pids & self._listed_pids) - self._stored_pids:
            # A process just started holding GPU memory: it is listed from now on (its environment is read
            # at the next poll, as for any GPU holder).
            await self._store_processes(listing, now, read_environ=False)
        if answered:
            self._apps_saw_pids = self._stored_pids

    async def _store_processes(self, listing: str, now: float, *, read_environ: bool = True) -> None:
        known = self._gpu_pids | self._environ_read.keys() | self._rank_pids
        selection = relevant_ps_lines(listing, self._patterns, known)
        parsed = parse_ps(listing if selection.text is None else selection.text)
        processes = [process for process in parsed if not _is_own_ps(process)]
        if read_environ:
            # GPU holders as of the previous poll: good enough to pick whose environment to read.
            ranks_from_environ = await self._environ_ranks(processes, self._gpu_pids)
        else:
            ranks_from_environ = self._known_environ_ranks()
        rank_of_pid: dict[int, int] = {}
        for run in self._runs:
            fresh = match_ranks(processes, run.process, ranks_from_environ)
            for pid, rank in self._memories[run.name].update(processes, fresh, now).items():
                rank_of_pid.setdefault(pid, rank)
        self._store.apply_processes(
            self._host, [_cleaned(process) for process in processes], now, rank_of_pid=rank_of_pid
        )
        self._rank_pids = frozenset(rank_of_pid)
        self._stored_pids = frozenset(process.pid for process in processes)
        self._listed_pids = self._stored_pids if selection.text is None else selection.listed

    async def _attempt(self, argv: Sequence[str]) -> _Outcome:
        """Run one command: a timeout or refused channel is a problem to report; a down host raises."""
        try:
            return _Outcome(await self._runner.run(argv, self._command_timeout_s), None)
        except TimeoutError:
            return _Outcome(None, f"no answer in {self._command_timeout_s:g} s")
        except (ChannelRefusedError, OutputTooLargeError, OSError) as exc:
            return _Outcome(None, clean_remote_text(str(exc)) or type(exc).__name__)

    def _apps_may_have_changed(self, now: float) -> bool:
        """Whether GPU holders can have changed since compute apps last answered (module docstring, 3)."""
        return (
            self._apps_answered_at is None
            or now - self._apps_answered_at >= self._apps_refresh_s
            or self._stored_pids != self._apps_saw_pids
            or not self._gpu_pids <= self._listed_pids
        )

    async def _poll_compute_apps(self, now: float) -> bool:
        """Store which pid holds which GPU, and remember the pids; empty when unknown. True if it answered."""
        if self._apps_retry_at is not None and now < self._apps_retry_at:
            return False
        if not self._apps_may_have_changed(now):
            return False
        outcome = await self._attempt(QUERY_APPS_ARGV)
        problem = outcome.problem
        if problem is None and outcome.result is not None and outcome.result.exit_status != 0:
            problem = _failure("nvidia-smi", outcome.result)
        self._report(APPS_STEP, problem)
        if problem is None and outcome.result is not None:
            apps = parse_compute_apps(outcome.result.stdout, QUERY_APPS_FIELDS)
            self._store.apply_compute_apps(self._host, apps, now)
            self._apps_retry_at = None
            self._apps_cleared = False
            self._gpu_pids = frozenset(app.pid for app in apps)
            self._apps_answered_at = now
            return True
        self._apps_retry_at = now + self._apps_retry_s
        self._apps_answered_at = None
        self._gpu_pids = frozenset()
        if not self._apps_cleared:
            self._store.apply_compute_apps(self._host, [], now)
            self._apps_cleared = True
        return False

    async def _environ_ranks(self, processes: Sequence[ProcInfo], gpu_pids: frozenset[int]) -> dict[int, int]:
        """pid -> rank from the environments of the listed processes, reading only those not read before."""
        by_pid = {process.pid: process for process in processes}
        # Forget processes that exited, and a pid whose command line changed (exec, or pid reuse).
        self._environ_read = {
            pid: entry
            for pid, entry in self._environ_read.items()
            if pid in by_pid and by_pid[pid].command == entry[0]
        }
        wanted: set[int] = set()
        for run in self._runs:
            if run.process is None:
                # No pattern: the processes holding GPU memory are the ones that may be ranks.
                wanted.update(pid for pid in gpu_pids if pid in by_pid and not by_pid[pid].defunct)
            else:
                wanted.update(environ_candidates(processes, run.process))
        unread = sorted(pid for pid in wanted if pid not in self._environ_read)[:MAX_ENVIRON_PIDS_PER_POLL]
        if unread:
            outcome = await self._attempt(environ_grep_argv(unread))
            problem = outcome.problem
            result = outcome.result
            if problem is None and result is not None and result.exit_status not in _GREP_STATUSES:
                problem = _failure("grep", result)
            self._report(ENVIRON_STEP, problem)
            if problem is None and result is not None:
                found = environ_ranks(parse_environ_grep(result.stdout))
                for pid in unread:
                    self._environ_read[pid] = (by_pid[pid].command, found.get(pid))
        return self._known_environ_ranks()

    def _known_environ_ranks(self) -> dict[int, int]:
        return {pid: rank for pid, (_, rank) in self._environ_read.items() if rank is not None}

    def _report(self, step: str, problem: str | None) -> None:
        """Log a step's failure when it starts or changes, and its recovery; not while it stays the same."""
        previous = self._problems.get(step)
        if problem == previous:
            return
        self._store.set_host_problem(self._host, step, problem, self._clock())
        if problem is None:
            del self._problems[step]
            _log.info("%s: %s works again", self._host, step)
        else:
            self._problems[step] = problem
            _log.warning("%s: %s failed: %s", self._host, step, problem)
