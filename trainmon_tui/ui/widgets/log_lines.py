"""A log as a scrolling list of lines that renders only the rows on screen (Textual's Line API).

:class:`LogLines` draws a :class:`LogDocument`: a sequence of rows, each a line of a log file with its number,
rank and, when an event points at it, the event's kind. Three documents exist: one file
(:class:`FileDocument`), the files of a run interleaved by arrival (:class:`MergedDocument`, rows prefixed and
coloured by rank), and the lines events point at (:class:`EventsDocument`). A document over a 10,000-line log
costs nothing up front: rows are made when drawn, from snapshot views whose text is cleaned on first read.

Behaviour: it follows the end while :attr:`LogLines.following` (new rows appear at the bottom); scrolling up
stops that and :meth:`LogLines.follow` resumes it. A new document of the same source keeps the line at the
top of the screen where it was, even when old lines dropped off the front. A cursor row (a search match, the
line a drill-down asked for) is drawn highlighted; search matches are highlighted on every row drawn. Wrapping
breaks lines at the cell width.

Text reaches the terminal only as :class:`rich.text.Text` built from cleaned strings, never as markup, so
a log line cannot style, move or retitle the terminal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar, NamedTuple, Protocol

from rich.cells import cell_len, chop_cells
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip

from trainmon_tui.state.logbook import LogFileView, MergedLines
from trainmon_tui.ui.widgets.pass_style import PassStyle

#: (host, path, line number): names a line across snapshots.
RowKey = tuple[str, str, int]

#: Rank colours, each an exact entry of the xterm 256-colour cube (no rounding in tmux with 256 colours),
#: light enough to read on a dark background and far apart from each other and from the error red.
RANK_PALETTE: tuple[str, ...] = (
    "#5fafff",  # 75
    "#87d787",  # 114
    "#ffaf5f",  # 215
    "#d787d7",  # 176
    "#5fd7d7",  # 80
    "#ffd75f",  # 221
    "#afafff",  # 147
    "#d7af87",  # 180
)
_UNKNOWN_RANK_COLOUR = "#bcbcbc"  # 250
_GUTTER_STYLE = Style(dim=True)
_TAG_STYLE = Style(color="#ff5f5f", bold=True)  # 203
_MATCH_STYLE = Style(color="#000000", bgcolor="#ffd700")  # 16 on 220
_CURSOR_STYLE = Style(bgcolor="#444444", bold=True)  # 238
_TAB_SIZE = 8
_MIN_TEXT_WIDTH = 10


def rank_colour(rank: int | None) -> str:
    return _UNKNOWN_RANK_COLOUR if rank is None else RANK_PALETTE[rank % len(RANK_PALETTE)]


def rank_label(rank: int | None) -> str:
    return "r?" if rank is None else f"r{rank}"


class LogRow(NamedTuple):
    """One row: a line of a file, cleaned (``text``), and the kind of event on it if any (``tag``)."""

    key: RowKey
    number: int
    rank: int | None
    text: str
    tag: str | None


class LogDocument(Protocol):
    """What :class:`LogLines` draws: rows by index, and where a known line is now."""

    @property
    def merged(self) -> bool:
        """True when rows come from several files (each row then shows its rank)."""
        ...

    @property
    def number_width(self) -> int:
        """Digits of the largest line number."""
        ...

    def __len__(self) -> int: ...

    def row(self, index: int) -> LogRow: ...

    def text(self, index: int) -> str:
        """The row's text alone (what search reads), cheaper than :meth:`row`."""
        ...

    def find(self, key: RowKey) -> int | None:
        """The index of the row showing line ``key``; None when it is not in the document."""
        ...


def _digits(number: int) -> int:
    return max(len(str(number)), 1)


class FileDocument:
    """Every held line of one file. ``tags``: line number -> kind of the event on that line."""

    merged = False

    def __init__(self, view: LogFileView, tags: Mapping[int, str]):
        self.view = view
        self._tags = tags
        self.number_width = _digits(view.end_line - 1)

    def __len__(self) -> int:
        return len(self.view)

    def row(self, index: int) -> LogRow:
        view = self.view
        number = view.first_line + index
        return LogRow(
            (view.host, view.path, number), number, view.rank, self.text(index), self._tags.get(number)
        )

    def text(self, index: int) -> str:
        return self.view.line(self.view.first_line + index) or ""

    def find(self, key: RowKey) -> int | None:
        host, path, number = key
        view = self.view
        if (host, path) != view.key or not view.holds(number):
            return None
        return number - view.first_line


