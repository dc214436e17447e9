"""A login that fails on a local file names the file, not a Python exception class."""

from __future__ import annotations

import errno
import os

from trainmon_tui.transport.session import DownReason, classify_error


def test_missing_identity_file_names_the_file() -> None:
    exc = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/home/alice/.ssh/id_ed25519")
    assert classify_error(exc) == (
        DownReason.SSH_ERROR,
        "cannot read /home/alice/.ssh/id_ed25519: No such file or directory",
    )


def test_unreadable_known_hosts_names_the_file() -> None:
    exc = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/etc/ssh/known_hosts")
    assert classify_error(exc) == (
        DownReason.SSH_ERROR,
        "cannot read /etc/ssh/known_hosts: Permission denied",
    )


def test_refused_stays_refused() -> None:
    assert (
        classify_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))[0]
        is DownReason.CONNECTION_REFUSED
    )
