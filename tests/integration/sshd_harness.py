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
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
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
    # A retried start can land on a port used before: ssh-keygen would ask before overwriting, and fail.
    for old in (path, Path(f"{path}.pub")):
        old.unlink(missing_ok=True)
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
        return self._start_host(address, port, extra_users, self.bin_dir)

    def make_bin_dir(self, name: str, scripts: Mapping[str, str]) -> Path:
        """A directory of executable scripts (file name -> text) for :meth:`start_host_with_bin`."""
        bin_dir = self.root / name
        bin_dir.mkdir(mode=0o755)
        for file_name, text in scripts.items():
            script = bin_dir / file_name
            script.write_text(text)
            script.chmod(0o755)
        return bin_dir

    def start_host_with_bin(self, address: str, bin_dir: Path, port: int | None = None) -> FakeHost:
        """Like :meth:`start_host`, but the remote PATH starts with ``bin_dir`` instead of the directory of
        the shared stand-in ``nvidia-smi``: each fake host gets its own tools (an empty directory: none)."""
        return self._start_host(address, port, (), bin_dir)

    def _start_host(
        self, address: str, port: int | None, extra_users: tuple[str, ...], bin_dir: Path
    ) -> FakeHost:
        for _ in range(5):
            host = self._try_start(address, port or _free_port(address), extra_users, bin_dir)
            if host is not None:
                self.hosts.append(host)
                with self.known_hosts.open("a") as known:
                    known.write(host.known_hosts_line())
                return host
            if port is not None:
                break
        raise RuntimeError(f"sshd did not start on {address}")

    def _try_start(
        self, address: str, port: int, extra_users: tuple[str, ...], bin_dir: Path
    ) -> FakeHost | None:
        name = f"{address.replace('.', '-')}_{port}"
        host_key = self.root / f"host_{name}"
        public_key = _keygen(host_key, f"host-{name}").rpartition(" ")[0]
        config_path = self.root / f"sshd_{name}.conf"
        log_path = self.root / f"sshd_{name}.log"
        remote_path = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"
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


# A stand-in training process: replays a recorded training log into one or more log files, one line to every
# file per interval, flushed at once, as `print(..., flush=True)` in a training script would. Started on this
# machine, it writes where the fake hosts' test user can read (the harness's directory is world-readable).
_FAKE_TRAINER = """
import sys, time
fixture, interval, *paths = sys.argv[1:]
with open(fixture, encoding="utf-8", newline="\\n") as source:
    lines = source.read().split("\\n")
if lines and lines[-1] == "":
    lines.pop()
outputs = [open(path, "a", encoding="utf-8", newline="\\n") for path in paths]
for line in lines:
    for output in outputs:
        output.write(line + "\\n")
        output.flush()
    time.sleep(float(interval))
print("done", flush=True)
time.sleep(3600)
"""