class MergedDocument:
    """The lines of several files in arrival order. ``tags``: (host, path, line) -> kind of event there."""

    merged = True

    def __init__(self, merged: MergedLines, tags: Mapping[RowKey, str]):
        self._merged = merged
        self._tags = tags
        self.number_width = _digits(max((view.end_line - 1 for view in merged.views), default=1))

    def __len__(self) -> int:
        return len(self._merged)

    def row(self, index: int) -> LogRow:
        entry = self._merged.entry(index)
        view = entry.view
        key = (view.host, view.path, entry.number)
        return LogRow(key, entry.number, view.rank, view.line(entry.number) or "", self._tags.get(key))

    def text(self, index: int) -> str:
        entry = self._merged.entry(index)
        return entry.view.line(entry.number) or ""

    def find(self, key: RowKey) -> int | None:
        return self._merged.index_of(*key)


class EventsDocument:
    """Rows made up front (a run keeps a few hundred events at most): one per event line."""

    def __init__(self, rows: Sequence[LogRow], *, merged: bool):
        self._rows = tuple(rows)
        self.merged = merged
        self.number_width = _digits(max((row.number for row in self._rows), default=1))
        self._index = {row.key: index for index, row in enumerate(self._rows)}

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, index: int) -> LogRow:
        return self._rows[index]

    def text(self, index: int) -> str:
        return self._rows[index].text

    def find(self, key: RowKey) -> int | None:
        return self._index.get(key)


