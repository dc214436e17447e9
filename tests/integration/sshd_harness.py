"""Real OpenSSH servers on loopback for the integration tests: one ``sshd -D`` per fake host.

Each fake host listens on its own loopback address (127.0.0.2, 127.0.0.3 ...) and a free port, with a fresh
ed25519 host key pinned in a generated known_hosts. Every sshd dies with the test runner (PR_SET_PDEATHSIG).

As root the sessions log in as a plain test user (root's shell rc files run on every channel, and sshd
refuses signal requests for root), created once with ``useradd`` and unlocked with ``usermod -p '*'``
because ``UsePAM no`` treats a ``!`` password as locked. As an ordinary user, sshd runs as that user and
serves only that user (exec channels only, no pty). Either way ``AuthorizedKeysFile`` points into the
harness's own directory, so parallel test runs do not share keys, and ``SetEnv PATH=...`` puts a stand-in
``nvidia-smi`` first on the remote PATH.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainmon_tui.transport.session import ConnectParams

TEST_USER = "trainmon-test"
FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "integration"
FIXTURE = FIXTURE_DIR / "dmon_s_pucm_blackwell_4gpu_driver595.txt"
# The environment variable that tags every process a test starts on a fake host, so the test can find them
# (children inherit it; /proc/PID/environ shows it) without mistaking anybody else's processes for them.
MARK_VARIABLE = "TRAINMON_TEST_MARK"
_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child: loading a library there could block on a lock another thread held.
_LIBC = ctypes.CDLL(None, use_errno=True)

# Replays the dmon capture like `nvidia-smi dmon`: line by line, forever, or N times with `-c N`.
_STAND_IN_NVIDIA_SMI = """#!/bin/sh
# Stand-in for nvidia-smi on the integration tests' fake hosts: replays a recorded `nvidia-smi dmon`.
fixture={fixture}
interval="${{TRAINMON_FAKE_SMI_INTERVAL:-{interval}}}"
count=-1
while [ $# -gt 0 ]; do
    if [ "$1" = -c ] && [ $# -ge 2 ]; then count=$2; shift; fi
    shift
done
while [ "$count" != 0 ]; do
    while IFS= read -r line; do
        printf '%s\\n' "$line"
        sleep "$interval"
    done < "$fixture"
    count=$((count - 1))
done
"""


def sshd_path() -> str | None:
    """The sshd binary, which lives in /usr/sbin (often not on a normal user's PATH)."""
    found = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin")
    return found


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: a crashed or killed test runner takes its sshd along.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at path; returns the public key line."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return Path(f"{path}.pub").read_text().strip()


def parent_pids() -> dict[int, int]:
    """pid -> parent pid for every process now."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the fields after it are fixed.
        fields = stat.rpartition(")")[2].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below pid, children first."""
    children: dict[int, list[int]] = {}
    for child, parent in parent_pids().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def command_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def marked_processes(mark: str) -> list[int]:
    """Live processes whose environment carries ``MARK_VARIABLE=mark`` (zombies have none and don't count)."""
    tag = f"{MARK_VARIABLE}={mark}".encode()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if tag in environ.split(b"\0"):
            found.append(int(entry))
    return found


def wait_until_gone(mark: str, timeout: float) -> tuple[float, list[int]]:
    """Poll until no process carries mark; returns the seconds it took and what was left at the deadline."""
    started = time.monotonic()
    while True:
        left = marked_processes(mark)
        elapsed = time.monotonic() - started
        if not left or elapsed > timeout:
            return elapsed, left
        time.sleep(0.05)


def wait_for_marked(mark: str, at_least: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        found = marked_processes(mark)
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def marked_argv(mark: str, argv: Iterable[str]) -> list[str]:
    """argv run with the test mark in its environment, so it and all its children can be found."""
    return ["env", f"{MARK_VARIABLE}={mark}", *argv]


def stubborn_argv(mark: str) -> list[str]:
    """A remote command that closing a channel alone never kills.

    It ignores HUP, TERM and PIPE (ignored signals stay ignored across exec, so its children ignore them
    too), keeps a background sleeper and a pipeline, and prints a tick every 0.1 s.
    """
    script = 'trap "" HUP TERM PIPE; sleep 600 & sleep 601 | cat & while :; do echo tick; sleep 0.1; done'
    return marked_argv(mark, ["sh", "-c", script])


@dataclass
class FakeHost:
    """One sshd on one loopback address."""

    address: str
    port: int
    public_key: str
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    stopped: bool = field(default=False)

    def known_hosts_line(self, public_key: str | None = None) -> str:
        return f"[{self.address}]:{self.port} {public_key or self.public_key}\n"

    def sshd_pids(self) -> list[int]:
        """The listener and every sshd process it forked for connections (not the users' commands)."""
        below = [pid for pid in descendants(self.process.pid) if command_name(pid) == "sshd"]
        return [self.process.pid, *below]

    def signal_sshd(self, signum: signal.Signals) -> None:
        for pid in self.sshd_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the listener and everything below it, stopped or not."""
        if self.stopped:
            return
        self.stopped = True
        victims = [self.process.pid, *descendants(self.process.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A stopped process keeps a pending KILL until continued.
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.process.wait(timeout=5)


class SshdHarness:
    """Keys, user, stand-in nvidia-smi and the sshd processes of one test session."""

    def __init__(self, sshd: str, root: Path, user: str, as_root: bool) -> None:
        self.sshd = sshd
        self.root = root
        self.user = user
        self.as_root = as_root
        self.bin_dir = root / "bin"
        self.client_key = root / "id_client"
        self.wrong_key = root / "id_wrong"
        self.authorized_keys = root / "authorized_keys"
        self.known_hosts = root / "known_hosts"
        self.hosts: list[FakeHost] = []

    @classmethod
    def create(cls, sshd: str) -> SshdHarness:
        as_root = os.geteuid() == 0
        # Not pytest's tmp_path: that is mode 0700 under root's name, and the test user must read in here.
        root = Path(tempfile.mkdtemp(prefix="trainmon-sshd-"))
        root.chmod(0o755)
        user = _ensure_test_user() if as_root else pwd.getpwuid(os.getuid()).pw_name
        if as_root:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        harness = cls(sshd, root, user, as_root)
        harness._prepare()
        return harness

    def _prepare(self) -> None:
        client_public = _keygen(self.client_key, "trainmon-test-client")
        _keygen(self.wrong_key, "trainmon-test-wrong")
        self.authorized_keys.write_text(client_public + "\n")
        self.authorized_keys.chmod(0o644)
        self.known_hosts.write_text("")
        self.bin_dir.mkdir(mode=0o755)
        fixture_copy = self.root / FIXTURE.name
        shutil.copyfile(FIXTURE, fixture_copy)
        fixture_copy.chmod(0o644)
        stand_in = self.bin_dir / "nvidia-smi"
        stand_in.write_text(
            _STAND_IN_NVIDIA_SMI.format(fixture=shlex.quote(str(fixture_copy)), interval="0.02")
        )
        stand_in.chmod(0o755)

    def start_host(
        self, address: str, port: int | None = None, *, extra_users: tuple[str, ...] = ()
    ) -> FakeHost:
        """Start an sshd on address (a free port unless given) and pin its key in ``known_hosts``."""
        for _ in range(5):
            host = self._try_start(address, port or _free_port(address), extra_users)
            if host is not None:
                self.hosts.append(host)
                with self.known_hosts.open("a") as known:
                    known.write(host.known_hosts_line())
                return host
            if port is not None:
                break
        raise RuntimeError(f"sshd did not start on {address}")

    def _try_start(self, address: str, port: int, extra_users: tuple[str, ...]) -> FakeHost | None:
        name = f"{address.replace('.', '-')}_{port}"
        host_key = self.root / f"host_{name}"
        public_key = _keygen(host_key, f"host-{name}").rpartition(" ")[0]
        config_path = self.root / f"sshd_{name}.conf"
        log_path = self.root / f"sshd_{name}.log"
        remote_path = f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin"
        config_path.write_text(
            "\n".join(
                [
                    f"ListenAddress {address}:{port}",
                    f"HostKey {host_key}",
                    "PidFile none",
                    "UsePAM no",
                    # The authorized_keys file lives in a temp dir that StrictModes would reject.
                    "StrictModes no",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"AllowUsers {' '.join((self.user, *extra_users))}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    # Tests connect many sessions at once; the default 10:30:100 drops some of them.
                    "MaxStartups 100:30:200",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "LogLevel VERBOSE",
                    f"SetEnv PATH={remote_path}",
                    "",
                ]
            )
        )
        log = log_path.open("wb")
        process = subprocess.Popen(
            [self.sshd, "-D", "-e", "-f", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Only a prctl call runs in the child, which takes no lock another thread could hold.
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        log.close()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return None  # most likely the port got taken between probing and binding
            with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
                return FakeHost(address, port, public_key, config_path, log_path, process)
            time.sleep(0.005)
        process.kill()
        process.wait()
        return None

    def params(self, host: FakeHost, **overrides: Any) -> ConnectParams:
        """Connection parameters for host: pinned known_hosts, the client key, no agent, no ~/.ssh/config."""
        base = ConnectParams(
            host=host.address,
            port=host.port,
            user=self.user,
            identity_files=(str(self.client_key),),
            known_hosts=str(self.known_hosts),
            ssh_config=(),
            use_agent=False,
            connect_timeout_s=5.0,
            login_timeout_s=5.0,
        )
        return replace(base, **overrides)

    def write_file(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def close(self) -> None:
        for host in self.hosts:
            host.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _ensure_test_user() -> str:
    """Create the plain test account once (as root); later runs reuse it."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        # Another run may create it at the same moment; the second useradd fails and the lookup decides.
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER], capture_output=True, check=False
        )
        pwd.getpwnam(TEST_USER)
    # With UsePAM no, sshd treats the "!" useradd leaves in /etc/shadow as a locked account.
    _run(["usermod", "-p", "*", TEST_USER])
    return TEST_USER


def serving_sshd(pid: int) -> int | None:
    """The nearest sshd above pid: the per-connection sshd process that carries its channel."""
    parents = parent_pids()
    current = parents.get(pid)
    while current is not None and current > 1:
        if command_name(current) == "sshd":
            return current
        current = parents.get(current)
    return None
