"""trainmon-tui: a terminal dashboard for training runs on remote GPU machines."""

__version__ = "0.1.0"
