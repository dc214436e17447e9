"""Keep one host's processes in the store: the ps listing, which process holds which GPU, and each rank.

The listing comes from one long-running command per host, read line by line as a stream
(:meth:`~trainmon_tui.transport.runner.CommandRunner.stream`, as the GPU collector reads ``nvidia-smi dmon``):
a one-line ``sh`` loop (:data:`PS_LOOP_SCRIPT`, started by :func:`ps_loop_argv`) that runs ``ps``
(:data:`~trainmon_tui.parsers.ps.PS_ARGV`), prints the :data:`LISTING_END` line and sleeps ``interval_s``,
over and over. Running ``ps`` as a command of its own every few seconds cost, each time and for each host,
a channel opened and closed here (with asyncssh's logging of each channel event) and an sshd session, a
shell and the lifeline wrapper on the host; at 64 hosts that churn was a large share of the dashboard's CPU.
The loop holds one of the host's channel slots instead, for as long as it runs, and the host forks only a
``ps`` and a ``sleep`` per listing. It only reads: nothing on the host is changed, and the wrapper kills it
when its channel closes.

For each complete listing (the lines up to the marker) a :class:`ProcessCollector` does, in order:

1. The listing into the store. Our own loop shell, its ``ps`` and ``sleep`` and the wrapper shell that runs
   the loop are left out, recognised by their exact command lines.
2. At most one ``grep`` over ``/proc/PID/environ`` of the processes that could be ranks and whose
   environment has not been read yet (:func:`~trainmon_tui.analysis.ranks.environ_grep_argv`). An
   environment never changes after exec, so each process is read once; unreadable ones (another user's
   processes) are simply skipped. A run without a ``process`` pattern reads the processes that held GPU
   memory at the previous listing.
3. ``nvidia-smi --query-compute-apps`` (:data:`~trainmon_tui.parsers.smi_csv.QUERY_APPS_ARGV`): GPU <-> pid,
   handed to ``store.apply_compute_apps``, which maps GPU UUIDs to indexes from the GPUs it knows. It runs
   after the listing is stored, so a hanging nvidia-smi cannot hold the listing back. It runs when the
   processes that matter changed since its last answer (one started, one ended, a GPU holder left the
   listing) and otherwise every ``apps_refresh_s``: a steady run's GPU holders stay put, and each query is a
   channel and a process on the host. A process no run's pattern names is thus seen holding a GPU at most
   ``apps_refresh_s`` after it starts to. When it fails the
   mapping is emptied (once) and tried again after ``apps_retry_s``; the host is not marked as failing,
   because the GPUs' own state is the GPU collector's business.

The grep and the query are short commands of their own (``runner.run()``): they run only when something
changed, not with every listing.

Between steps 2 and 3, ranks are matched per run by :mod:`trainmon_tui.analysis.ranks` and remembered
across listings, so a rank that turns defunct keeps its number while ps still lists it;
``store.apply_processes`` gets the processes that matter (command lines cleaned of control sequences and
secrets) with every run's ``pid -> rank``. A rank that disappears is simply no longer in the store's list:
that list is the truth.

The processes that matter are those a run's ``process`` pattern matches, those holding GPU memory, those
whose environment gave a rank or that had a rank at the last listing, the ancestors of all of these, their
children, and the children of launchers among the ancestors: everything rank matching looks at, and
everything a report lists. Only their lines are parsed and cleaned (:func:`relevant_ps_lines` picks them with
one split per line); a busy host lists hundreds of processes every listing, and reading each one fully cost
more than all the rest of collecting. A process that starts holding GPU memory is added as soon as
``--query-compute-apps`` names it, from the same listing.

When listings stop, the ``ps`` step of :attr:`ProcessCollector.problems` says why, and the loop is started
again ``interval_s`` later, never at once (a loop that keeps failing costs a channel per ``interval_s``):

* The loop ended (``ps`` missing: exit status 127; ``ps`` refusing its options; killed on the host): its
  exit status and the first line of its stderr.
* No complete listing came within ``interval_s + command_timeout_s`` of the previous one (a hung ``ps``):
  "no listing in N s"; the loop is stopped and started again.
* A listing longer than :data:`MAX_LISTING_LINES` lines or :data:`MAX_LISTING_CHARS` characters is not held
  (it would grow memory without bound) and not stored; the previous listing stays in the store.

The host going down (:class:`TransportError`) is waited out with ``runner.wait_up()``; the session
reconnects by itself. A step that fails is logged when its failure starts and when it ends, not per
listing; the first complete listing after a failure clears the ``ps`` problem.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any, Final, NamedTuple

from trainmon_tui.analysis.ranks import (
    RankMatcher,
    RankMemory,
    environ_candidates,
    environ_grep_argv,
    environ_ranks,
    is_launcher,
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
from trainmon_tui.transport.runner import BufferedLineStream, CommandRunner, LineStream
from trainmon_tui.transport.session import TransportError
from trainmon_tui.transport.streams import (
    DEFAULT_MAX_OUTPUT_BYTES,
    ChannelRefusedError,
    CommandResult,
    OutputTooLargeError,
)
from trainmon_tui.transport.ticks import sleep_until

_log = logging.getLogger(__name__)

# Every few seconds: a rank that died shows within 5 s. Each listing forks a ps and a sleep on the host.
DEFAULT_INTERVAL_S = 5.0
#: How long one nvidia-smi / grep may take before it counts as failed (and is killed); a listing may come
#: this much later than ``interval_s`` after the previous one before the loop counts as hung.
DEFAULT_COMMAND_TIMEOUT_S = 10.0
#: After a failed --query-compute-apps, how long to wait before trying it again.
DEFAULT_APPS_RETRY_S = 30.0
#: Longest time between --query-compute-apps runs while the processes that matter stay the same. A change
#: among them is queried at once; this only catches a listed process that starts holding GPU memory later
#: (its memory shows in the GPU rows at once; which pid holds it, within this). Each run is a channel opened
#: and closed here and an nvidia-smi on the host: at 64 hosts, every 15 s cost ~3 ms of CPU a second here.
DEFAULT_APPS_REFRESH_S = 60.0
#: Environments read per listing at most; the rest are read at the next listings (each is read only once).
MAX_ENVIRON_PIDS_PER_POLL = 512
#: Lines one listing may have: far beyond any sane process table. A longer listing is dropped unread, so a
#: runaway one (not our loop's output, a fork bomb) cannot grow memory without bound.
MAX_LISTING_LINES = 100_000
#: Characters one listing may have, as a short command's output may (a line alone is capped by the stream).
MAX_LISTING_CHARS = DEFAULT_MAX_OUTPUT_BYTES

#: How ps shows itself in its own listing.
PS_COMMAND = " ".join(PS_ARGV)
#: ``$0`` of the listing loop: names it in ``ps`` and in the shell's own error messages ("trainmon-ps: 1: ps:
#: not found").
PS_LOOP_NAME: Final = "trainmon-ps"
#: The line the loop prints after each listing. A process line starts with its pid, so it can never be one.
LISTING_END: Final = "--trainmon-ps-end--"
# One line on purpose (csh-family login shells reject newlines inside quotes) and no single quotes (the
# runner single-quotes it). `exit` alone exits with the status of the command that just failed: the loop ends
# when ps fails (missing, refusing its options, or killed by SIGPIPE once the channel is gone), and also when
# printing the marker or sleeping fails, so it can never spin without pause. printf, not echo: POSIX leaves
# echo's handling of an argument starting with "-" open. The interval is "$1", never part of the script.
PS_LOOP_SCRIPT: Final = (
    f"while :; do {shlex.join(PS_ARGV)} || exit; "
    f'printf "%s\\n" {LISTING_END} || exit; '
    'sleep "$1" || exit; done'
)

# grep exits 1 when nothing matched and 2 when some file could not be read (permission, process gone): both
# are normal here, and the output holds whatever was readable.
_GREP_STATUSES = frozenset({0, 1, 2})
_STDERR_SHOWN_CHARS = 200

# What each step is called in the log and in :attr:`ProcessCollector.problems`.
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


def ps_loop_argv(interval_s: float) -> tuple[str, ...]:
    """The command that prints a listing every ``interval_s`` seconds (the interval stays an argument)."""
    # Plain decimals to the millisecond: sleep(1) of GNU, BusyBox and the BSDs reads those, not every one
    # reads an exponent ("1e-05"). Never "0": the loop must pause between listings.
    seconds = f"{max(interval_s, 0.001):.3f}".rstrip("0").rstrip(".")
    return ("sh", "-c", PS_LOOP_SCRIPT, PS_LOOP_NAME, seconds)


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
    return RelevantLines().select(listing, patterns, known_pids)


class RelevantLines:
    """:func:`relevant_ps_lines` for one host's listings, one after another.

    Which lines are kept depends only on each process's pid, parent and command line (and on the patterns
    and the pids asked about), and those stay the same from one listing to the next while a run goes on:
    only CPU, memory and elapsed times move. While they stay, the lines are taken at the places found last
    time, without searching command lines or walking the process tree again.
    """

    def __init__(self) -> None:
        self._inputs: tuple[object, ...] | None = None
        self._chosen: list[int] = []
        self._listed: frozenset[int] = frozenset()

    def select(
        self, listing: str, patterns: Sequence[re.Pattern[str]], known_pids: Collection[int]
    ) -> PsSelection:
        lines = listing.splitlines()
        rows = [line.split(None, _PS_WIDTH - 1) for line in lines]
        # Per line what the choice reads: whether it is a process, its pid, parent and command.
        inputs = (
            list(patterns),
            set(known_pids),
            [(len(tokens), tokens[:2], tokens[-1:]) for tokens in rows],
        )
        if inputs != self._inputs:
            indexed = _index_rows(rows)
            if indexed is None:
                self._inputs = None
                return _select_line_by_line(lines, rows, patterns, known_pids)
            pids, parent, at_line = indexed
            seeds = [pid for pid in pids if pid in known_pids]
            if patterns:
                for pid, tokens in zip(pids, rows, strict=True):
                    if pid not in known_pids:
                        command = tokens[-1].rstrip() if len(tokens) == _PS_WIDTH else ""
                        if any(pattern.search(command) for pattern in patterns):
                            seeds.append(pid)
            self._chosen = _with_family(rows, seeds, parent, at_line)
            self._listed = frozenset(at_line)
            self._inputs = inputs
        return PsSelection("\n".join([lines[index] for index in self._chosen]), self._listed)


def _select_line_by_line(
    lines: list[str], rows: list[list[str]], patterns: Sequence[re.Pattern[str]], known_pids: Collection[int]
) -> PsSelection:
    """The selection from a listing with lines other than processes: a header, blank or foreign lines."""
    parent: dict[int, int] = {}
    at_line: dict[int, int] = {}
    seeds: list[int] = []
    for index, tokens in enumerate(rows):
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
    chosen = _with_family(rows, seeds, parent, at_line)
    return PsSelection("\n".join([lines[index] for index in chosen]), frozenset(at_line))


def _index_rows(rows: list[list[str]]) -> tuple[list[int], dict[int, int], dict[int, int]] | None:
    """(pids, pid -> parent, pid -> line) of a listing whose every line is a process (the usual case), each
    worked out by one C-level pass over the listing; None when a line is not (the line-by-line way then)."""
    if not rows or min(map(len, rows)) < _PS_WIDTH - 1:
        return None
    pid_texts = [tokens[_PID_AT] for tokens in rows]
    ppid_texts = [tokens[_PPID_AT] for tokens in rows]
    digits = "".join(pid_texts) + "".join(ppid_texts)
    if not (
        digits.isascii()
        and digits.isdigit()
        and max(map(len, pid_texts)) <= _MAX_PID_DIGITS
        and max(map(len, ppid_texts)) <= _MAX_PID_DIGITS
    ):
        return None
    pids = list(map(int, pid_texts))
    return (
        pids,
        dict(zip(pids, map(int, ppid_texts), strict=True)),
        dict(zip(pids, range(len(pids)), strict=True)),
    )


def _with_family(
    rows: list[list[str]], seeds: list[int], parent: dict[int, int], at_line: dict[int, int]
) -> list[int]:
    """The lines, in listing order, of the seeds, their ancestors, their children and the children of
    launchers among the ancestors."""
    if not seeds:
        return []
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
        tokens = rows[at_line[pid]]
        if len(tokens) == _PS_WIDTH and is_launcher(tokens[-1].rstrip()):
            parents_kept.add(pid)
    kept.update(pid for pid, ppid in parent.items() if ppid in parents_kept and ppid != pid)
    return sorted(at_line[pid] for pid in kept)


class _Outcome(NamedTuple):
    result: CommandResult | None
    problem: str | None


class _OwnCommands(NamedTuple):
    """The command lines, as ps shows them, of what lists a host: none of them is a process of a run."""

    # The loop shell: `sh -c SCRIPT trainmon-ps SECONDS`.
    loop: str
    # The remote wrapper shell (and its watcher subshell) running the loop end with this.
    wrapped_loop: str
    # What the loop sleeps on between listings.
    sleep: str

    @classmethod
    def of(cls, loop_argv: Sequence[str]) -> _OwnCommands:
        loop = " ".join(loop_argv)
        return cls(loop, f"{WRAPPER_NAME} {loop}", f"sleep {loop_argv[-1]}")


def _is_own_ps(process: ProcInfo, own: _OwnCommands, loop_pids: Collection[int]) -> bool:
    """Whether ``process`` is our listing at work: the loop shell, its ps, its sleep, the wrapper around it.

    Only exact command lines count, and a ``sleep`` only as a child of the loop: a user's own ``sleep 5``
    stays listed. A ps with exactly :data:`PS_ARGV`, alone or under the wrapper, is ours too (an older
    trainmon polling the same host runs it as a command of its own).
    """
    command = process.command
    return (
        command in (PS_COMMAND, own.loop)
        or (command == own.sleep and process.ppid in loop_pids)
        or command.endswith((own.wrapped_loop, f"{WRAPPER_NAME} {PS_COMMAND}"))
    )


# Memoised for the same reason as ranks.program_of: the same command lines come back every listing, and
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


def _loop_ended(stream: LineStream) -> str:
    """The ``ps`` problem once the loop has ended: its exit status and what it said on stderr."""
    if stream.exit_status is None:
        return "listing loop ended without an exit status"
    return _failure("ps", CommandResult(stream.exit_status, "", stream.stderr_tail))


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
    """Follows one host's ps listings, and collects compute apps and rank environments with each, into
    ``store`` until cancelled."""

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
        self._loop_argv = ps_loop_argv(interval_s)
        self._own = _OwnCommands.of(self._loop_argv)
        # When compute apps last answered, and the pids stored after that listing (None: never answered).
        self._apps_answered_at: float | None = None
        self._apps_saw_pids: frozenset[int] | None = None
        self._memories = {run.name: RankMemory() for run in self._runs}
        self._matchers = {run.name: RankMatcher() for run in self._runs}
        self._relevant_lines = RelevantLines()
        self._patterns = tuple(run.process for run in self._runs if run.process is not None)
        # Ranks of the last listing, every pid of the last listing, and those of it that were stored.
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
        """What fails right now, by step (``ps``, ``nvidia-smi --query-compute-apps`` ...)."""
        return dict(self._problems)

    @property
    def loop_argv(self) -> tuple[str, ...]:
        """The listing loop this collector runs on the host (:func:`ps_loop_argv` of its interval)."""
        return self._loop_argv

    async def run(self) -> None:
        """Follow the host's listings until cancelled: the loop is started again ``interval_s`` after it
        stops, and host outages are waited out."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while True:
            started = loop.time()
            try:
                problem = await self._follow(task)
            except TransportError as exc:
                if not self._host_down:
                    self._host_down = True
                    _log.info("%s: processes not listed while the host is down (%s)", self._host, exc.reason)
                await self._runner.wait_up()
                _raise_lost_cancellation(task)
                # A host that reads as up but keeps dropping channels must not get a new loop in a tight
                # loop; one whose loop ran for long gets the next as soon as it is back.
                await sleep_until(started + self._interval_s)
                continue
            self._report(PS_STEP, problem)
            _raise_lost_cancellation(task)
            # A loop that fails at once (ps missing) would otherwise be started again and again.
            await sleep_until(loop.time() + self._interval_s)

    def _recovered(self) -> None:
        if self._host_down:
            self._host_down = False
            _log.info("%s: listing processes again", self._host)

    async def _follow(self, task: asyncio.Task[Any] | None) -> str:
        """Take every listing of one run of the loop; once it stops, why (the ``ps`` problem). Raises
        TransportError when the host is lost."""
        try:
            async with self._runner.stream(self._loop_argv) as stream:
                # Opening awaits the transport's channel slot: a cancellation may have got lost in there.
                _raise_lost_cancellation(task)
                return await self._read_listings(stream, task)
        except ChannelRefusedError as exc:
            return f"channel refused: {clean_remote_text(str(exc))}"
        except OSError as exc:
            return clean_remote_text(str(exc)) or type(exc).__name__

    async def _read_listings(self, stream: LineStream, task: asyncio.Task[Any] | None) -> str:
        """Take each complete listing as its end marker arrives, until the loop ends or stays silent.

        One timer watches the whole stream, moved after each listing, rather than a timeout per line. It is
        off while a listing is taken: the grep and nvidia-smi that may follow have timeouts of their own,
        and meanwhile the next listing waits in the stream.
        """
        loop = asyncio.get_running_loop()
        patience = self._interval_s + self._command_timeout_s
        end, max_lines, max_chars = LISTING_END, MAX_LISTING_LINES, MAX_LISTING_CHARS
        # A real host lists hundreds of processes (kernel threads too) every few seconds: the lines already
        # received are taken as one list and cut at the markers, not passed one by one through `async for`.
        take_lines = stream.take_lines if isinstance(stream, BufferedLineStream) else None
        lines: list[str] = []
        chars = 0
        too_large = False
        deadline = asyncio.timeout(patience)
        try:
            async with deadline:
                async for line in stream:
                    batch = [line]
                    if take_lines is not None:
                        batch += take_lines()
                    start = 0
                    while True:
                        try:
                            at = batch.index(end, start)
                        except ValueError:
                            at = -1
                        piece = batch[start:] if at < 0 else batch[start:at]
                        if piece and not too_large:
                            chars += sum(map(len, piece))
                            if chars <= max_chars and len(lines) + len(piece) <= max_lines:
                                lines += piece
                            else:
                                too_large = True
                                lines = []
                        if at < 0:
                            break
                        start = at + 1
                        deadline.reschedule(None)
                        if too_large:
                            self._report(
                                PS_STEP, f"listing over {max_lines} lines or {max_chars} characters: not read"
                            )
                        else:
                            await self._take_listing("\n".join(lines))
                        lines, chars, too_large = [], 0, False
                        # The grep and nvidia-smi go through the transport's waits too.
                        _raise_lost_cancellation(task)
                        deadline.reschedule(loop.time() + patience)
        except TimeoutError:
            if not deadline.expired():
                raise
            return f"no listing in {patience:g} s"
        # A listing cut short by the loop's end is not stored: ps may have died half way through it.
        return _loop_ended(stream)

    async def _take_listing(self, listing: str) -> None:
        """One listing and new environments into the store, then compute apps. Raises TransportError if the
        host is down."""
        now = self._clock()
        self._report(PS_STEP, None)
        self._recovered()
        await self._store_processes(listing, now)
        # Last: a hanging nvidia-smi (a wedged driver) must not hold the process listing back.
        answered = await self._poll_compute_apps(now)
        if (self._gpu_pids & self._listed_pids) - self._stored_pids:
            # A process just started holding GPU memory: it is listed from now on (its environment is read
            # with the next listing, as for any GPU holder).
            await self._store_processes(listing, now, read_environ=False)
        if answered:
            self._apps_saw_pids = self._stored_pids

    async def _store_processes(self, listing: str, now: float, *, read_environ: bool = True) -> None:
        known = self._gpu_pids | self._environ_read.keys() | self._rank_pids
        selection = self._relevant_lines.select(listing, self._patterns, known)
        parsed = parse_ps(listing if selection.text is None else selection.text)
        own = self._own
        loop_pids = {process.pid for process in parsed if process.command == own.loop}
        processes = [process for process in parsed if not _is_own_ps(process, own, loop_pids)]
        if read_environ:
            # GPU holders as of the previous listing: good enough to pick whose environment to read.
            ranks_from_environ = await self._environ_ranks(processes, self._gpu_pids)
        else:
            ranks_from_environ = self._known_environ_ranks()
        rank_of_pid: dict[int, int] = {}
        for run in self._runs:
            fresh = self._matchers[run.name].match(processes, run.process, ranks_from_environ)
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
