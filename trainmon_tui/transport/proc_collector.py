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
   after the listing is stored, so a hanging nvidia-smi cannot hold the listing back. When it fails the
   mapping is emptied (once) and tried again after ``apps_retry_s``; the host is not marked as failing,
   because the GPUs' own state is the GPU collector's business.

Between steps 2 and 3, ranks are matched per run by :mod:`trainmon_tui.analysis.ranks` and remembered
across polls, so a rank that turns defunct keeps its number while ps still lists it; ``store.apply_processes``
gets the whole listing (command lines cleaned of control sequences and secrets) with every run's
``pid -> rank``. A rank that disappears is simply no longer in the store's list: that list is the truth.

The host going down (:class:`TransportError`) is waited out with ``runner.wait_up()``; the session
reconnects by itself. A command that fails is logged when its failure starts and when it ends, not per poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from trainmon_tui.analysis.ranks import (
    RankMemory,
    environ_candidates,
    environ_grep_argv,
    environ_ranks,
    match_ranks,
    parse_environ_grep,
)
from trainmon_tui.config import RunConfig
from trainmon_tui.model import ProcInfo
from trainmon_tui.parsers.ps import PS_ARGV, parse_ps
from trainmon_tui.parsers.smi_csv import QUERY_APPS_ARGV, QUERY_APPS_FIELDS, parse_compute_apps
from trainmon_tui.parsers.smi_status import classify_smi_failure
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import Store
from trainmon_tui.transport.remote import WRAPPER_NAME
from trainmon_tui.transport.runner import CommandRunner
from trainmon_tui.transport.session import TransportError
from trainmon_tui.transport.streams import ChannelRefusedError, CommandResult, OutputTooLargeError

_log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 3.0
#: How long one ps / nvidia-smi / grep may take before it counts as failed (and is killed).
DEFAULT_COMMAND_TIMEOUT_S = 10.0
#: After a failed --query-compute-apps, how long to wait before trying it again.
DEFAULT_APPS_RETRY_S = 30.0
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


class _Outcome(NamedTuple):
    result: CommandResult | None
    problem: str | None


def _is_own_ps(process: ProcInfo) -> bool:
    # Our ps, and the remote wrapper shell (and its watcher subshell) that runs it.
    return process.command == PS_COMMAND or process.command.endswith(f"{WRAPPER_NAME} {PS_COMMAND}")


def _cleaned(process: ProcInfo) -> ProcInfo:
    command = clean_remote_text(process.command)
    return process if command is process.command else replace(process, command=command)


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
    ) -> None:
        if not interval_s > 0 or not command_timeout_s > 0 or apps_retry_s < 0:
            raise ValueError("interval_s and command_timeout_s must be positive, apps_retry_s not negative")
        self._runner = runner
        self._store = store
        self._host = host
        self._runs = tuple(runs)
        self._clock = clock
        self._interval_s = interval_s
        self._command_timeout_s = command_timeout_s
        self._apps_retry_s = apps_retry_s
        self._memories = {run.name: RankMemory() for run in self._runs}
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
            await asyncio.sleep(max(0.0, self._interval_s - (loop.time() - started)))

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
        if problem is None and ps.result is not None:
            await self._store_processes(ps.result.stdout, now)
        # Last: a hanging nvidia-smi (a wedged driver) must not hold the process listing back.
        await self._poll_compute_apps(now)

    async def _store_processes(self, listing: str, now: float) -> None:
        processes = [process for process in parse_ps(listing) if not _is_own_ps(process)]
        # GPU holders as of the previous poll: good enough to pick whose environment to read.
        ranks_from_environ = await self._environ_ranks(processes, self._gpu_pids)
        rank_of_pid: dict[int, int] = {}
        for run in self._runs:
            fresh = match_ranks(processes, run.process, ranks_from_environ)
            for pid, rank in self._memories[run.name].update(processes, fresh, now).items():
                rank_of_pid.setdefault(pid, rank)
        self._store.apply_processes(
            self._host, [_cleaned(process) for process in processes], now, rank_of_pid=rank_of_pid
        )

    async def _attempt(self, argv: Sequence[str]) -> _Outcome:
        """Run one command: a timeout or refused channel is a problem to report; a down host raises."""
        try:
            return _Outcome(await self._runner.run(argv, self._command_timeout_s), None)
        except TimeoutError:
            return _Outcome(None, f"no answer in {self._command_timeout_s:g} s")
        except (ChannelRefusedError, OutputTooLargeError, OSError) as exc:
            return _Outcome(None, clean_remote_text(str(exc)) or type(exc).__name__)

    async def _poll_compute_apps(self, now: float) -> None:
        """Store which pid holds which GPU, and remember the pids; empty when unknown."""
        if self._apps_retry_at is not None and now < self._apps_retry_at:
            return
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
            return
        self._apps_retry_at = now + self._apps_retry_s
        self._gpu_pids = frozenset()
        if not self._apps_cleared:
            self._store.apply_compute_apps(self._host, [], now)
            self._apps_cleared = True

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
        return {pid: rank for pid, (_, rank) in self._environ_read.items() if rank is not None}

    def _report(self, step: str, problem: str | None) -> None:
        """Log a step's failure when it starts or changes, and its recovery; not while it stays the same."""
        previous = self._problems.get(step)
        if problem == previous:
            return
        if problem is None:
            del self._problems[step]
            _log.info("%s: %s works again", self._host, step)
        else:
            self._problems[step] = problem
            _log.warning("%s: %s failed: %s", self._host, step, problem)
