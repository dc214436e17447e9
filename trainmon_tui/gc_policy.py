"""How the cyclic garbage collector runs in a trainmon-tui process: rarely, and never over startup objects.

Almost everything this program allocates is freed by reference counting the moment it is dropped: a
snapshot, the rows drawn from it, a parsed record, a line. CPython's default thresholds (700, 10, 10) still
run a young collection every 700 container allocations and, every ten seconds or so on a big fleet, a full
one that walks every container object alive: Textual's and asyncssh's modules, classes and caches as much
as our own data. Measured in the dashboard watching 64 hosts x 8 GPUs (BENCHMARKS.md), that was about
2 % of a core out of 13 %, about 9 young collections a second and full ones of 110-140 ms each.

So a process that runs for long (the dashboard, ``report``) or allocates fast (``parse-log``) raises the
young threshold, which makes collections rare and each one still short, and freezes the objects that exist
once the program is loaded (``gc.freeze``): modules, classes and functions live as long as the process, so
the collector need not walk them again. Cyclic garbage still gets collected, only later; what reference
counting frees (nearly everything) is freed at once as before.

Applied by the program's entry point only (:func:`trainmon_tui.cli.entry`), never by code that tests import,
so a test process keeps CPython's defaults.
"""

from __future__ import annotations

import gc

#: Container allocations (net of frees) between young collections; CPython's default is 700.
YOUNG_THRESHOLD = 20_000
#: Young collections per middle one, and middle ones per full one (CPython's defaults: 10 and 10).
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 10


def settle_collector() -> None:
    """Collect rarely from now on, and leave every object alive now out of all later collections."""
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    gc.freeze()
