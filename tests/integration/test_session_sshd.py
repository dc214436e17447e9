"""HostSession and the remote command helpers against real OpenSSH servers on loopback."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.integration.sshd_harness import FIXTURE, FakeHost, SshdHarness, _keygen
from trainmon_tui.transport.session import (
    Backoff,
    ConnectParams,
    DownReason,
    HostDownError,
    HostSession,
    SessionState,
    SessionStatus,
)
from trainmon_tui.transport.streams import ChannelRefusedError, StreamLostError, open_stream, run

pytestmark = pytest.mark.integration

FAST_RETRY = Backoff(base_s=0.05, cap_s=0.2)


class StatusLog:
    """Collects a session's reported transitions and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list[SessionStatus] = []
        self._changed = asyncio.Event()

    def __call__(self, status: SessionStatus) -> None:
        self.seen.append(status)
        self._changed.set()

    async def wait_for(self, wanted: Callable[[SessionStatus], bool], timeout: float) -> SessionStatus:
        async with asyncio.timeout(timeout):
            while True:
                for status in self.seen:
                    if wanted(status):
                        return status
                self._changed.clear()
                await self._changed.wait()

    async def wait_down(self, timeout: float = 10.0) -> SessionStatus:
        return await self.wait_for(lambda status: status.state is SessionState.DOWN, timeout)


