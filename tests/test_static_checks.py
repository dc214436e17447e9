"""The project's own checks as tests, so CI enforces them: ruff (lint and format) and mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def _check(argv: list[str]) -> None:
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_ruff_lint() -> None:
    _check([_tool("ruff"), "check", "."])


def test_ruff_format() -> None:
    _check([_tool("ruff"), "format", "--check", "."])


@pytest.mark.timeout(600)
def test_mypy_strict() -> None:
    _check([_tool("mypy")])
