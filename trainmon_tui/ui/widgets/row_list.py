"""A keyboard-driven list of one-line rows that draws only the rows on screen: the dashboard panels' base.

The fleet, run and alert panels are lists of rows a person moves through with arrows or ``j``/``k`` and opens
with Enter. With 64 hosts x 8 GPUs that is hundreds of rows changing every second, so rows are not widgets:
a subclass keeps its data, lists the row keys, and renders a row's text only when that row is visible
(Textual's line API). A repaint therefore costs in proportion to the panel's height, not to the fleet.
The cursor stays on the same key when rows come and go.

Repainting only what changed: when new data keeps the same rows (:meth:`RowList.set_rows` with the same
keys, the usual case once a second), the visible rows are rendered to text and compared with what is on
screen, and only the lines whose text differs are marked for repaint; Textual then restyles and sends only
those. The finished line of each visible row is kept with the text it came from, so a line that is
repainted anyway (a scroll, the cursor moving, focus) but did not change is not rendered again.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar, NamedTuple

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from trainmon_tui.ui.widgets.pass_style import PassStyle


class _DrawnRow(NamedTuple):
    """A row as it was last drawn: the text :meth:`RowList.render_row` gave, and the line made from it."""

    text: Text
    width: int
    # 0: a plain row; 1: the cursor's row with focus; 2: the cursor's row without.
    mark: int
    base_style: Style
    strip: Strip


# Drawn rows kept per visible line before the cache is emptied (rows scrolled away are not kept forever).
_DRAWN_ROWS_PER_LINE = 3


def appended_row_strip(text: Text, width: int, base_style: Style) -> Strip | None:
    """The line of a row built by appending styled pieces, when it fits in ``width``; None otherwise.

    Rows are built by ``Text.append``: their spans follow one another without overlapping, each with a
    ``Style``. Such a line is its pieces, each under the widget's style, then spaces up to ``width``: the
    same segments as :meth:`RowList.general_row_strip` gives, without copying the text, sorting span
    boundaries and combining style stacks (~100 us a host row, and ~60 changed lines are drawn a second).
    A row that needs more - longer than the line, a style on the whole text, overlapping or named styles -
    gets None and goes the general way.
    """
    if text.style:
        return None
    plain = text.plain
    length = cell_len(plain)
    if length > width:
        return None
    if length < width:
        plain += " " * (width - length)
    if not text.spans:
        # As Rich has it: one piece, which a null style leaves unstyled.
        return Strip([Segment(plain, base_style or None)], width)
    segments: list[Segment] = []
    append = segments.append
    at = 0
    for start, end, style in text.spans:
        if start < at or not isinstance(style, Style):
            return None
        if start > at:
            append(Segment(plain[at:start], base_style))
            at = start
        if end > start:
            append(Segment(plain[start:end], base_style + style))
            at = end
    if at < len(plain):
        append(Segment(plain[at:], base_style))
    return Strip(segments, width)


class RowList(PassStyle, ScrollView, can_focus=True):
    """Rows identified by hashable keys; subclasses implement :meth:`render_row`."""

    DEFAULT_CSS = """
    RowList {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First row", show=False),
        Binding("end", "last", "Last row", show=False),
        Binding("enter", "select", "Open", show=True),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {"row-list--cursor", "row-list--cursor-blurred"}

    class Selected(Message):
        """Enter (or a click on the row under the cursor) on a row."""

        def __init__(self, row_list: RowList, key: Hashable) -> None:
            super().__init__()
            self.row_list = row_list
            self.key = key

        @property
        def control(self) -> RowList:
            return self.row_list

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(name=name, id=id, classes=classes)
        self._keys: list[Hashable] = []
        self._index_of: dict[Hashable, int] = {}
        self._cursor = 0
        self._drawn: dict[Hashable, _DrawnRow] = {}
        # Texts rendered by refresh_rows for lines it marked for repaint, used (once) when they are drawn.
        self._fresh: dict[Hashable, Text] = {}
        #: Row lines rendered into new strips so far (a line found unchanged is not counted), for tests and
        #: benchmarks.
        self.lines_rendered = 0
        # Component class -> its rich style, until the CSS or the theme changes (see component_style).
        self._row_component_styles: dict[str, Style] = {}

    # ------------------------------------------------------------------------------------------- rows

    @property
    def row_keys(self) -> tuple[Hashable, ...]:
        return tuple(self._keys)

    @property
    def cursor_index(self) -> int:
        return self._cursor

    @property
    def cursor_key(self) -> Hashable | None:
        return self._keys[self._cursor] if self._keys else None

    def set_rows(self, keys: Sequence[Hashable]) -> None:
        """Replace the rows (and redraw); the cursor stays on its key if that row is still there.

        Call it whenever the data behind the rows changed: with the same keys as before, only the visible
        lines whose text changed are repainted (:meth:`refresh_rows`).
        """
        if len(keys) == len(self._keys) and list(keys) == self._keys:
            self.refresh_rows()
            return
        previous = self.cursor_key
        self._keys = list(keys)
        self._index_of = {key: index for index, key in enumerate(self._keys)}
        if previous is not None and previous in self._index_of:
            self._cursor = self._index_of[previous]
        else:
            self._cursor = min(self._cursor, max(len(self._keys) - 1, 0))
        self.virtual_size = Size(0, len(self._keys))
        self._fresh.clear()
        self.refresh()

    def refresh_rows(self) -> None:
        """Repaint the visible rows whose text changed since they were drawn, and no other."""
        self._fresh.clear()
        width = self.size.width
        if not width or not self.is_mounted:
            self.refresh()
            return
        top = self.scroll_offset.y
        drawn = self._drawn
        for index in range(top, min(top + self.size.height, len(self._keys))):
            key = self._keys[index]
            text = self.render_row(key, width)
            previous = drawn.get(key)
            if (
                previous is None
                or previous.width != width
                or (previous.text is not text and previous.text != text)
            ):
                self._fresh[key] = text
                self.refresh_line(index)

    def move_cursor_to(self, key: Hashable) -> bool:
        index = self._index_of.get(key)
        if index is None:
            return False
        self._set_cursor(index)
        return True

    def render_row(self, key: Hashable, width: int) -> Text:
        """The text of one row, at most ``width`` cells (longer text is cut). The list never changes it: it
        keeps it to compare the next one with, so a subclass may hand out the same Text again."""
        raise NotImplementedError

    def component_style(self, name: str) -> Style:
        """The rich style of the component class ``name``, kept until the CSS or the theme changes.

        Textual keeps these only until the widget's next refresh, and marking a changed line for repaint
        is a refresh: rows that ask for a style per cell would have it worked out again for every line.
        """
        style = self._row_component_styles.get(name)
        if style is None:
            style = self._row_component_styles[name] = self.get_component_rich_style(name)
        return style

    def row_text(self, index: int) -> str:
        """The plain text of row ``index`` as it is drawn (for tests and screen readers)."""
        return self.render_row(self._keys[index], self.size.width or 80).plain

    # ------------------------------------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        index = self.scroll_offset.y + y
        base_style = self.line_style
        if index >= len(self._keys):
            return Strip.blank(width, base_style)
        key = self._keys[index]
        text = self._fresh.pop(key, None)
        if text is None:
            text = self.render_row(key, width)
        mark = 0 if index != self._cursor else (1 if self.has_focus else 2)
        drawn = self._drawn.get(key)
        if (
            drawn is not None
            and drawn.width == width
            and drawn.mark == mark
            and drawn.base_style == base_style
            and (drawn.text is text or drawn.text == text)
        ):
            return drawn.strip
        strip = None if mark else appended_row_strip(text, width, base_style)
        if strip is None:
            strip = self.general_row_strip(text, width, mark, base_style)
        if len(self._drawn) >= _DRAWN_ROWS_PER_LINE * max(self.size.height, 1):
            self._drawn.clear()
        self._drawn[key] = _DrawnRow(text, width, mark, base_style, strip)
        self.lines_rendered += 1
        return strip

    def general_row_strip(self, text: Text, width: int, mark: int, base_style: Style) -> Strip:
        """The line of any row, through Rich: cut with an ellipsis or padded to ``width``, the cursor's style
        over it when ``mark`` says so, the widget's style under it."""
        shown = text.copy()
        shown.no_wrap = True
        shown.truncate(width, overflow="ellipsis", pad=True)
        if mark:
            component = "row-list--cursor" if mark == 1 else "row-list--cursor-blurred"
            shown.stylize(self.component_style(component))
        # The widget's own style goes under the row's, in one pass (Strip.apply_style would build a
        # second strip per line).
        return Strip(list(Segment.apply_style(shown.render(self.app.console), base_style)), width)

    def notify_style_update(self) -> None:
        # Theme or CSS changed: the component styles baked into the kept lines may be stale.
        self._drawn.clear()
        self._row_component_styles.clear()
        super().notify_style_update()

    # ----------------------------------------------------------------------------------------- movement

    def _set_cursor(self, index: int) -> None:
        if not self._keys:
            return
        index = min(max(index, 0), len(self._keys) - 1)
        if index != self._cursor:
            self._cursor = index
            self.post_message_cursor_moved()
        self.scroll_to_region(Region(0, index, max(self.size.width, 1), 1), animate=False, force=True)
        self.refresh()

    def post_message_cursor_moved(self) -> None:
        """Called when the cursor lands on another row; subclasses that follow the cursor override it."""

    def action_cursor_up(self) -> None:
        self._set_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self._set_cursor(self._cursor + 1)

    def action_page_up(self) -> None:
        self._set_cursor(self._cursor - max(self.size.height - 1, 1))

    def action_page_down(self) -> None:
        self._set_cursor(self._cursor + max(self.size.height - 1, 1))

    def action_first(self) -> None:
        self._set_cursor(0)

    def action_last(self) -> None:
        self._set_cursor(len(self._keys) - 1)

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.Selected(self, key))

    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < len(self._keys):
            if index == self._cursor:
                self.action_select()
            else:
                self._set_cursor(index)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