def start_fake_trainer(
    fixture: Path, paths: Iterable[Path], *, interval_s: float = 0.02
) -> subprocess.Popen[str]:
    """Replay the training log ``fixture`` into every file of ``paths`` (created or appended to), one line
    per ``interval_s``; prints ``done`` on stdout when the last line is written, then idles until killed.
    Dies with the test runner; the caller kills it (``process.kill(); process.wait()``)."""
    return subprocess.Popen(
        [sys.executable, "-c", _FAKE_TRAINER, str(fixture), str(interval_s), *map(str, paths)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509
    )


# ------------------------------------------------------------------------------------------------------------
# Fleet-level stand-ins: what the fleet, report and fault tests run on their fake hosts.

FLEET_FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "fleet"
FLEET_DMON = FLEET_FIXTURE_DIR / "dmon_s_pucm_blackwell_4gpu_driver595.txt"
#: An 8-GPU dmon capture (H800, idle), for the collection benchmark's larger hosts.
FLEET_DMON_8GPU = FLEET_FIXTURE_DIR / "dmon_gpm_metrics_8gpu_h800.txt"
FLEET_QUERY_GPU = FLEET_FIXTURE_DIR / "query_gpu_noheader_nounits_23fields_blackwell.txt"
FLEET_COMPUTE_APPS = FLEET_FIXTURE_DIR / "query_compute_apps_noheader_nounits_uuid.txt"
FLEET_SMI_FAILURE = FLEET_FIXTURE_DIR / "smi_failed_couldnt_communicate_single_line.txt"
FLEET_TRAINING_LOG = FLEET_FIXTURE_DIR / "megatron_lm_core_iteration_lm_loss_validation_checkpoint.txt"
#: The fields of the recorded --query-gpu and --query-compute-apps captures, in their column order (from their
#: provenance lines in tests/fixtures/fleet/SOURCES.md).
RECORDED_QUERY_GPU_FIELDS = (
    "index,uuid,name,pci.bus_id,driver_version,utilization.gpu,utilization.memory,memory.total,memory.used,"
    "memory.free,temperature.gpu,temperature.memory,power.draw,power.limit,clocks.gr,clocks.mem,"
    "clocks.max.gr,clocks.max.mem,fan.speed,pstate,pcie.link.gen.current,pcie.link.width.current,"
    "encoder.stats.sessionCount"
)
RECORDED_COMPUTE_APPS_FIELDS = "pid,process_name,gpu_uuid,used_memory"
#: Exit status of nvidia-smi when it cannot talk to the driver.
SMI_DRIVER_FAILURE_STATUS = 9

# One fake host's nvidia-smi. `dmon` prints the dmon capture every INTERVAL seconds, forever; the two CSV
# queries print the recorded rows with the fields asked for, in the order asked for ("[N/A]" for a field the
# recording lacks). While the file "$state/failure" exists, every call prints it and exits like nvidia-smi
# without a driver. It exports the test mark, so it and its children (`sleep`, `cat`) can be found.
_FLEET_NVIDIA_SMI = """#!/bin/sh
# Stand-in nvidia-smi of one fake host of the fleet tests: replays recorded output (see sshd_harness.py).
TRAINMON_TEST_MARK={mark}
export TRAINMON_TEST_MARK
state={state}
project() {{
    awk -v want="$1" -v have="$2" '
        BEGIN {{
            n = split(have, known, ","); for (i = 1; i <= n; i++) at[known[i]] = i
            m = split(want, asked, ",")
        }}
        {{
            split($0, cell, ", "); row = ""
            for (i = 1; i <= m; i++) {{
                value = (asked[i] in at) ? cell[at[asked[i]]] : "[N/A]"
                row = row (i > 1 ? ", " : "") value
            }}
            print row
        }}' "$3"
}}
if [ -f "$state/failure" ]; then cat "$state/failure"; exit {failure_status}; fi
case "$1" in
    dmon) while :; do cat {dmon}; sleep {interval}; done ;;
    --query-gpu=*) project "${{1#--query-gpu=}}" {gpu_fields} {query_gpu} ;;
    --query-compute-apps=*) project "${{1#--query-compute-apps=}}" {apps_fields} {compute_apps} ;;
    *) echo "stand-in nvidia-smi: unsupported arguments: $*" >&2; exit 2 ;;
esac
"""


@dataclass
class FakeGpuTools:
    """One fake host's own ``bin`` directory with a stand-in ``nvidia-smi`` that can break and recover."""

    bin_dir: Path
    state_dir: Path
    script: str
    mark: str

    @property
    def nvidia_smi(self) -> Path:
        return self.bin_dir / "nvidia-smi"

    def install(self) -> None:
        """Put nvidia-smi (back) on the host."""
        staged = self.bin_dir / ".nvidia-smi.new"
        staged.write_text(self.script)
        staged.chmod(0o755)
        # A rename, so a host never runs a half-written script.
        staged.replace(self.nvidia_smi)

    def uninstall(self) -> None:
        """Take nvidia-smi off the host: the remote shell then answers 127, command not found."""
        self.nvidia_smi.unlink(missing_ok=True)

    def fail_like_a_missing_driver(self) -> None:
        """From now on nvidia-smi prints the recorded "couldn't communicate with the driver", exit 9."""
        failure = self.state_dir / "failure"
        shutil.copyfile(FLEET_SMI_FAILURE, failure)
        failure.chmod(0o644)

    def recover(self) -> None:
        (self.state_dir / "failure").unlink(missing_ok=True)


def make_fake_gpu_tools(
    harness: SshdHarness,
    name: str,
    *,
    interval_s: float = 1.0,
    installed: bool = True,
    dmon: Path = FLEET_DMON,
) -> FakeGpuTools:
    """A ``bin`` directory for :meth:`SshdHarness.start_host_with_bin` holding a stand-in ``nvidia-smi`` that
    replays the fleet fixtures (the ``dmon`` capture every ``interval_s`` seconds). Its processes carry the
    mark ``name``."""
    bin_dir = harness.make_bin_dir(f"{name}-bin", {})
    state_dir = harness.root / f"{name}-state"
    state_dir.mkdir(mode=0o755)
    script = _FLEET_NVIDIA_SMI.format(
        mark=shlex.quote(name),
        state=shlex.quote(str(state_dir)),
        failure_status=SMI_DRIVER_FAILURE_STATUS,
        dmon=shlex.quote(str(dmon)),
        interval=f"{interval_s:g}",
        gpu_fields=shlex.quote(RECORDED_QUERY_GPU_FIELDS),
        query_gpu=shlex.quote(str(FLEET_QUERY_GPU)),
        apps_fields=shlex.quote(RECORDED_COMPUTE_APPS_FIELDS),
        compute_apps=shlex.quote(str(FLEET_COMPUTE_APPS)),
    )
    tools = FakeGpuTools(bin_dir, state_dir, script, name)
    if installed:
        tools.install()
    return tools


# A stand-in rank of a distributed training job: replays (the first lines of) a recorded training log into one
# file, a line per interval, then idles. `--rank N --world_size W` on its command line are what rank detection
# reads from ps, as for a script started with those arguments.
_FAKE_RANK = """
import sys, time
fixture, interval, path, limit = sys.argv[1:5]
with open(fixture, encoding="utf-8", newline="\\n") as source:
    lines = source.read().split("\\n")
if lines and lines[-1] == "":
    lines.pop()
if limit != "all":
    lines = lines[: int(limit)]
with open(path, "a", encoding="utf-8", newline="\\n") as output:
    for line in lines:
        output.write(line + "\\n")
        output.flush()
        time.sleep(float(interval))
print("done", flush=True)
time.sleep(3600)
"""


def start_fake_rank(
    fixture: Path,
    path: Path,
    *,
    rank: int,
    world_size: int,
    interval_s: float = 0.02,
    max_lines: int | None = None,
) -> subprocess.Popen[str]:
    """A process that looks like rank ``rank`` of ``world_size`` in ps and writes ``fixture`` (its first
    ``max_lines`` lines) into ``path``, printing ``done`` when it has; dies with the test runner."""
    limit = "all" if max_lines is None else str(max_lines)
    argv = [sys.executable, "-c", _FAKE_RANK, str(fixture), str(interval_s), str(path), limit]
    return subprocess.Popen(
        [*argv, "--rank", str(rank), "--world_size", str(world_size)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509
    )


def command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def leftover_processes(user: str, marks: Iterable[str], needles: Iterable[str]) -> list[tuple[int, str]]:
    """Live processes of ``user`` that a test started on its fake hosts: those carrying one of ``marks`` (the
    stand-in nvidia-smi and its children) or with one of ``needles`` (a log path) in their command line."""
    uid = pwd.getpwnam(user).pw_uid
    wanted_marks = {f"{MARK_VARIABLE}={mark}".encode() for mark in marks}
    needles = tuple(needles)
    found: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            environ = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        line = command_line(pid)
        if line is None or not line.strip():
            continue  # a zombie: already dead, only not reaped yet
        if environ & wanted_marks or any(needle in line for needle in needles):
            found.append((pid, line))
    return found


def wait_for_no_leftovers(
    user: str, marks: Iterable[str], needles: Iterable[str], timeout: float = 10.0
) -> list[tuple[int, str]]:
    """Poll until :func:`leftover_processes` finds none; returns what was still there at the deadline."""
    marks, needles = tuple(marks), tuple(needles)
    deadline = time.monotonic() + timeout
    while True:
        left = leftover_processes(user, marks, needles)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def fleet_hosts_yaml(
    harness: SshdHarness,
    hosts: Mapping[str, FakeHost],
    runs_yaml: str = "",
    *,
    known_hosts: Path | None = None,
    identity_file: Path | None = None,
    connect_timeout_s: float = 3.0,
    login_timeout_s: float = 3.0,
    keepalive_interval_s: float = 1.0,
    keepalive_count_max: int = 2,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> str:
    """A hosts.yaml for the fake hosts (name -> host), with short timeouts, and ``runs_yaml`` appended.

    ``overrides`` gives single hosts other settings (host name -> key -> value), e.g. another identity file.
    """
    lines = [
        "defaults:",
        f"  user: {harness.user}",
        f"  identity_file: {identity_file or harness.client_key}",
        f"  known_hosts: {known_hosts or harness.known_hosts}",
        f"  connect_timeout: {connect_timeout_s}",
        f"  login_timeout: {login_timeout_s}",
        f"  keepalive_interval: {keepalive_interval_s}",
        f"  keepalive_count_max: {keepalive_count_max}",
        "hosts:",
    ]
    for name, host in hosts.items():
        lines += [f"  - name: {name}", f"    address: {host.address}", f"    port: {host.port}"]
        lines += [f"    {key}: {value}" for key, value in (overrides or {}).get(name, {}).items()]
    return "\n".join(lines) + "\n" + runs_yaml


def restart_host(harness: SshdHarness, host: FakeHost) -> FakeHost:
    """Start a stopped fake host again, as a rebooted machine comes back: same address, port, host key and
    configuration (so the pinned known_hosts line still holds)."""
    if not host.stopped:
        raise RuntimeError(f"{host.address}:{host.port} is still running")
    with host.log_path.open("ab") as log:
        process = subprocess.Popen(
            [harness.sshd, "-D", "-e", "-f", str(host.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd did not start again on {host.address}:{host.port}: {host.log()[-500:]}")
        with contextlib.suppress(OSError), socket.create_connection((host.address, host.port), timeout=0.5):
            again = FakeHost(
                host.address, host.port, host.public_key, host.config_path, host.log_path, process
            )
            harness.hosts.append(again)
            return again
        time.sleep(0.005)
    process.kill()
    process.wait()
    raise RuntimeError(f"sshd did not start again on {host.address}:{host.port}")
