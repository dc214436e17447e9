"""The built-in simulated cluster behind ``trainmon-tui --demo``: hosts played by in-process SSH servers.

``async with DemoCluster(hosts=3, gpus_per_host=8) as cluster:`` gives ``cluster.config``, a Config for a
real :class:`~trainmon_tui.transport.fleet.Fleet`; ``python -m trainmon_tui.demo serve`` runs the same
servers in a process of their own. The simulation itself (:mod:`.cluster`, :mod:`.logs`) is pure; what each
command answers is :mod:`.commands`; the SSH side is :mod:`.server`.
"""

from __future__ import annotations

from trainmon_tui.demo.cluster import DEFAULT_DROP, DropSchedule, Simulation
from trainmon_tui.demo.server import DemoCluster

__all__ = ["DEFAULT_DROP", "DemoCluster", "DropSchedule", "Simulation"]
