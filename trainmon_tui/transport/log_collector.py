"""Follow one run's training logs on one host: find the files, tail them, parse each line into the store.

A :class:`LogCollector` lists the files the run's ``logs`` patterns match *on the host*, every
``rescan_interval_s`` while the listing changes (new rank files appear while a run starts) or a pattern
matches nothing, and less often, up to every ``rescan_max_interval_s``, while it stays the same; it follows
each file with ``tail -F``, which keeps following a log through rotation and truncation. Every line goes
through the file's own :class:`~trainmon_tui.parsers.trainlog.engine.LogParser` (its default rank taken from
the file name) into :meth:`Store.apply_record` / :meth:`Store.apply_event`. Patterns that match nothing, files
it may not read and ``tail`` failures become the run's status on that host (:meth:`Store.set_run_status`),
once per change.

Listing is one read-only command: a fixed ``sh`` script receives the patterns as arguments ("$@") and globs
each one through an unquoted ``$p`` with ``IFS`` empty. The text of a pattern is therefore only ever *data*:
parameter expansion results undergo pathname expansion and nothing else - no command substitution, no
``;``, no quote removal, no word splitting (a space stays part of the name). For each regular file it prints
device, inode, size and a checksum of the first :data:`HEAD_BYTES` bytes, NUL-terminated (any name a file
system allows survives), after a leading NUL that separates the records from anything a chatty shell rc file
may print first. Only ``~`` and ``~/`` at the start of a pattern are expanded (to ``$HOME``).

Channels: a host's SSH connection has a budget of 8 channels, shared with the GPU and process collectors and
the other runs, so a run uses at most ``max_streams`` ``tail`` processes. Up to that many files get one each;
beyond it, files share a ``tail -F a b c`` whose output is split again by the ``==> FILE <==`` headers tail
prints when it switches files. Adding a file to a shared ``tail`` restarts it.

Restarts never count a line twice: each file remembers the last lines it delivered, and a restarted
``tail -n N`` (after a reconnect, a regrouping, or another host taking the file over) drops everything up to
and including them; when they are not among the lines replayed, the whole replay is new and is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from trainmon_tui.config import RunConfig
from trainmon_tui.model import LogEvent, LogRecord
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.parsers.trainlog.paths import rank_from_path
from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.store import Store
from trainmon_tui.transport.runner import CommandRunner
from trainmon_tui.transport.session import TransportError
from trainmon_tui.transport.streams import ChannelRefusedError, OutputTooLargeError
from trainmon_tui.transport.ticks import DEFAULT_DELIVERY_TICK_S, on_grid

_log = logging.getLogger(__name__)

#: How many leading bytes of a file its identity checksums (see :class:`FileClaims`).
HEAD_BYTES = 1024
#: ``tail`` processes one run may hold on one host (each holds a channel of the host's 8).
DEFAULT_MAX_STREAMS = 2
#: How many of the last delivered lines recognise where a replay caught up.
ANCHOR_LINES = 3
#: A listing that takes longer than this is stopped (a hung network file system blocks ``stat``).
LIST_TIMEOUT_S = 20.0
#: Pause after losing the host before waiting for it again: the session needs a moment to notice the loss.
RETRY_DELAY_S = 1.0
#: How much longer than ``rescan_interval_s`` a listing that keeps coming back the same may wait, at most:
#: ``tail -F`` follows rotation and truncation itself, so a steady run needs the listing only for new files.
RESCAN_BACKOFF_MAX = 4
#: Files a host stopped following whose progress is kept for whoever follows them next.
MAX_HANDOVERS = 1024
#: ``$0`` of the listing script: names it in ``ps`` and in the shell's own error messages.
LIST_SCRIPT_NAME = "trainmon-ls"

# One line on purpose (csh-family login shells reject newlines inside quotes), no single quotes. Records:
#   F <pattern#> <dev> <inode> <size> <crc> <crc-length> <path>   a readable regular file
#   U <pattern#> <path>                                           a regular file this user may not read
#   E <pattern#> <path>                                           stat or checksum failed on an existing file
#   M|N|P <pattern#>        the pattern matched no regular file: missing / not a regular file / denied,
#                           which is when the deepest directory of it that exists may not be searched or read
LIST_SCRIPT = (
    'IFS=; printf "\\0"; i=0; '
    'for p in "$@"; do i=$((i+1)); '
    'case $p in "~"|"~/"*) p=$HOME${p#"~"};; esac; '
    "n=0; "
    "for f in $p; do "
    '[ -f "$f" ] || continue; n=$((n+1)); '
    'if [ ! -r "$f" ]; then printf "U %s %s\\0" "$i" "$f"; '
    'elif s=$(stat -L -c "%d %i %s" -- "$f") && '
    f'h=$(head -c {HEAD_BYTES} -- "$f" | cksum); then '
    'printf "F %s %s %s %s\\0" "$i" "$s" "$h" "$f"; '
    'elif [ -e "$f" ]; then printf "E %s %s\\0" "$i" "$f"; fi; '
    "done; "
    "if [ $n = 0 ]; then "
    'if [ -e "$p" ]; then printf "N %s\\0" "$i"; '
    "else d=$p; "
    'while case $d in */*) d=${d%/*}; d=${d:-/};; *) d=.;; esac; [ ! -e "$d/" ]; do :; done; '
    'if [ -x "$d/" ] && [ -r "$d/" ]; then printf "M %s\\0" "$i"; else printf "P %s\\0" "$i"; fi; '
    "fi; fi; "
    "done"
)

_MISSING_MESSAGES = {
    "M": "no such file",
    "N": "not a regular file",
    "P": "permission denied",
}

# What `tail -F` says on stderr while working as intended: rotation, truncation, a file coming and going.
_TAIL_NOTICES = (
    "file truncated",
    "has been replaced",
    "has appeared",
    "has become inaccessible",
    "following new file",
    "cannot open",
    "no such file or directory",
    "inotify",
    "directory containing watched file was removed",
)


def list_argv(patterns: Sequence[str]) -> list[str]:
    """The command that lists what ``patterns`` match on a host (the patterns stay arguments, never code)."""
    return ["sh", "-c", LIST_SCRIPT, LIST_SCRIPT_NAME, *patterns]


def tail_argv(paths: Sequence[str], lines: int) -> list[str]:
    """``tail`` printing the last ``lines`` lines of each file, then following each by name."""
    return ["tail", "-n", str(max(lines, 0)), "-F", "--", *paths]


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What says two hosts list the same file: its path, inode and a checksum of its first bytes.

    ``head_len`` is how many bytes the checksum covers (the whole file while it is under :data:`HEAD_BYTES`).
    """

    path: str
    inode: int
    head_crc: int
    head_len: int


