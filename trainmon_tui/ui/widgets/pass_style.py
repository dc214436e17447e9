"""A line-drawing widget's own Rich style, worked out once per drawing pass instead of once per line.

Textual's ``DOMNode.rich_style`` is not kept: every read walks the widget's ancestors and combines their
colours again (about 70 us on the dashboard). A widget that draws its own lines (Textual's line API) needs
that style under every line, and a repaint of the fleet draws tens of lines a second. Textual asks a widget
for its lines through ``render_lines`` (one call per widget per repaint), so the style is read there once and
each ``render_line`` of the pass takes it from :attr:`PassStyle.line_style`. Outside a pass (a test drawing a
line by hand) it is read afresh, so a theme or CSS change is never missed.
"""

from __future__ import annotations

from rich.style import Style
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget


class PassStyle(Widget):
    """Mixin (put it before the widget's Textual base class) for widgets that implement ``render_line``."""

    _pass_style: Style | None = None

    def render_lines(self, crop: Region) -> list[Strip]:
        self._pass_style = self.rich_style
        try:
            return super().render_lines(crop)
        finally:
            self._pass_style = None

    @property
    def line_style(self) -> Style:
        """The widget's Rich style: the one read for this drawing pass, or read now outside a pass."""
        style = self._pass_style
        return self.rich_style if style is None else style
