"""User pattern alerts fed from the store's log book: the HealthMonitor reads each snapshot's new log lines
itself (as in the dashboard and in ``report``), remembering per file where it stopped.

Real log text (the nanoGPT excerpt of tests/fixtures/health) goes through the real LogParser into a Store, as
the log collector sends it: records and events to the store, the raw lines to its log book. Nothing here calls
``observe_line``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainmon_tui.analysis.alerts import Alert, AlertKind, Severity
from trainmon_tui.analysis.health import HealthMonitor
from trainmon_tui.config import parse_config
from trainmon_tui.parsers.trainlog.engine import LogParser
from trainmon_tui.state.store import Store

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "health"
    / "nanogpt_iter_loss_mfu_nan_after_ckpt_quoted.txt"
)
# The excerpt was quoted in a GitHub issue: every line starts with "> " and a blank "> " line follows it.
NANOGPT = [line[2:] for line in FIXTURE.read_text().splitlines() if line.strip() != ">"]
CHECKPOINT_LINE = NANOGPT.index("saving checkpoint to out")
RUN = "gpt2"
HOST = "node-0"
PATH = "/data/gpt2/rank0.log"

CONFIG = """\
hosts:
  - {name: node-0, address: 10.0.0.10}
runs:
  - name: gpt2
    hosts: [node-0]
    logs: ["/data/gpt2/rank*.log"]
    alerts:
      - {name: checkpoint_saved, pattern: 'saving checkpoint', severity: info}
      - {name: degeneracy_resets, pattern: 'DEGENERACY-GUARD.*reset applied', max_per_epoch: 10}
"""


class BookFeeder:
    """Lines of log files into a store the way the log collector sends them."""

    def __init__(self) -> None:
        self.store = Store()
        self.monitor = HealthMonitor(parse_config(CONFIG, "hosts.yaml"))
        self.parsers: dict[str, LogParser] = {}
        self.counts: dict[str, int] = {}

    def feed(self, lines: Sequence[str], t: float, path: str = PATH) -> None:
        parser = self.parsers.setdefault(path, LogParser(default_rank=0))
        first = self.counts.get(path, 0) + 1
        for offset, line in enumerate(lines):
            records, events = parser.feed(line)
            for record in records:
                self.store.apply_record(RUN, HOST, record, t)
            for event in events:
                self.store.apply_event(RUN, HOST, event, t, path=path)
            self.counts[path] = first + offset
        self.store.append_log_lines(RUN, HOST, path, list(lines), t, first_line=first, ranks=parser.ranks)

    def restart(self, path: str = PATH) -> None:
        """The file was truncated and written again from its first line."""
        self.parsers.pop(path, None)
        self.counts.pop(path, None)

    def check(self, t: float) -> tuple[Alert, ...]:
        return self.monitor.update(self.store.snapshot(t))


def patterns(alerts: Sequence[Alert], *, active: bool = True) -> list[Alert]:
    return [alert for alert in alerts if alert.kind == AlertKind.PATTERN and alert.active == active]


def guard_line(epoch: int, batch: int) -> str:
    return f"Epoch {epoch}/20 batch {batch}: [DEGENERACY-GUARD] head variance 3.1e-09 < 1e-08, reset applied"


def test_a_pattern_in_the_log_book_raises_an_alert_at_its_line_and_resolves_on_progress() -> None:
    feeder = BookFeeder()
    feeder.feed(NANOGPT[:CHECKPOINT_LINE], 100.0)
    assert patterns(feeder.check(100.0)) == []
    feeder.feed([NANOGPT[CHECKPOINT_LINE]], 130.0)
    [alert] = patterns(feeder.check(130.0))
    assert (alert.severity, alert.host, alert.rank, alert.run) == (Severity.INFO, HOST, 0, RUN)
    assert (alert.log_path, alert.log_line) == (PATH, CHECKPOINT_LINE + 1)
    assert "checkpoint_saved on node-0, rank 0: saving checkpoint to out" in alert.message
    # Read once: the same snapshot again, or a later one without new lines, does not count it twice.
    [again] = patterns(feeder.check(131.0))
    assert "times" not in again.message
    # The next iterations (3000 was the eval's step too, 3010 is new): the rank went on, the alert resolves.
    feeder.feed(NANOGPT[CHECKPOINT_LINE + 1 : CHECKPOINT_LINE + 3], 140.0)
    alerts = feeder.check(140.0)
    assert patterns(alerts) == []
    [resolved] = patterns(alerts, active=False)
    assert resolved.resolved_at == 140.0 and resolved.log_line == CHECKPOINT_LINE + 1


def test_matches_per_epoch_are_counted_from_the_log_book_backlog_excluded() -> None:
    feeder = BookFeeder()
    # The backlog held when the monitor first looks: twelve resets, but in which epoch is unknown.
    feeder.feed(["Epoch 2/20", *(guard_line(2, batch) for batch in range(12))], 10.0)
    assert patterns(feeder.check(10.0)) == []
    # Live lines of epoch 2: ten more is still the limit, the eleventh goes over it.
    feeder.feed([guard_line(2, batch) for batch in range(12, 22)], 20.0)
    assert patterns(feeder.check(20.0)) == []
    feeder.feed([guard_line(2, 22)], 30.0)
    [alert] = patterns(feeder.check(30.0))
    assert (
        "degeneracy_resets matched 11 times in epoch 2 on node-0, rank 0 (limit 10 per epoch)"
        in alert.message
    )
    assert (alert.since, alert.log_line, alert.severity) == (30.0, 24, Severity.WARNING)
    # A new epoch starts the count again.
    feeder.feed(["Epoch 3/20", guard_line(3, 0)], 40.0)
    assert patterns(feeder.check(40.0)) == []


def test_a_file_that_starts_over_is_read_again_from_its_first_line() -> None:
    feeder = BookFeeder()
    feeder.feed(NANOGPT[:5], 10.0)
    feeder.check(10.0)
    feeder.restart()
    # Truncated and rewritten: the checkpoint line is now line 2, fewer lines than were read before.
    feeder.feed([NANOGPT[0], NANOGPT[CHECKPOINT_LINE]], 20.0)
    [alert] = patterns(feeder.check(20.0))
    assert alert.log_line == 2


def test_runs_without_pattern_rules_are_not_read() -> None:
    config = CONFIG.split("    alerts:", maxsplit=1)[0]
    feeder = BookFeeder()
    feeder.monitor = HealthMonitor(parse_config(config, "hosts.yaml"))
    feeder.feed(NANOGPT, 10.0)
    feeder.check(10.0)
    snapshot = feeder.store.snapshot(10.0)
    [view] = snapshot.logs(RUN)
    assert len(view) == len(NANOGPT)
    assert patterns(feeder.monitor.update(snapshot), active=True) == []
    # Nothing was cleaned for the rules: the book's chunks were never read.
    assert all(chunk.clean is None for chunk in view._chunks)