@dataclass(frozen=True, slots=True)
class ListedFile:
    """A readable regular file a pattern matched. ``device`` is meaningful on this host only."""

    path: str
    device: int
    inode: int
    size: int
    head_crc: int
    head_len: int

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(self.path, self.inode, self.head_crc, self.head_len)


@dataclass(frozen=True, slots=True)
class Listing:
    """The files the patterns matched (each once, in pattern order) and what kept others from being read."""

    files: tuple[ListedFile, ...]
    problems: tuple[str, ...]


def _pattern(patterns: Sequence[str], number: str) -> str | None:
    if not number.isdigit() or not 1 <= int(number) <= len(patterns):
        return None
    return patterns[int(number) - 1]


def _listed_file(fields: list[str]) -> ListedFile | None:
    # fields: dev inode size crc crc-length path
    numbers = fields[:5]
    if not all(text.isdigit() for text in numbers):
        return None
    device, inode, size, crc, length = (int(text) for text in numbers)
    return ListedFile(fields[5], device, inode, size, crc, length)


def _usable_name(path: str) -> bool:
    # U+FFFD: bytes that were not UTF-8, so the name we would pass back to tail is not the file's name.
    # A newline would make tail's "==> name <==" headers ambiguous.
    return bool(path) and "\ufffd" not in path and "\n" not in path