async def test_run_returns_exit_status_stdout_and_stderr(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    async with HostSession(sshd_harness.params(fake_host)) as session:
        result = await run(session, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert result == (3, "out\n", "err\n")


async def test_arguments_reach_the_host_unchanged(sshd_harness: SshdHarness, fake_host: FakeHost) -> None:
    awkward = ["a b", "it's", "$HOME", "*", "", "semi;colon", "back`tick`", 'dq"x', "new\nline", "tab\tx"]
    async with HostSession(sshd_harness.params(fake_host)) as session:
        status, out, err = await run(session, ["printf", "[%s]", *awkward], timeout=10)
    assert (status, err) == (0, "")
    assert out == "".join(f"[{argument}]" for argument in awkward)


async def test_the_cheapest_cipher_is_the_one_negotiated(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    # OpenSSH accepts AES-GCM by default, so that is what runs: the cipher the preference list puts first.
    async with HostSession(sshd_harness.params(fake_host)) as session:
        conn = await session.wait_up(timeout=10)
        assert conn.get_extra_info("send_cipher") == "aes128-gcm@openssh.com"
        assert conn.get_extra_info("recv_cipher") == "aes128-gcm@openssh.com"
    # None leaves the choice to asyncssh's defaults (chacha20-poly1305 first), which the server accepts too.
    params = replace(sshd_harness.params(fake_host), ciphers=None)
    async with HostSession(params) as session:
        conn = await session.wait_up(timeout=10)
        assert conn.get_extra_info("send_cipher") == "chacha20-poly1305@openssh.com"
        assert (await run(session, ["true"], timeout=10)).exit_status == 0


async def test_missing_command_exits_127_with_a_message(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    async with HostSession(sshd_harness.params(fake_host)) as session:
        status, out, err = await run(session, ["no-such-command-trainmon"], timeout=10)
    assert status == 127
    assert out == ""
    assert "no-such-command-trainmon" in err


async def test_stream_yields_the_stand_in_nvidia_smi_lines(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    expected = FIXTURE.read_text().splitlines()
    async with (
        HostSession(sshd_harness.params(fake_host)) as session,
        open_stream(session, ["nvidia-smi", "dmon", "-s", "pucm", "-c", "2"]) as stream,
    ):
        lines = [line async for line in stream]
    assert lines == expected * 2
    # Real values through the real sshd, trailing space of the driver's layout included.
    assert lines[2].split() == [
        "0",
        "294",
        "81",
        "-",
        "98",
        "57",
        "0",
        "0",
        "0",
        "0",
        "13365",
        "1897",
        "90538",
        "4",
        "0",
    ]
    assert lines[2].endswith(" 0 ")
    assert stream.exit_status == 0
    assert stream.stderr_tail == ""


async def test_connection_refused(sshd_harness: SshdHarness) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    log = StatusLog()
    params = ConnectParams(host="127.0.0.2", port=port, ssh_config=(), use_agent=False)
    async with HostSession(params, on_status=log, backoff=FAST_RETRY) as session:
        down = await log.wait_down()
        with pytest.raises(HostDownError) as raised:
            await session.wait_up(timeout=0.1)
    assert down.reason is DownReason.CONNECTION_REFUSED
    assert raised.value.reason is DownReason.CONNECTION_REFUSED


async def test_connect_timeout_on_a_port_that_never_speaks(sshd_harness: SshdHarness) -> None:
    # The kernel completes the TCP handshake for a listening socket nobody serves: no SSH banner ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.2", 0))
        silent.listen(16)
        log = StatusLog()
        params = ConnectParams(
            host="127.0.0.2",
            port=silent.getsockname()[1],
            ssh_config=(),
            use_agent=False,
            connect_timeout_s=0.5,
        )
        started = time.monotonic()
        async with HostSession(params, on_status=log, backoff=FAST_RETRY):
            down = await log.wait_down()
        elapsed = time.monotonic() - started
    assert down.reason is DownReason.CONNECT_TIMEOUT
    assert 0.4 < elapsed < 3.0


async def test_wrong_key_is_an_authentication_failure(sshd_harness: SshdHarness, fake_host: FakeHost) -> None:
    log = StatusLog()
    params = sshd_harness.params(fake_host, identity_files=(str(sshd_harness.wrong_key),))
    async with HostSession(params, on_status=log, backoff=FAST_RETRY):
        down = await log.wait_down()
    assert down.reason is DownReason.AUTH_FAILED


async def test_unknown_host_key_is_refused(sshd_harness: SshdHarness, fake_host: FakeHost) -> None:
    # known_hosts that knows other hosts only (the same address on another port is another host).
    other = sshd_harness.write_file(
        "known_hosts_other", f"[{fake_host.address}]:{fake_host.port + 1} {fake_host.public_key}\n"
    )
    log = StatusLog()
    async with HostSession(sshd_harness.params(fake_host, known_hosts=str(other)), on_status=log):
        down = await log.wait_down()
    assert down.reason is DownReason.HOST_KEY_UNKNOWN
    assert "not trusted" in (down.detail or "")


async def test_changed_host_key_is_a_mismatch(sshd_harness: SshdHarness, fake_host: FakeHost) -> None:
    impostor_key = _keygen(sshd_harness.root / "impostor", "impostor").rpartition(" ")[0]
    changed = sshd_harness.write_file("known_hosts_changed", fake_host.known_hosts_line(impostor_key))
    log = StatusLog()
    async with HostSession(sshd_harness.params(fake_host, known_hosts=str(changed)), on_status=log):
        down = await log.wait_down()
    assert down.reason is DownReason.HOST_KEY_MISMATCH


async def test_ssh_config_alias_supplies_address_port_user_and_key(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    config = sshd_harness.write_file(
        "ssh_config",
        f"Host gpu-box\n  HostName {fake_host.address}\n  Port {fake_host.port}\n"
        f"  User {sshd_harness.user}\n  IdentityFile {sshd_harness.client_key}\n",
    )
    params = ConnectParams(
        host="gpu-box", ssh_config=(str(config),), known_hosts=str(sshd_harness.known_hosts), use_agent=False
    )
    async with HostSession(params) as session:
        status, out, _ = await run(session, ["id", "-un"], timeout=10)
    assert (status, out) == (0, f"{sshd_harness.user}\n")


async def test_jump_host_carries_the_connection(
    sshd_harness: SshdHarness, fake_host: FakeHost, second_host: FakeHost
) -> None:
    log = StatusLog()
    jump = f"{sshd_harness.user}@{fake_host.address}:{fake_host.port}"
    async with HostSession(sshd_harness.params(second_host, jump=jump), on_status=log) as session:
        status, out, _ = await run(session, ["echo", "through"], timeout=10)
        assert (status, out) == (0, "through\n")
        # Only the jump host dies, yet the session to the second host goes down: it really went through.
        fake_host.stop()
        down = await log.wait_down()
    assert down.reason is DownReason.CONNECTION_LOST


async def test_proxy_jump_from_ssh_config_is_honoured(
    sshd_harness: SshdHarness, fake_host: FakeHost, second_host: FakeHost
) -> None:
    # The jump hop is opened by asyncssh from the config, so its key is checked against the config's file.
    config = sshd_harness.write_file(
        "ssh_config_jump",
        f"Host bastion\n  HostName {fake_host.address}\n  Port {fake_host.port}\n"
        f"Host gpu-behind\n  HostName {second_host.address}\n  Port {second_host.port}\n"
        "  ProxyJump bastion\n"
        f"Host *\n  User {sshd_harness.user}\n  IdentityFile {sshd_harness.client_key}\n"
        f"  UserKnownHostsFile {sshd_harness.known_hosts}\n",
    )
    log = StatusLog()
    params = ConnectParams(
        host="gpu-behind",
        ssh_config=(str(config),),
        known_hosts=str(sshd_harness.known_hosts),
        use_agent=False,
    )
    async with HostSession(params, on_status=log) as session:
        status, out, _ = await run(session, ["echo", "behind"], timeout=10)
        assert (status, out) == (0, "behind\n")
        fake_host.stop()
        down = await log.wait_down()
    assert down.reason is DownReason.CONNECTION_LOST


async def test_transitions_are_reported_once_and_the_session_reconnects(
    sshd_harness: SshdHarness,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    log = StatusLog()
    retries: list[float] = []

    async def counting_sleep(seconds: float) -> None:
        retries.append(seconds)
        await asyncio.sleep(seconds)

    # Parameters for a host that does not exist yet; the key files exist already.
    params = ConnectParams(
        host="127.0.0.2",
        port=port,
        user=sshd_harness.user,
        identity_files=(str(sshd_harness.client_key),),
        known_hosts=str(sshd_harness.known_hosts),
        ssh_config=(),
        use_agent=False,
    )
    async with HostSession(params, on_status=log, backoff=FAST_RETRY, sleep=counting_sleep) as session:
        await log.wait_down()
        while len(retries) < 4:
            await asyncio.sleep(0.05)
        host = sshd_harness.start_host("127.0.0.2", port)
        try:
            await log.wait_for(lambda status: status.state is SessionState.UP, timeout=10)
            status, out, _ = await run(session, ["echo", "back"], timeout=10)
        finally:
            host.stop()
    assert (status, out) == (0, "back\n")
    assert [(status.state, status.reason) for status in log.seen] == [
        (SessionState.CONNECTING, None),
        (SessionState.DOWN, DownReason.CONNECTION_REFUSED),
        (SessionState.UP, None),
        (SessionState.CLOSED, None),
    ]


async def test_hung_host_is_noticed_by_keepalive_and_the_session_comes_back(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    log = StatusLog()
    params = sshd_harness.params(
        fake_host, keepalive_interval_s=0.5, keepalive_count_max=2, connect_timeout_s=1.0
    )
    async with HostSession(params, on_status=log, backoff=FAST_RETRY) as session:
        # A command proves sshd forked the per-user child that carries the connection after login.
        assert (await run(session, ["true"], timeout=10)).exit_status == 0
        fake_host.signal_sshd(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            down = await log.wait_down(timeout=10)
            noticed_after = time.monotonic() - stopped_at
        finally:
            fake_host.signal_sshd(signal.SIGCONT)
        await log.wait_for(
            lambda status: status.state is SessionState.UP and session.connects == 2, timeout=10
        )
        status, out, _ = await run(session, ["echo", "awake"], timeout=10)
    assert down.reason is DownReason.KEEPALIVE_TIMEOUT
    # asyncssh gives up after interval * (count_max + 1) = 1.5 s of silence.
    assert 1.0 < noticed_after < 4.0
    assert (status, out) == (0, "awake\n")


async def test_channel_budget_keeps_below_sshd_max_sessions(
    sshd_harness: SshdHarness, fake_host: FakeHost
) -> None:
    many = 14
    async with HostSession(sshd_harness.params(fake_host)) as session:
        results = await asyncio.gather(*(run(session, ["sleep", "0.3"], timeout=20) for _ in range(many)))
    assert [result.exit_status for result in results] == [0] * many

    # The same load without a budget that fits runs into sshd's MaxSessions 10.
    async with HostSession(sshd_harness.params(fake_host, max_channels=many)) as unbudgeted:
        outcomes = await asyncio.gather(
            *(run(unbudgeted, ["sleep", "0.3"], timeout=20) for _ in range(many)), return_exceptions=True
        )
    assert any(isinstance(outcome, ChannelRefusedError) for outcome in outcomes)


async def test_stream_reports_a_dropped_connection(sshd_harness: SshdHarness, fake_host: FakeHost) -> None:
    async with HostSession(sshd_harness.params(fake_host), backoff=FAST_RETRY) as session:
        conn = await session.wait_up(timeout=10)
        with pytest.raises(StreamLostError):
            async with open_stream(session, ["nvidia-smi", "dmon"]) as stream:
                async for _line in stream:
                    conn.abort()
        assert session.channels_in_use == 0
