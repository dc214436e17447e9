"""Fixtures for the integration tests: the sshd harness for the whole session, a fresh fake host per test.

Without sshd the tests skip, unless the environment variable CI is set: CI installs openssh-server, so a
missing sshd there is a broken setup and must fail loudly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.sshd_harness import FakeHost, SshdHarness, sshd_path

FIRST_ADDRESS = "127.0.0.2"
SECOND_ADDRESS = "127.0.0.3"


@pytest.fixture(scope="session")
def sshd_harness() -> Iterator[SshdHarness]:
    sshd = sshd_path()
    if sshd is None:
        if os.environ.get("CI"):
            pytest.fail("sshd is not installed but CI is set: install openssh-server")
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    harness = SshdHarness.create(sshd)
    yield harness
    harness.close()


@pytest.fixture
def fake_host(sshd_harness: SshdHarness) -> Iterator[FakeHost]:
    """A fresh sshd for each test, since tests stop, hang and kill them."""
    host = sshd_harness.start_host(FIRST_ADDRESS)
    yield host
    host.stop()


@pytest.fixture
def second_host(sshd_harness: SshdHarness) -> Iterator[FakeHost]:
    host = sshd_harness.start_host(SECOND_ADDRESS)
    yield host
    host.stop()