def parse_listing(stdout: str, patterns: Sequence[str]) -> Listing:
    """Read the listing script's output; records that do not fit its format (shell noise) are ignored.

    A file listed twice (two patterns, or two names for one file: a symlink) is kept once, under the first
    name: on one host, device and inode identify a file.
    """
    files: list[ListedFile] = []
    seen: set[tuple[int, int]] = set()
    problems: list[str] = []
    for record in stdout.split("\0"):
        kind, _, rest = record.partition(" ")
        if kind == "F":
            fields = rest.split(" ", 6)
            if len(fields) != 7 or _pattern(patterns, fields[0]) is None:
                continue
            listed = _listed_file(fields[1:])
            if listed is None:
                continue
            if not _usable_name(listed.path):
                problems.append(f"unsupported file name: {listed.path!r}")
            elif (listed.device, listed.inode) not in seen:
                seen.add((listed.device, listed.inode))
                files.append(listed)
        elif kind in ("U", "E"):
            number, _, path = rest.partition(" ")
            if _pattern(patterns, number) is None or not path:
                continue
            reason = "permission denied" if kind == "U" else "cannot read file information"
            problems.append(f"{reason}: {path}")
        elif kind in _MISSING_MESSAGES:
            pattern = _pattern(patterns, rest)
            if pattern is not None:
                problems.append(f"{_MISSING_MESSAGES[kind]}: {pattern}")
    return Listing(tuple(files), tuple(clean_remote_text(problem) for problem in problems))


def tail_exit_reason(exit_status: int | None, stderr_tail: str) -> str:
    """Why a ``tail -F`` ended, in one line: its last error, leaving out the notices it prints while following
    rotated, truncated or re-created files (those are tail doing its job, not failures)."""
    errors = [
        line.strip()
        for line in stderr_tail.splitlines()
        if line.strip() and not any(notice in line.lower() for notice in _TAIL_NOTICES)
    ]
    status = "without status" if exit_status is None else f"with status {exit_status}"
    detail = f": {errors[-1]}" if errors else ""
    return clean_remote_text(f"tail exited {status}{detail}")


class FileProgress:
    """How far one file has been read: its parser, the last lines it delivered, and how many lines and bytes.

    It outlives the ``tail`` that read it: a restarted ``tail`` (or another host following the same file on a
    shared file system) continues with the same parser and skips what was already delivered.
    """

    __slots__ = ("delivered_bytes", "delivered_lines", "parser", "recent")

    def __init__(self, parser: LogParser) -> None:
        self.parser = parser
        self.recent: deque[str] = deque(maxlen=ANCHOR_LINES)
        self.delivered_bytes = 0
        # The parser's line count: the number of the next line is one more (the log book numbers lines so).
        self.delivered_lines = 0


class FileClaims:
    """Which host reads which log file, shared by all collectors of one run (one event loop, no locks).

    When hosts share a file system, every host lists the same files; each must be read once, or every line
    would count twice. The first collector to list a file claims it; the others skip it while the claim holds.
    A claim ends when its holder stops following the file (the file is gone, the host went down, the
    collector stopped); another host listing it then takes it over, with its progress, so nothing is read
    twice.

    The rule for "the same file" on two hosts is path + inode + a checksum of the first :data:`HEAD_BYTES`
    bytes, and *not* the device number or the size:

    - device numbers are not comparable across hosts: an NFS mount gets an anonymous device number from
      each client's kernel in mount order, so one file has different ``st_dev`` values on two clients;
      within a host they are (the listing uses device:inode to read a file with two names once);
    - inode numbers are: NFS reports the server's file id, and Lustre, GPFS and CephFS cluster-wide numbers;
    - size and mtime are not: a log that is being written grows between two hosts' listings, so comparing
      them would never match the one case that matters, a live log on shared storage;
    - the same path and inode can still be two different local files (nodes installed from one image), and
      the checksum of the first bytes tells them apart, since logs differ early (times, host names, pids).
      It is stable while a log only grows, and changes when the file is replaced or truncated and
      rewritten - then it is a new file, claimed anew.

    Two different local files with the same path, inode and first 1 KiB would be read once; a file on
    shared storage mounted at different paths on two hosts is read twice. While a file is shorter than
    :data:`HEAD_BYTES` its identity changes as it grows, so two hosts may both read a brand-new shared log
    for a moment; the later one lets go at its next rescan, once the identities agree.
    """

    def __init__(self) -> None:
        self._holders: dict[FileIdentity, str] = {}
        self._handovers: OrderedDict[FileIdentity, FileProgress] = OrderedDict()

    def holder(self, identity: FileIdentity) -> str | None:
        """The host reading the file now, if any."""
        return self._holders.get(identity)

    def claim(self, owner: str, identity: FileIdentity) -> bool:
        """Claim the file for ``owner``; False when another host holds it."""
        holder = self._holders.setdefault(identity, owner)
        return holder == owner

    def release(self, owner: str, identity: FileIdentity, progress: FileProgress | None = None) -> None:
        """End ``owner``'s claim; ``progress`` is kept for whoever follows the file next."""
        if self._holders.get(identity) != owner:
            return
        del self._holders[identity]
        if progress is not None:
            self._handovers[identity] = progress
            self._handovers.move_to_end(identity)
            while len(self._handovers) > MAX_HANDOVERS:
                self._handovers.popitem(last=False)

    def take_progress(self, identity: FileIdentity) -> FileProgress | None:
        """The progress the last holder left behind (once), or None.

        A file that was under :data:`HEAD_BYTES` when it was let go has grown since, so its identity moved:
        the same path and inode with at least as many bytes checksummed count as the same file. Should it be
        a different file after all, nothing is lost: its last lines are not in the replay, so
        :class:`ReplaySkipper` delivers the whole replay.
        """
        progress = self._handovers.pop(identity, None)
        if progress is not None:
            return progress
        for earlier in self._handovers:
            if (
                earlier.path == identity.path
                and earlier.inode == identity.inode
                and earlier.head_len < HEAD_BYTES
                and earlier.head_len <= identity.head_len
            ):
                return self._handovers.pop(earlier)
        return None


