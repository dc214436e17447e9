"""The help screen (``?``): every key binding of the screen below it, read from the bindings themselves.

The list is not written by hand: it is collected from the binding tables of the app, the screen below and
every widget on it, so a binding added anywhere shows up here and the help can never fall out of date. Keys
are grouped by where they act (the app, the screen, a panel); a key a class redefines is listed once, with
the most specific meaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import ScrollableContainer, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.scroll_view import ScrollView
from textual.widget import Widget
from textual.widgets import Input, Static

#: Bindings of these Textual base classes are the framework's own plumbing (horizontal scrolling our lists
#: never need, a text field's editing keys everyone knows); listing them would bury the dashboard's own keys.
_PLUMBING_CLASSES: tuple[type[DOMNode], ...] = (ScrollableContainer, ScrollView, Widget, Input)
_SKIPPED_ACTIONS = frozenset({"maximize", "minimize", "screenshot", "copy_text"})


def bindings_of(node: DOMNode) -> list[Binding]:
    """The node's bindings, most specific class first, each key once."""
    seen: set[str] = set()
    found: list[Binding] = []
    for cls in type(node).__mro__:
        if cls in _PLUMBING_CLASSES:
            continue
        table: Iterable[BindingType] | None = cls.__dict__.get("BINDINGS")
        if not table:
            continue
        for binding in Binding.make_bindings(table):
            if binding.key in seen or binding.action in _SKIPPED_ACTIONS:
                continue
            seen.add(binding.key)
            found.append(binding)
    return found


#: One line of help: the keys (as the footer shows them, "↑ / k") and what they do.
HelpLine = tuple[str, str]


def help_lines(node: DOMNode) -> list[HelpLine]:
    """The node's bindings as help lines; keys bound to the same action and description share a line."""
    by_meaning: dict[tuple[str, str], list[str]] = {}
    for binding in bindings_of(node):
        description = binding.description or binding.action.replace("_", " ")
        by_meaning.setdefault((binding.action, description), []).append(node.app.get_key_display(binding))
    return [(" / ".join(keys), description) for (_, description), keys in by_meaning.items()]


def help_groups(screen: Screen[object]) -> list[tuple[str, list[HelpLine]]]:
    """(where, lines) for the app, the screen and each kind of focusable widget on it, in that order."""
    groups: list[tuple[str, list[HelpLine]]] = [("Everywhere", help_lines(screen.app))]
    groups.append((_label(screen), help_lines(screen)))
    kinds: dict[type[DOMNode], DOMNode] = {}
    for widget in screen.query("*"):
        if widget.can_focus and not isinstance(widget, Input):
            kinds.setdefault(type(widget), widget)
    groups.extend((_label(widget), help_lines(widget)) for widget in kinds.values())
    return [(where, lines) for where, lines in groups if lines]


def _label(node: DOMNode) -> str:
    border_title = getattr(node, "border_title", None)
    if isinstance(border_title, str) and border_title:
        return border_title
    return type(node).__name__


class HelpScreen(ModalScreen[None]):
    """A modal list of key bindings; Esc, ``q`` or ``?`` closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss_help", "Close help"),
        Binding("up,k", "scroll_help(-1)", "Scroll up", show=False),
        Binding("down,j", "scroll_help(1)", "Scroll down", show=False),
    ]

    def __init__(self, groups: list[tuple[str, list[HelpLine]]]):
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(self.help_text(), id="help-text")

    def help_text(self) -> Text:
        text = Text()
        text.append("Keys\n", "bold")
        for where, lines in self.groups:
            text.append(f"\n{where}\n", "bold underline")
            for keys, description in lines:
                text.append(f"  {keys:<22}", "bold")
                text.append(f"{description}\n")
        text.append("\nCommand palette: ctrl+p.  Tab / shift+tab move between panels.")
        return text

    def action_dismiss_help(self) -> None:
        self.dismiss(None)

    def action_scroll_help(self, lines: int) -> None:
        self.query_one("#help-body", VerticalScroll).scroll_relative(y=lines, animate=False)
