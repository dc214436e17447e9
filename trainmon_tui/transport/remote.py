"""Build the command line we send to a host: every argument quoted, wrapped so nothing we start outlives us.

Closing an SSH channel does not kill the remote command: pipelines and processes that ignore HUP/TERM/PIPE
survive, and sshd refuses signal requests for root logins. So the command runs under a small POSIX ``sh``
script that starts it in a process group of its own (``setsid``) and uses the channel's stdin as a lifeline:
when stdin reaches end of file - the client closed the channel, the connection dropped or the client died -
the whole group gets TERM, then KILL up to a second later. When the command ends by itself, any children
it left behind in its group get the same treatment, and the script exits with the command's status.

The script writes nothing on the host (no temporary files) and works under dash, bash and busybox ash, as
root or as an ordinary user. The command's own stdin is ``/dev/null``: the channel's stdin is the lifeline
and must never be written to or closed by the client until it wants the command gone.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

# The name the wrapper shell runs under ($0); it shows in `ps` on the host and in shell error messages.
WRAPPER_NAME = "trainmon-remote"

# One line on purpose: csh-family login shells reject newlines inside single quotes. No single quotes inside,
# so the whole script can be single-quoted. Why each part is there:
# - `stop` sends TERM, gives the group up to a second (polling every 0.1 s where sleep takes fractions, as
#   GNU and busybox sleep do) and then sends KILL. It polls its first target only: the group outlives the
#   command's own pid when children remain.
# - `exec 3<&0 </dev/null`: background jobs of a non-interactive shell get /dev/null as stdin, so the lifeline
#   is kept on fd 3 for the watcher; the wrapper itself and the command never read the channel.
# - `setsid` (util-linux, busybox) gives the command its own process group, `t=-$c` addresses that group. A
#   shell child is never a group leader, so setsid does not fork and $c is the group id. Without setsid only
#   the command itself can be signalled.
# - the watcher signals the group and the pid: right after start, setsid may not have run yet, so the group
#   does not exist yet. dash's `kill` has no `--`, hence the bare negative operand.
# - `kill "$w"` stops the watcher once the command ended; `kill -0` then finds whatever the command left
#   behind in its group, so a clean exit costs no wait.
WRAPPER_SCRIPT = (
    'stop() { kill -TERM "$@" 2>/dev/null; n=0; '
    'while [ $n -lt 10 ] && kill -0 "$1" 2>/dev/null; do '
    "if sleep 0.1 2>/dev/null; then n=$((n+1)); else sleep 1; n=$((n+10)); fi; done; "
    'kill -KILL "$@" 2>/dev/null; }; '
    "exec 3<&0 </dev/null; "
    'if command -v setsid >/dev/null 2>&1; then setsid "$@" 3<&- & c=$!; t=-$c; '
    'else "$@" 3<&- & c=$!; t=$c; fi; '
    '{ while read -r line; do :; done; stop "$t" "$c"; } <&3 >/dev/null 2>&1 & w=$!; '
    "exec 3<&-; "
    'wait "$c"; s=$?; '
    'kill "$w" 2>/dev/null; '
    'if kill -0 "$t" 2>/dev/null; then stop "$t"; fi; '
    'exit "$s"'
)


def quote_argv(argv: Sequence[str]) -> str:
    """Join arguments into one POSIX shell word list that the remote shell splits back into exactly argv."""
    if not argv:
        raise ValueError("a remote command needs at least one argument")
    for argument in argv:
        if "\0" in argument:
            # A NUL cannot travel in an exec request: the remote side would silently cut the argument.
            raise ValueError(f"argument contains a NUL byte: {argument!r}")
    return " ".join(shlex.quote(argument) for argument in argv)


def remote_command_line(argv: Sequence[str]) -> str:
    """The exec-request string for argv: the lifeline wrapper running argv in its own process group.

    The user's login shell parses this line; it replaces itself (``exec``) with ``sh`` running the wrapper,
    so the wrapper is the process sshd waits for and its exit status is the command's exit status
    (128 + N when the command was killed by signal N).
    """
    return f"exec sh -c {shlex.quote(WRAPPER_SCRIPT)} {WRAPPER_NAME} {quote_argv(argv)}"


def unwrap_command_line(command_line: str) -> tuple[str, ...] | None:
    """The argv a :func:`remote_command_line` string runs, or None when the string is not one.

    For servers that stand in for a host (the demo cluster, tests): they receive the exec request as sshd
    would and must run exactly the argv the client meant, without a shell.
    """
    try:
        words = shlex.split(command_line)
    except ValueError:
        return None
    prefix = ("exec", "sh", "-c", WRAPPER_SCRIPT, WRAPPER_NAME)
    if len(words) <= len(prefix) or tuple(words[: len(prefix)]) != prefix:
        return None
    return tuple(words[len(prefix) :])