class ReplaySkipper:
    """Holds the lines a restarted ``tail -n N`` prints again until it can tell old from new.

    ``anchor`` is the last lines delivered before the restart. Lines are held until the anchor turns up
    (everything up to it is dropped, the rest is new) or until the replay is known to be over without it:
    ``max_lines`` lines seen (tail replays at most N) or ``max_bytes`` bytes seen (where the anchor ends in
    the file at the latest: the file's size at the last listing plus what was delivered since that listing
    began). Then everything held is new.
    """

    __slots__ = ("_anchor", "_bytes", "_held", "_max_bytes", "_max_lines", "done")

    def __init__(self, anchor: Sequence[str], max_lines: int, max_bytes: int) -> None:
        self._anchor = list(anchor)
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._held: list[str] = []
        self._bytes = 0
        self.done = not self._anchor or max_lines <= 0 or max_bytes <= 0

    def feed(self, line: str) -> list[str]:
        """The lines that are new, now (none while still catching up)."""
        if self.done:
            return [line]
        self._held.append(line)
        self._bytes += len(line.encode("utf-8", errors="replace")) + 1
        width = len(self._anchor)
        if self._held[-width:] == self._anchor:
            self.done = True
            self._held = []
            return []
        if len(self._held) >= self._max_lines or self._bytes >= self._max_bytes:
            self.done = True
            held, self._held = self._held, []
            return held
        return []


class TailDemux:
    """Splits the output of one ``tail`` over several files back into (file, line) pairs.

    With several files, tail prints ``==> FILE <==`` whenever the next output comes from another file, with
    one blank line before it except the first. A header counts only when it names one of our files exactly,
    so a log line that merely looks like a header stays a line; of the blank lines right before a header,
    the last is tail's separator and the others are the file's own. With one file there are no headers.
    """

    __slots__ = ("_blanks", "_current", "_headers", "_single")

    def __init__(self, paths: Sequence[str]) -> None:
        self._single = paths[0] if len(paths) == 1 else None
        self._headers = {f"==> {path} <==": path for path in paths}
        self._current: str | None = None
        self._blanks = 0

    def _pending_blanks(self, count: int) -> list[tuple[str, str]]:
        if self._current is None or count <= 0:
            return []
        return [(self._current, "")] * count

    def feed(self, line: str) -> list[tuple[str, str]]:
        if self._single is not None:
            return [(self._single, line)]
        if not line:
            self._blanks += 1
            return []
        path = self._headers.get(line)
        if path is not None:
            out = self._pending_blanks(self._blanks - 1)
            self._current = path
            self._blanks = 0
            return out
        out = self._pending_blanks(self._blanks)
        self._blanks = 0
        if self._current is not None:
            out.append((self._current, line))
        return out

    def flush(self) -> list[tuple[str, str]]:
        out = self._pending_blanks(self._blanks)
        self._blanks = 0
        return out


@dataclass(slots=True)
class _Followed:
    """A file this collector follows: what the last listing said about it and how far it was read.

    ``delivered_at_listing`` is ``progress.delivered_bytes`` from just before that listing began: the lines
    delivered since may lie beyond the size it reported.
    """

    listed: ListedFile
    progress: FileProgress
    delivered_at_listing: int

    def replay_bytes_bound(self) -> int:
        """Bytes a restarted tail replays at most before the last delivered line must have come by."""
        return self.listed.size + self.progress.delivered_bytes - self.delivered_at_listing


