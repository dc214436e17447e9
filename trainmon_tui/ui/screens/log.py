"""One rank's log, or all ranks of a run merged, read live from the log book.

``LogScreen(run, host, rank, path, line)`` shows the file ``path`` (on ``host`` when given), else the file
of ``rank`` on ``host`` (see :func:`~trainmon_tui.state.logbook.pick_file`); with neither a path nor a rank
it shows every file of the run (of ``host`` only, when given) interleaved in arrival order, each line
prefixed and coloured by rank. ``line`` scrolls to that line of the file and highlights it.

Keys: it follows new lines at the bottom until scrolled up (``End``, ``G`` or ``0`` follow again, ``g`` or
``Home`` go to the top); ``/`` searches (case-insensitive unless the text has a capital), ``n`` / ``N`` go to
the next / previous match; ``e`` shows only the lines events point at, with the event's kind; ``E`` goes
to the first error (the earliest line an event points at); ``w`` wraps long lines; Esc closes the search
box, else goes back.

Every line drawn is a cleaned string from the log book rendered as :class:`rich.text.Text` (never markup):
a host cannot send a control sequence through it to the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from trainmon_tui.sanitize import clean_remote_text
from trainmon_tui.state.logbook import LogFileView, MergedLog, pick_file
from trainmon_tui.state.store import EventEntry, RunSnapshot, StoreSnapshot
from trainmon_tui.ui.format import fmt_duration
from trainmon_tui.ui.widgets.log_lines import (
    EventsDocument,
    FileDocument,
    LogDocument,
    LogLines,
    LogRow,
    MergedDocument,
    RowKey,
    rank_colour,
    rank_label,
)

_NOTE_STYLE = "#ffd75f"


def run_of_rank(snapshot: StoreSnapshot, host: str, rank: int) -> str | None:
    """The run whose rank ``rank`` runs on ``host``: by its progress, else by its log files; None if none."""
    for name, run in snapshot.runs.items():
        if any(entry.rank == rank and entry.host == host for entry in run.ranks):
            return name
    for name, views in snapshot.log_files.items():
        if pick_file([view for view in views if view.host == host], host=host, rank=rank, path=None):
            return name
    return None


def view_of_event(entry: EventEntry, views: Sequence[LogFileView]) -> LogFileView | None:
    """The file an event's line is in: the path it names, else (older senders) its host's file of its rank."""
    if entry.path is not None:
        for view in views:
            if view.path == entry.path and view.host == entry.host:
                return view
        return None
    rank = entry.event.rank
    on_host = [view for view in views if view.host == entry.host]
    if rank is None:
        return on_host[0] if len(on_host) == 1 else None
    return pick_file(on_host, host=entry.host, rank=rank, path=None)


class LogScreen(Screen[None]):
    """A rank's log, or the merged log of a run; see the module docstring."""

    DEFAULT_CSS = """
    LogScreen #search {
        dock: bottom;
        display: none;
    }
    LogScreen.-searching #search {
        display: block;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", show=True),
        Binding("slash", "search", "Search", show=True),
        Binding("n", "next_match", "Next match", show=True),
        Binding("N", "previous_match", "Previous match", show=True),
        Binding("e", "toggle_events", "Events only", show=True),
        Binding("E", "first_error", "First error", show=True),
        Binding("w", "toggle_wrap", "Wrap", show=True),
        Binding("G,0", "follow", "Follow", show=True),
        Binding("g", "top", "Top", show=False),
    ]

    def __init__(
        self,
        *,
        run: str,
        host: str | None = None,
        rank: int | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__()
        self.run_name = run
        self.host = host
        self.rank = rank
        self.path = path
        self.merged = path is None and rank is None
        self.events_only = False
        self.snapshot: StoreSnapshot | None = None
        self.view: LogFileView | None = None
        self._merged_log = MergedLog()
        self._pending_line = line if not self.merged else None
        self._ready = False
        self._match_note = ""
        # What the document was last built from: (the run's views, its events, events_only).
        self._shown: tuple[object, object, object] | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(self._title()), id="status")
        yield LogLines(id="log")
        yield Input(placeholder="search (Enter finds, Esc closes)", id="search")
        yield Footer()

    @property
    def log_lines(self) -> LogLines:
        return self.query_one("#log", LogLines)

    def on_mount(self) -> None:
        self._ready = True
        self.log_lines.focus()
        self.watch(self.log_lines, "following", self._following_changed, init=False)
        if self._pending_line is not None:
            self.log_lines.following = False
        snapshot = self.snapshot or getattr(self.app, "latest_snapshot", None)
        if isinstance(snapshot, StoreSnapshot):
            self.show_snapshot(snapshot)

    # ------------------------------------------------------------------------------------------ drawing

    def _title(self) -> str:
        if self.merged:
            where = "all ranks" if self.host is None else f"all ranks on {self.host}"
            return f"{self.run_name} · {where}"
        parts = [self.run_name]
        if self.host is not None:
            parts.append(self.host)
        if self.rank is not None:
            parts.append(f"rank {self.rank}")
        if self.path is not None:
            parts.append(self.path)
        return " · ".join(parts)

    def _views(self, snapshot: StoreSnapshot) -> tuple[LogFileView, ...]:
        views = snapshot.logs(self.run_name)
        if self.merged and self.host is not None:
            return tuple(view for view in views if view.host == self.host)
        return views

    def _events(
        self, run: RunSnapshot | None, views: Sequence[LogFileView]
    ) -> list[tuple[EventEntry, LogFileView]]:
        """The run's events on the lines shown here, with their file, in arrival order."""
        if run is None:
            return []
        shown = {view.key for view in views} if self.merged else ({self.view.key} if self.view else set())
        found = []
        for entry in run.events:
            view = view_of_event(entry, views)
            if view is not None and view.key in shown:
                found.append((entry, view))
        return found

    def show_snapshot(self, snapshot: StoreSnapshot) -> None:
        self.snapshot = snapshot
        if not self._ready:
            return
        all_views = snapshot.logs(self.run_name)
        run = snapshot.runs.get(self.run_name)
        events_seen = () if run is None else run.events
        shown = (all_views, events_seen, self.events_only)
        if self._shown is not None and all(
            now is before for now, before in zip(shown, self._shown, strict=True)
        ):
            # Same files, same events (the store shares unchanged pieces): only ages moved.
            self._draw_status(snapshot)
            return
        self._shown = shown
        views = self._views(snapshot)
        previous_key = self.view.key if self.view is not None else None
        if not self.merged:
            self.view = pick_file(views, host=self.host, rank=self.rank, path=self.path)
            if self.view is None:
                self._draw_status(snapshot)
                return
        events = self._events(run, views)
        document = self._document(views, events)
        same_source = self.merged or previous_key == (self.view.key if self.view else None)
        self.log_lines.set_document(document, keep_place=same_source)
        self._go_to_pending_line(document)
        self._draw_status(snapshot)

    def _document(
        self, views: Sequence[LogFileView], events: Sequence[tuple[EventEntry, LogFileView]]
    ) -> LogDocument:
        if self.events_only:
            return EventsDocument(
                [self._event_row(entry, view) for entry, view in events], merged=self.merged
            )
        if self.merged:
            self._merged_log.update(views)
            tags = {
                (view.host, view.path, entry.event.line): entry.event.kind.value for entry, view in events
            }
            return MergedDocument(self._merged_log.lines(), tags)
        assert self.view is not None
        return FileDocument(self.view, {entry.event.line: entry.event.kind.value for entry, _ in events})

    @staticmethod
    def _event_row(entry: EventEntry, view: LogFileView) -> LogRow:
        event = entry.event
        text = view.line(event.line)
        if text is None:
            # The book no longer holds the line: show what the event said about it.
            text = f"{clean_remote_text(event.text)}  (line no longer held)"
        rank = event.rank if event.rank is not None else view.rank
        return LogRow((view.host, view.path, event.line), event.line, rank, text, event.kind.value)

    def _go_to_pending_line(self, document: LogDocument) -> None:
        line, view = self._pending_line, self.view
        if line is None or view is None:
            return
        self._pending_line = None
        key: RowKey = (view.host, view.path, line)
        index = document.find(key)
        if index is None:
            held = f"lines {view.first_line}-{view.end_line - 1} are held" if len(view) else "no lines yet"
            self.notify(f"line {line} is not in the log book ({held})", severity="warning")
            return
        self.log_lines.go_to(index)

    def _draw_status(self, snapshot: StoreSnapshot) -> None:
        # What changes with keys first, so a narrow terminal still shows it; where the lines come from last.
        line = Text(self._title(), style="bold")
        log = self.log_lines
        view = self.view
        if not self.merged and view is None:
            line.append(" · waiting for the first line of this log", style=_NOTE_STYLE)
        else:
            line.append(" · following" if log.following else " · paused", style="italic")
        if self.events_only:
            line.append(" · events only", style=_NOTE_STYLE)
        if self._match_note:
            line.append(f" · {self._match_note}")
        if log.wrap:
            line.append(" · wrap")
        if view is not None and not self.merged:
            line.append(f" · lines {view.first_line}-{view.end_line - 1}")
            line.append(f" · last {fmt_duration(snapshot.now - view.last_t)} ago")
            if view.path != self.path:
                line.append(f" · {view.path}")
            if self.rank is not None and view.rank != self.rank:
                ranks = ", ".join(map(str, sorted(view.ranks)))
                line.append(f" (shared by ranks {ranks})", style=_NOTE_STYLE)
        elif self.merged:
            line.append(" ·")
            for view_of_rank in self._views(snapshot):
                line.append(f" {rank_label(view_of_rank.rank)}", style=rank_colour(view_of_rank.rank))
        self.query_one("#status", Static).update(line)

    def _following_changed(self) -> None:
        if self.snapshot is not None:
            self._draw_status(self.snapshot)

    def _redraw(self) -> None:
        if self.snapshot is not None:
            self.show_snapshot(self.snapshot)

    # --------------------------------------------------------------------------------------------- keys

    def action_back(self) -> None:
        if self.has_class("-searching"):
            self._close_search()
            return
        self.app.pop_screen()

    def action_search(self) -> None:
        self.add_class("-searching")
        self.query_one("#search", Input).focus()

    def _close_search(self) -> None:
        self.remove_class("-searching")
        self.log_lines.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        needle = event.value.strip()
        self._close_search()
        log = self.log_lines
        log.set_search(needle or None)
        if not needle:
            self._match_note = ""
        else:
            self._jump_to_match(forward=True)
        self._redraw()

    def _jump_to_match(self, *, forward: bool) -> None:
        log = self.log_lines
        needle = self.query_one("#search", Input).value.strip()
        if not needle:
            self.notify("nothing to find: / to search", severity="warning")
            return
        index = log.find_match(forward=forward)
        if index is None:
            self._match_note = f"'{needle}' not found"
            self.notify(f"'{needle}' not found", severity="warning")
        else:
            log.go_to(index)
            before, total = log.match_position(index)
            self._match_note = f"'{needle}' {before + 1} of {total}"
        if self.snapshot is not None:
            self._draw_status(self.snapshot)

    def action_next_match(self) -> None:
        self._jump_to_match(forward=True)

    def action_previous_match(self) -> None:
        self._jump_to_match(forward=False)

    def action_toggle_events(self) -> None:
        cursor = self.log_lines.cursor_index
        document = self.log_lines.document
        key = document.row(cursor).key if document is not None and cursor is not None else None
        self.events_only = not self.events_only
        self._redraw()
        document = self.log_lines.document
        if key is not None and document is not None:
            index = document.find(key)
            if index is not None:
                self.log_lines.go_to(index)

    def action_first_error(self) -> None:
        snapshot, log = self.snapshot, self.log_lines
        document = log.document
        if snapshot is None or document is None:
            return
        views = self._views(snapshot)
        events = self._events(snapshot.runs.get(self.run_name), views)
        found = [
            index
            for index in (document.find((view.host, view.path, entry.event.line)) for entry, view in events)
            if index is not None
        ]
        if not found:
            self.notify("no errors in what this log holds", severity="information")
            return
        log.go_to(min(found))
        self._draw_status(snapshot)

    def action_toggle_wrap(self) -> None:
        self.log_lines.set_wrap(not self.log_lines.wrap)
        if self.snapshot is not None:
            self._draw_status(self.snapshot)

    def action_follow(self) -> None:
        self.log_lines.follow()

    def action_top(self) -> None:
        self.log_lines.action_scroll_home()
