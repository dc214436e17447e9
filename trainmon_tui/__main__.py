"""Entry point for ``python -m trainmon_tui``."""

from trainmon_tui.cli import entry

raise SystemExit(entry())