@dataclass(slots=True, eq=False)
class _Group:
    """One ``tail`` process and the files it follows."""

    paths: tuple[str, ...]
    task: asyncio.Task[None] | None = None
    problem: str | None = None
    delivered: bool = False
    skippers: dict[str, ReplaySkipper] = field(default_factory=dict)


class LogCollector:
    """Follows the logs of ``run`` on ``host`` into ``store``, until cancelled; survives the host going down.

    ``claims`` is shared by the collectors of this run on all its hosts (see :class:`FileClaims`). A run
    without ``logs`` has nothing to follow: :meth:`run` then just waits to be cancelled.
    """

    def __init__(
        self,
        runner: CommandRunner,
        store: Store,
        host: str,
        run: RunConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        claims: FileClaims,
        rescan_interval_s: float = 30.0,
        rescan_max_interval_s: float | None = None,
        max_streams: int = DEFAULT_MAX_STREAMS,
        retry_delay_s: float = RETRY_DELAY_S,
        wake_grid_s: float = DEFAULT_DELIVERY_TICK_S,
    ) -> None:
        """``rescan_max_interval_s``: the longest wait between listings once they keep coming back the same
        (the wait doubles from ``rescan_interval_s`` after each unchanged one; default
        :data:`RESCAN_BACKOFF_MAX` times ``rescan_interval_s``). The wait for the next listing ends on the
        shared grid of ``wake_grid_s`` (:func:`.ticks.on_grid`; 0: exactly)."""
        if rescan_interval_s <= 0:
            raise ValueError("rescan_interval_s must be positive")
        if rescan_max_interval_s is None:
            rescan_max_interval_s = RESCAN_BACKOFF_MAX * rescan_interval_s
        if rescan_max_interval_s < rescan_interval_s:
            raise ValueError("rescan_max_interval_s must be at least rescan_interval_s")
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        self._runner = runner
        self._store = store
        self._host = host
        self._run = run
        self._clock = clock
        self._claims = claims
        self._rescan_interval_s = rescan_interval_s
        self._rescan_max_interval_s = rescan_max_interval_s
        # What the last listing found, sizes left out (a followed log grows between any two listings).
        self._last_listing: tuple[tuple[FileIdentity, ...], tuple[str, ...]] | None = None
        self._max_streams = max_streams
        self._retry_delay_s = retry_delay_s
        self._wake_grid_s = wake_grid_s
        self._extra_metrics = tuple((metric.name, metric.pattern.pattern) for metric in run.metrics)
        self._files: dict[str, _Followed] = {}
        self._groups: list[_Group] = []
        self._listing_problems: tuple[str, ...] = ()
        self._status: str | None = None
        self._stop_reason: BaseException | None = None
        self._wake = asyncio.Event()

    @property
    def max_streams(self) -> int:
        """``tail`` processes this collector holds at most (each a channel of the host's connection)."""
        return self._max_streams

    @property
    def following(self) -> tuple[str, ...]:
        """The files this collector reads now, in listing order."""
        return tuple(self._files)

    @property
    def status(self) -> str | None:
        """What keeps some of the run's logs on this host from being read, as stored; None when nothing."""
        return self._status

    async def run(self) -> None:
        if not self._run.logs:
            await asyncio.Event().wait()
        while True:
            await self._runner.wait_up()
            try:
                await self._collect()
            except TransportError as lost:
                # The host's session reconnects by itself and reports the host's state; resume once it is up.
                _log.info("%s on %s: logs paused, host lost: %s", self._run.name, self._host, lost)
            finally:
                await self._stop_all()
            await asyncio.sleep(self._retry_delay_s)

    # ----------------------------------------------------------------------------------------- the loop

    async def _collect(self) -> None:
        self._stop_reason = None
        self._wake.clear()
        self._last_listing = None
        interval = self._rescan_interval_s
        while True:
            changed = await self._rescan()
            self._raise_stop_reason()
            interval = self._rescan_interval_s if changed else min(2 * interval, self._rescan_max_interval_s)
            with contextlib.suppress(TimeoutError):
                deadline = on_grid(asyncio.get_running_loop().time() + interval, self._wake_grid_s)
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()
            self._raise_stop_reason()

    def _raise_stop_reason(self) -> None:
        reason, self._stop_reason = self._stop_reason, None
        if reason is not None:
            raise reason

    async def _list(self) -> Listing | None:
        """The current listing, or None when it failed in a way that is the run's problem, not the host's."""
        patterns = self._run.logs
        try:
            result = await self._runner.run(list_argv(patterns), timeout=LIST_TIMEOUT_S)
        except TimeoutError:
            self._set_listing_problems((f"listing log files took over {LIST_TIMEOUT_S:g} s",))
            return None
        except (ChannelRefusedError, OutputTooLargeError) as exc:
            self._set_listing_problems((f"cannot list log files: {exc}",))
            return None
        if result.exit_status != 0:
            detail = next((line for line in result.stderr.splitlines() if line.strip()), "")
            reason = detail.strip() or f"exit status {result.exit_status}"
            self._set_listing_problems((f"cannot list log files: {reason}",))
            return None
        return parse_listing(result.stdout, patterns)

    async def _rescan(self) -> bool:
        """List the files and follow what it found; False when the listing is the same as the last one."""
        delivered = {path: followed.progress.delivered_bytes for path, followed in self._files.items()}
        listing = await self._list()
        if listing is None:
            self._last_listing = None
            return True
        found = (tuple(listed.identity for listed in listing.files), listing.problems)
        # A failed tail is retried at the next listing: it must not wait the longer interval. Nor must a
        # pattern that matches nothing yet: that is someone starting trainmon before the run.
        changed = (
            found != self._last_listing
            or bool(listing.problems)
            or any(group.task is None or group.task.done() for group in self._groups)
        )
        self._last_listing = found
        for group in self._groups:
            # A tail that has run through a whole rescan interval has recovered from whatever failed before.
            if group.task is not None and not group.task.done():
                group.problem = None
        wanted = self._claim(listing.files, delivered)
        await self._regroup(wanted)
        self._set_listing_problems(listing.problems)
        return changed

    def _claim(self, files: Iterable[ListedFile], delivered: dict[str, int]) -> list[str]:
        """Update claims from a listing; returns the paths to follow, in listing order. ``delivered``: each
        followed file's delivered bytes before the listing began."""
        wanted: list[str] = []
        for listed in files:
            followed = self._files.get(listed.path)
            if followed is not None:
                previous = followed.listed.identity
                if listed.identity != previous:
                    # Replaced or truncated (tail -F follows it), or still under HEAD_BYTES and growing.
                    self._claims.release(self._host, previous)
                    if not self._claims.claim(self._host, listed.identity):
                        continue  # another host took the new file first
                followed.listed = listed
                followed.delivered_at_listing = delivered.get(listed.path, followed.progress.delivered_bytes)
                wanted.append(listed.path)
            elif self._claims.claim(self._host, listed.identity):
                progress = self._claims.take_progress(listed.identity) or FileProgress(
                    LogParser(extra_metrics=self._extra_metrics, default_rank=rank_from_path(listed.path))
                )
                self._files[listed.path] = _Followed(listed, progress, progress.delivered_bytes)
                wanted.append(listed.path)
        return wanted

    async def _regroup(self, wanted: list[str]) -> None:
        """Fit the followed files into at most ``max_streams`` tails; only the tails whose files changed
        restart."""
        keep = set(wanted)
        for path in [path for path in self._files if path not in keep]:
            self._forget(path)
        changed: list[_Group] = []
        for group in self._groups:
            paths = tuple(path for path in group.paths if path in keep)
            if paths != group.paths or group.task is None or group.task.done():
                group.paths = paths
                changed.append(group)
        grouped = {path for group in self._groups for path in group.paths}
        for path in wanted:
            if path in grouped:
                continue
            if len(self._groups) < self._max_streams:
                group = _Group((path,))
                self._groups.append(group)
            else:
                group = min(self._groups, key=lambda candidate: len(candidate.paths))
                group.paths = (*group.paths, path)
            if group not in changed:
                changed.append(group)
        for group in changed:
            await self._stop_group(group)
            if group.paths:
                self._start_group(group)
            else:
                self._groups.remove(group)

    def _forget(self, path: str) -> None:
        """The file is gone from the listing (or another host reads it now): stop counting it as ours."""
        followed = self._files.pop(path)
        records, events = followed.progress.parser.finish()
        self._apply(path, records, events)
        self._claims.release(self._host, followed.listed.identity)

    # ------------------------------------------------------------------------------------------ streams

    def _start_group(self, group: _Group) -> None:
        group.delivered = False
        group.skippers = {}
        for path in group.paths:
            followed = self._files[path]
            skipper = ReplaySkipper(
                followed.progress.recent, self._run.tail_lines, followed.replay_bytes_bound()
            )
            if not skipper.done:
                group.skippers[path] = skipper
        group.task = asyncio.get_running_loop().create_task(
            self._follow(group, group.paths), name=f"tail {self._run.name}@{self._host}"
        )

    async def _stop_group(self, group: _Group) -> None:
        task, group.task = group.task, None
        if task is None:
            return
        task.cancel()
        # asyncio.wait, not await task: a cancellation of our own must still reach us.
        await asyncio.wait({task})

    async def _stop_all(self) -> None:
        for group in self._groups:
            await self._stop_group(group)
        self._groups = []
        for followed in self._files.values():
            self._claims.release(self._host, followed.listed.identity, followed.progress)
        self._files = {}

    async def _follow(self, group: _Group, paths: tuple[str, ...]) -> None:
        demux = TailDemux(paths)
        try:
            async with self._runner.stream(tail_argv(paths, self._run.tail_lines)) as stream:
                async for line in stream:
                    for path, text in demux.feed(line):
                        self._deliver(group, path, text)
                for path, text in demux.flush():
                    self._deliver(group, path, text)
                # Lines a skipper still holds are dropped: the next tail replays them, and knows better.
                reason = tail_exit_reason(stream.exit_status, stream.stderr_tail)
        except TransportError as lost:
            self._stop(lost)
            return
        except (ChannelRefusedError, OSError) as exc:
            reason = clean_remote_text(f"cannot start tail: {exc}")
        except Exception as exc:
            # Not ours to judge: the main loop re-raises it, and whoever runs the collector restarts it.
            self._stop(exc)
            return
        group.problem = f"{reason} ({', '.join(paths)})"
        self._update_status()

    def _stop(self, reason: BaseException) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.set()

    def _deliver(self, group: _Group, path: str, line: str) -> None:
        if not group.delivered:
            group.delivered = True
            if group.problem is not None:
                group.problem = None
                self._update_status()
        skipper = group.skippers.get(path)
        if skipper is None:
            self._deliver_new(path, (line,))
            return
        new = skipper.feed(line)
        if skipper.done:
            del group.skippers[path]
        self._deliver_new(path, new)

    def _deliver_new(self, path: str, lines: Sequence[str]) -> None:
        followed = self._files.get(path)
        if followed is None or not lines:
            return
        progress = followed.progress
        first_line = progress.delivered_lines + 1
        for line in lines:
            progress.recent.append(line)
            progress.delivered_bytes += len(line.encode("utf-8", errors="replace")) + 1
            records, events = progress.parser.feed(line)
            if records or events:
                self._apply(path, records, events)
        progress.delivered_lines += len(lines)
        # Raw, so following stays cheap; the log book cleans on read. Same call, so no snapshot sees an event
        # whose line is not in the book yet.
        self._store.append_log_lines(
            self._run.name,
            self._host,
            path,
            lines,
            self._clock(),
            first_line=first_line,
            ranks=progress.parser.ranks,
        )

    def _apply(self, path: str, records: Iterable[LogRecord], events: Iterable[LogEvent]) -> None:
        now = self._clock()
        store, run, host = self._store, self._run.name, self._host
        for record in records:
            store.apply_record(run, host, record, now)
        for event in events:
            store.apply_event(run, host, event, now, path=path)

    # ------------------------------------------------------------------------------------------- status

    def _set_listing_problems(self, problems: tuple[str, ...]) -> None:
        self._listing_problems = problems
        self._update_status()

    def _update_status(self) -> None:
        parts = [*self._listing_problems, *(group.problem for group in self._groups if group.problem)]
        status = "; ".join(parts) if parts else None
        if status == self._status:
            return
        self._status = status
        if status is None:
            _log.info("%s on %s: logs readable again", self._run.name, self._host)
        else:
            _log.warning("%s on %s: %s", self._run.name, self._host, status)
        self._store.set_run_status(self._run.name, self._host, status, self._clock())
