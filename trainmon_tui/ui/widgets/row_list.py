"""A keyboard-driven list of one-line rows that draws only the rows on screen: the dashboard panels' base.

The fleet, run and alert panels are lists of rows a person moves through with arrows or ``j``/``k`` and opens
with Enter. With 64 hosts x 8 GPUs that is hundreds of rows changing every second, so rows are not widgets:
a subclass keeps its data, lists the row keys, and renders a row's text only when that row is visible
(Textual's line API). A repaint therefore costs in proportion to the panel's height, not to the fleet.
The cursor stays on the same key when rows come and go.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip


class RowList(ScrollView, can_focus=True):
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
        """Replace the rows (and redraw); the cursor stays on its key if that row is still there."""
        previous = self.cursor_key
        self._keys = list(keys)
        self._index_of = {key: index for index, key in enumerate(self._keys)}
        if previous is not None and previous in self._index_of:
            self._cursor = self._index_of[previous]
        else:
            self._cursor = min(self._cursor, max(len(self._keys) - 1, 0))
        self.virtual_size = Size(0, len(self._keys))
        self.refresh()

    def move_cursor_to(self, key: Hashable) -> bool:
        index = self._index_of.get(key)
        if index is None:
            return False
        self._set_cursor(index)
        return True

    def render_row(self, key: Hashable, width: int) -> Text:
        """The text of one row, at most ``width`` cells (longer text is cut)."""
        raise NotImplementedError

    def row_text(self, index: int) -> str:
        """The plain text of row ``index`` as it is drawn (for tests and screen readers)."""
        return self.render_row(self._keys[index], self.size.width or 80).plain

    # ------------------------------------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        index = self.scroll_offset.y + y
        if index >= len(self._keys):
            return Strip.blank(width, self.rich_style)
        text = self.render_row(self._keys[index], width)
        text.no_wrap = True
        text.truncate(width, overflow="ellipsis", pad=True)
        if index == self._cursor:
            component = "row-list--cursor" if self.has_focus else "row-list--cursor-blurred"
            text.stylize(self.get_component_rich_style(component))
        return Strip(list(text.render(self.app.console)), width).apply_style(self.rich_style)

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
