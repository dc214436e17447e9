"""The import rules between layers, as data: which packages each layer may import.

Kept here (not only in a test) so the rule is written once, and the hygiene test and the docs read one table.
Layers import downward only: the pure layers use the standard library (config may also use pyyaml), transport
never imports textual, ui never imports asyncssh, and the demo cluster (which plays hosts over SSH) never
imports textual or the ui.
"""

from __future__ import annotations

PURE_LAYERS: tuple[str, ...] = (
    "trainmon_tui.model",
    "trainmon_tui.sanitize",
    "trainmon_tui.parsers",
    "trainmon_tui.analysis",
    "trainmon_tui.state",
)

# Third-party top-level packages a layer must never pull in (directly or through what it imports).
FORBIDDEN_IMPORTS: dict[str, tuple[str, ...]] = {
    **{
        layer: ("yaml", "asyncssh", "textual", "textual_plotext", "plotext", "pynvml")
        for layer in PURE_LAYERS
    },
    "trainmon_tui.config": ("asyncssh", "textual", "textual_plotext", "plotext", "pynvml"),
    "trainmon_tui.transport": ("textual", "textual_plotext", "plotext"),
    "trainmon_tui.ui": ("asyncssh",),
    # The simulated cluster plays hosts over SSH (asyncssh, the transport layer) and never draws anything.
    "trainmon_tui.demo": ("textual", "textual_plotext", "plotext"),
}

# Project packages a layer must not import: the layers above it.
FORBIDDEN_PROJECT_IMPORTS: dict[str, tuple[str, ...]] = {
    "trainmon_tui.model": (
        "trainmon_tui.parsers",
        "trainmon_tui.state",
        "trainmon_tui.transport",
        "trainmon_tui.ui",
    ),
    "trainmon_tui.parsers": (
        "trainmon_tui.state",
        "trainmon_tui.analysis",
        "trainmon_tui.transport",
        "trainmon_tui.ui",
    ),
    "trainmon_tui.analysis": ("trainmon_tui.transport", "trainmon_tui.ui"),
    "trainmon_tui.state": ("trainmon_tui.transport", "trainmon_tui.ui"),
    "trainmon_tui.config": ("trainmon_tui.transport", "trainmon_tui.ui"),
    "trainmon_tui.transport": ("trainmon_tui.ui",),
    "trainmon_tui.demo": ("trainmon_tui.ui",),
}
