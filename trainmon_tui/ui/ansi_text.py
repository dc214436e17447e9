"""Read plotext's coloured text into a Rich ``Text`` quickly, exactly as ``Text.from_ansi`` would.

The loss chart is plotext's canvas printed with SGR colour codes and then read back into styled text. Rich's
general decoder does that one escape code at a time, building a colour and merging a style for each: on a
100x32 chart that was half of the chart's drawing time, and the chart was a tenth of the dashboard's CPU on a
big fleet. Plotext prints only a few distinct codes, over and over; so here the text is split at the codes
by one regular expression, and each (style, code) pair is worked out once, by Rich's own decoder, and then
looked up. Text with anything else in it (a carriage return, another kind of escape sequence) goes to
``Text.from_ansi`` unchanged.

:func:`sgr_lines` reads the same text into lines of (text, style) runs, for a widget that draws its own
lines (Textual's line API) and so skips turning a ``Text`` into Textual's content and back, which costs as
much again as reading it.
"""

from __future__ import annotations

import re

from rich.ansi import AnsiDecoder
from rich.control import strip_control_codes
from rich.style import Style
from rich.text import Span, Text

_SGR = re.compile(r"\x1b\[([0-9;]*)m")

# (style in force, SGR parameters) -> the style after them, as Rich's decoder computes it.
_next_styles: dict[tuple[Style, str], Style] = {}
_MAX_REMEMBERED = 4096


def _after(style: Style, parameters: str) -> Style:
    key = (style, parameters)
    found = _next_styles.get(key)
    if found is None:
        decoder = AnsiDecoder()
        decoder.style = style
        decoder.decode_line(f"\x1b[{parameters}m")
        found = decoder.style
        if len(_next_styles) >= _MAX_REMEMBERED:
            _next_styles.clear()
        _next_styles[key] = found
    return found


def text_from_sgr(terminal_text: str) -> Text:
    """``Text.from_ansi(terminal_text)``, equal to it (same characters, same spans), built faster when the
    only escape sequences are SGR codes."""
    lines = sgr_lines(terminal_text)
    if lines is None:
        return Text.from_ansi(terminal_text)
    plain: list[str] = []
    spans: list[Span] = []
    at = 0
    for number, runs in enumerate(lines):
        if number:
            # Rich styles each line on its own and joins the lines with an unstyled newline.
            plain.append("\n")
            at += 1
        for text, style in runs:
            plain.append(text)
            if style:
                spans.append(Span(at, at + len(text), style))
            at += len(text)
    # Text.from_ansi's own settings for the whole text: a tab stop every 8 columns, a newline at the end.
    return Text("".join(plain), spans=spans, end="\n", tab_size=8)


#: A line as :func:`sgr_lines` gives it: runs of characters that share a style.
StyledRuns = list[tuple[str, Style]]


def sgr_lines(terminal_text: str) -> list[StyledRuns] | None:
    """The lines of ``text_from_sgr(terminal_text)`` as runs of (text, style), the unstyled ones with
    ``Style.null()``; None where only Rich's general decoder can read the text (a carriage return, an escape
    sequence other than SGR)."""
    if "\r" in terminal_text:
        return None
    pieces = _SGR.split(terminal_text)
    lines: list[StyledRuns] = []
    line: StyledRuns = []
    style = Style.null()
    for index, piece in enumerate(pieces):
        if index % 2:
            style = _after(style, piece)
            continue
        if not piece:
            continue
        if "\x1b" in piece:
            return None
        first, *rest = piece.split("\n")
        # Rich drops bells, backspaces and form feeds from a Text's characters, and keeps the (empty) run.
        if first:
            line.append((strip_control_codes(first), style))
        for part in rest:
            lines.append(line)
            line = [(strip_control_codes(part), style)] if part else []
    lines.append(line)
    return lines
