"""User pattern alerts: the ``grep`` people run by hand over a training log, as a rule (``alerts``).

A rule is a regular expression and, optionally, a maximum count per epoch: ``DEGENERACY-GUARD.*reset
applied`` at most 10 times an epoch is the check a hand-written status report asks its reader to run with
``grep -c``. Lines reach a :class:`PatternWatch` through :meth:`PatternWatch.observe` (the caller sees the
log lines; the store keeps only records and events). Pure and stateful: it counts matches per rule, run,
host, rank and epoch, and remembers the newest matching line as evidence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from trainmon_tui.analysis.health_settings import PatternRule
from trainmon_tui.sanitize import clean_remote_text


@dataclass(frozen=True, slots=True)
class PatternHit:
    """The state of one rule for one subject: matches in the current epoch, the newest match."""

    rule: PatternRule
    run: str
    host: str
    rank: int | None
    epoch: int | None
    count: int
    # Store-clock time of the first match over the limit (or of the first match, for a rule with no limit).
    since: float
    last_t: float
    line: str
    path: str | None
    line_no: int | None

    @property
    def firing(self) -> bool:
        limit = self.rule.max_per_epoch
        return limit is None or self.count > limit


@dataclass(slots=True)
class _Counter:
    epoch: int | None
    count: int
    since: float
    last_t: float
    line: str
    path: str | None
    line_no: int | None


class PatternWatch:
    """Counts the matches of a run's user pattern rules in the lines it is shown."""

    def __init__(self, rules_by_run: dict[str, Sequence[PatternRule]]) -> None:
        self._rules = {run: tuple(rules) for run, rules in rules_by_run.items() if rules}
        self._counters: dict[tuple[str, str, str, int | None], _Counter] = {}

    def has_rules(self, run: str) -> bool:
        return run in self._rules

    def observe(
        self,
        run: str,
        host: str,
        text: str,
        *,
        t: float,
        rank: int | None = None,
        epoch: int | None = None,
        path: str | None = None,
        line_no: int | None = None,
    ) -> None:
        """One log line of ``run`` read on ``host`` at store time ``t``; ``epoch`` is the epoch the rank is
        in (None: unknown, every match counts towards one running total)."""
        rules = self._rules.get(run)
        if rules is None:
            return
        for rule in rules:
            if rule.pattern.search(text) is None:
                continue
            key = (rule.name, run, host, rank)
            counter = self._counters.get(key)
            if counter is None or counter.epoch != epoch:
                counter = _Counter(epoch, 0, t, t, "", path, line_no)
                self._counters[key] = counter
            counter.count += 1
            limit = rule.max_per_epoch
            if limit is not None and counter.count == limit + 1:
                # The condition starts with the match that goes over the limit.
                counter.since = t
            counter.last_t = t
            counter.line = clean_remote_text(text.strip())
            counter.path = path
            counter.line_no = line_no
        if len(self._counters) > 4096:
            # A log with ever-new ranks or hosts must not grow this without bound: keep the newest.
            newest = sorted(self._counters.items(), key=lambda item: item[1].last_t)[-1024:]
            self._counters = dict(newest)

    def hits(self, current_epoch: dict[tuple[str, int | None], int | None]) -> Iterator[PatternHit]:
        """The state of every rule that matched; a count from an epoch the rank has left is not reported
        (``current_epoch``: (run, rank) -> the epoch the rank is in now, as the store last said)."""
        rules = {(run, rule.name): rule for run, rules in self._rules.items() for rule in rules}
        for (name, run, host, rank), counter in self._counters.items():
            rule = rules[(run, name)]
            now_epoch = current_epoch.get((run, rank), counter.epoch)
            if rule.max_per_epoch is not None and now_epoch != counter.epoch:
                continue
            yield PatternHit(
                rule,
                run,
                host,
                rank,
                counter.epoch,
                counter.count,
                counter.since,
                counter.last_t,
                counter.line,
                counter.path,
                counter.line_no,
            )
