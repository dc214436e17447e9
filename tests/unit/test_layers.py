"""Each layer is imported in a fresh interpreter and must not drag in what its layer forbids."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import trainmon_tui
from trainmon_tui.layers import FORBIDDEN_IMPORTS, FORBIDDEN_PROJECT_IMPORTS


def _modules_of(layer: str) -> list[str]:
    """The layer itself and, for a package, every module under it."""
    module = __import__(layer, fromlist=["_"])
    names = [layer]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=layer + "."):
            names.append(info.name)
    return names


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_IMPORTS))
def test_layer_does_not_import_forbidden_packages(layer: str) -> None:
    modules = _modules_of(layer)
    loaded = _imported_after(modules)
    tops = {name.split(".")[0] for name in loaded}
    bad = sorted(tops & set(FORBIDDEN_IMPORTS[layer]))
    assert not bad, f"{layer} imports {bad}"
    upward = sorted(
        name
        for name in loaded
        for banned in FORBIDDEN_PROJECT_IMPORTS.get(layer, ())
        if name == banned or name.startswith(banned + ".")
    )
    assert not upward, f"{layer} imports upper layers: {upward}"


def test_every_layer_exists() -> None:
    assert trainmon_tui.__version__
    for layer in FORBIDDEN_IMPORTS:
        assert _modules_of(layer)