class LogLines(PassStyle, ScrollView, can_focus=True):
    """A scrolling view of a :class:`LogDocument`; see the module docstring."""

    DEFAULT_CSS = """
    LogLines {
        background: $surface;
        overflow-x: auto;
        overflow-y: scroll;
        height: 1fr;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "scroll_down", "Down", show=False),
        Binding("k", "scroll_up", "Up", show=False),
        Binding("h", "scroll_left", "Left", show=False),
        Binding("l", "scroll_right", "Right", show=False),
    ]

    #: True while new lines scroll into view at the bottom.
    following: var[bool] = var(True)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._document: LogDocument | None = None
        self._wrap = False
        self._needle: str | None = None
        self._needle_folded = True
        self._cursor_key: RowKey | None = None
        self._max_text_width = 0
        # Wrap mode: the first screen row of each document row, and one more entry for the end.
        self._row_starts: list[int] = [0]
        self._wrap_width = 0
        # A row to bring to the middle once the widget has a size.
        self._pending_center: int | None = None

    # --------------------------------------------------------------------------------------------- reading

    @property
    def document(self) -> LogDocument | None:
        return self._document

    @property
    def wrap(self) -> bool:
        return self._wrap

    @property
    def cursor_index(self) -> int | None:
        """The index of the highlighted row in the current document, if it is in it."""
        if self._cursor_key is None or self._document is None:
            return None
        return self._document.find(self._cursor_key)

    @property
    def top_index(self) -> int:
        """The index of the row at the top of the screen."""
        return self._index_at(self.scroll_offset.y)

    def _visible_indexes(self) -> range:
        document = self._document
        if document is None or not len(document):
            return range(0)
        first = self._index_at(self.scroll_offset.y)
        last = self._index_at(self.scroll_offset.y + max(self.scrollable_content_region.height, 1) - 1)
        return range(first, min(last + 1, len(document)))

    def visible_rows(self) -> list[LogRow]:
        """The rows on screen now (for tests and status lines)."""
        document = self._document
        if document is None:
            return []
        return [document.row(index) for index in self._visible_indexes()]

    # --------------------------------------------------------------------------------------------- writing

    def set_document(self, document: LogDocument, *, keep_place: bool) -> None:
        """Show ``document``. With ``keep_place`` (a newer version of the same lines) the top line of the
        screen stays where it is unless following; otherwise the view starts over at the end."""
        previous = self._document
        anchor: RowKey | None = None
        known_rows = 0
        if keep_place and previous is not None and len(previous):
            if not self.following:
                anchor = previous.row(min(self.top_index, len(previous) - 1)).key
            last = len(previous) - 1
            if (
                len(document) > last
                and document.row(0).key == previous.row(0).key
                and document.row(last).key == previous.row(last).key
            ):
                # Lines were only added at the end: the rows counted for wrapping still stand.
                known_rows = len(previous)
        if not keep_place:
            self._max_text_width = 0
        self._document = document
        self._update_layout(known_rows=known_rows)
        if self.following:
            self._scroll_to_end()
        elif anchor is not None:
            index = document.find(anchor)
            if index is not None:
                self.scroll_to(y=self._first_row_of(index), animate=False)
        self._measure_visible()
        self.refresh()

    def set_wrap(self, wrap: bool) -> None:
        if wrap == self._wrap:
            return
        top = self.top_index if self._document is not None and len(self._document) else 0
        self._wrap = wrap
        self._update_layout()
        if self.following:
            self._scroll_to_end()
        else:
            self.scroll_to(x=0, y=self._first_row_of(top), animate=False)
        self.refresh()

    def set_search(self, needle: str | None) -> None:
        """Highlight ``needle`` (case-insensitive unless it has a capital letter); None clears it."""
        self._needle = needle or None
        self._needle_folded = needle is not None and needle == needle.lower()
        self.refresh()

    def go_to(self, index: int) -> None:
        """Highlight row ``index`` and bring it to the middle of the screen; following stops."""
        document = self._document
        if document is None or not 0 <= index < len(document):
            return
        self.following = False
        self._cursor_key = document.row(index).key
        self._center(index)
        self.refresh()

    def mark(self, key: RowKey | None) -> None:
        """Highlight the row of line ``key`` (also once it appears in a later document)."""
        self._cursor_key = key
        self.refresh()

    def follow(self) -> None:
        """Go to the end and stay there as lines come."""
        self.following = True
        self._scroll_to_end()

    # -------------------------------------------------------------------------------------------- searching

    def _matches(self, text: str) -> bool:
        needle = self._needle
        if needle is None:
            return False
        return needle in (text.lower() if self._needle_folded else text)

    def find_match(self, *, forward: bool) -> int | None:
        """The next (or previous) row matching the search, from the cursor when it is on screen (else from
        the top of the screen), wrapping around the ends; None when no row matches."""
        document = self._document
        if document is None or self._needle is None or not len(document):
            return None
        count = len(document)
        current = self.cursor_index
        if current is not None and current not in self._visible_indexes():
            current = None
        if current is None:
            start = self.top_index if forward else self.top_index + 1
        else:
            start = current + 1 if forward else current
        step = 1 if forward else -1
        index = start if forward else start - 1
        for _ in range(count):
            index %= count
            if self._matches(document.text(index)):
                return index
            index += step
        return None

    def match_position(self, index: int) -> tuple[int, int]:
        """(matching rows before row ``index``, matching rows in all): "match 3 of 17"."""
        document = self._document
        if document is None or self._needle is None:
            return (0, 0)
        matching = [at for at in range(len(document)) if self._matches(document.text(at))]
        before = sum(1 for at in matching if at < index)
        return (before, len(matching))

    # ----------------------------------------------------------------------------------------------- layout

    def _gutter_width(self) -> int:
        document = self._document
        if document is None:
            return 0
        width = document.number_width + 1
        if document.merged:
            width += 5  # "r12 " and a space
        return width

    def _text_width(self) -> int:
        return max(self.scrollable_content_region.width - self._gutter_width(), _MIN_TEXT_WIDTH)

    def _content(self, row: LogRow) -> str:
        text = row.text if "\t" not in row.text else row.text.expandtabs(_TAB_SIZE)
        return text if row.tag is None else f"[{row.tag}] {text}"

    def _rows_of(self, content: str, width: int) -> int:
        if content.isascii():
            return max(1, math.ceil(len(content) / width))
        return max(1, len(chop_cells(content, width)))

    def _update_layout(self, *, known_rows: int = 0) -> None:
        """Size the scrollable area; in wrap mode count the screen rows of each document row, reusing the
        counts of the first ``known_rows`` rows (the same lines as before, at the same width)."""
        document = self._document
        count = 0 if document is None else len(document)
        if not self._wrap or document is None:
            self._row_starts = [0]
            width = self._gutter_width() + self._max_text_width
            self.virtual_size = Size(width, count)
            return
        width = self._text_width()
        if width != self._wrap_width or not 0 < known_rows <= min(count, len(self._row_starts) - 1):
            known_rows = 0
        starts = self._row_starts[: known_rows + 1] if known_rows else [0]
        total = starts[-1]
        rows_of, content_of, row_of = self._rows_of, self._content, document.row
        for index in range(known_rows, count):
            total += rows_of(content_of(row_of(index)), width)
            starts.append(total)
        self._row_starts = starts
        self._wrap_width = width
        self.virtual_size = Size(self.scrollable_content_region.width, total)

    def _first_row_of(self, index: int) -> int:
        if not self._wrap:
            return index
        starts = self._row_starts
        return starts[min(max(index, 0), len(starts) - 1)]

    def _index_at(self, screen_row: int) -> int:
        if not self._wrap:
            return screen_row
        starts = self._row_starts
        low, high = 0, len(starts) - 1
        while low < high:
            middle = (low + high + 1) // 2
            if starts[middle] <= screen_row:
                low = middle
            else:
                high = middle - 1
        return low

    def _measure_visible(self) -> None:
        """Widen the scrollable width to the longest row on screen (rows off screen are not measured: that
        would mean cleaning the whole log)."""
        if self._wrap:
            return
        widest = self._max_text_width
        for row in self.visible_rows():
            widest = max(widest, cell_len(self._content(row)))
        if widest != self._max_text_width:
            self._max_text_width = widest
            self._update_layout()

    def _scroll_to_end(self) -> None:
        self.scroll_to(y=self.max_scroll_y, animate=False)

    def _center(self, index: int) -> None:
        height = self.scrollable_content_region.height
        if height <= 0:
            self._pending_center = index
            return
        self._pending_center = None
        self.scroll_to(y=max(self._first_row_of(index) - height // 2, 0), animate=False)

    def on_resize(self, event: events.Resize) -> None:
        if self._wrap and self._text_width() != self._wrap_width:
            self._update_layout()
        if self._pending_center is not None:
            self._center(self._pending_center)
        elif self.following:
            self._scroll_to_end()
        self._measure_visible()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if round(old_value) != round(new_value):
            self._measure_visible()

    # -------------------------------------------------------------------------------------- user scrolling

    def _stop_following(self) -> None:
        self.following = False

    def _resume_at_end(self) -> None:
        if self.scroll_offset.y >= self.max_scroll_y:
            self.following = True

    def action_scroll_up(self) -> None:
        self._stop_following()
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self._stop_following()
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self._stop_following()
        super().action_scroll_home()

    def action_scroll_down(self) -> None:
        super().action_scroll_down()
        self.call_after_refresh(self._resume_at_end)

    def action_page_down(self) -> None:
        super().action_page_down()
        self.call_after_refresh(self._resume_at_end)

    def action_scroll_end(self) -> None:
        self.follow()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._stop_following()

    # ------------------------------------------------------------------------------------------- rendering

    def _row_text(self, row: LogRow, content: str, *, first: bool) -> Text:
        document = self._document
        assert document is not None
        line = Text(no_wrap=True, end="")
        if first:
            line.append(f"{row.number:>{document.number_width}} ", _GUTTER_STYLE)
            if document.merged:
                line.append(f"{rank_label(row.rank):<4} ", Style(color=rank_colour(row.rank), bold=True))
        else:
            line.append(" " * self._gutter_width())
        start = len(line)
        line.append(content)
        if first and row.tag is not None:
            line.stylize(_TAG_STYLE, start, start + min(len(row.tag) + 2, len(content)))
        if self._needle is not None:
            haystack = content.lower() if self._needle_folded else content
            needle = self._needle
            found = haystack.find(needle)
            while found >= 0 and needle:
                line.stylize(_MATCH_STYLE, start + found, start + found + len(needle))
                found = haystack.find(needle, found + len(needle))
        if self._cursor_key is not None and row.key == self._cursor_key:
            line.stylize(_CURSOR_STYLE)
        return line

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        style = self.line_style
        document = self._document
        screen_row = scroll_y + y
        if document is None:
            return Strip.blank(width, style)
        if self._wrap:
            if screen_row >= self._row_starts[-1]:
                return Strip.blank(width, style)
            index = self._index_at(screen_row)
            part = screen_row - self._row_starts[index]
            row = document.row(index)
            content = self._content(row)
            pieces = (
                [
                    content[at : at + self._wrap_width]
                    for at in range(0, max(len(content), 1), self._wrap_width)
                ]
                if content.isascii()
                else chop_cells(content, self._wrap_width)
            )
            piece = pieces[part] if part < len(pieces) else ""
            text = self._row_text(row, piece, first=part == 0)
            scroll_x = 0
        else:
            if screen_row >= len(document):
                return Strip.blank(width, style)
            row = document.row(screen_row)
            text = self._row_text(row, self._content(row), first=True)
        text.stylize_before(style)
        segments = list(text.render(self.app.console))
        strip = Strip(segments, cell_len(text.plain))
        return strip.crop_extend(scroll_x, scroll_x + width, style)
