"""How long something lasted, in the two largest units people read at a glance: ``45 s``, ``4m 05s``,
``3h 07m``, ``2d 04h``. One spelling for the report, alert messages and the dashboard (which drops the
spaces to save columns: ``4m05s``); callers decide how an unknown duration reads."""

from __future__ import annotations

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR


def format_duration(seconds: float, *, compact: bool = False) -> str:
    """``seconds`` (finite; negative reads as 0) rounded to the second, in its two largest units."""
    total = round(max(seconds, 0.0))
    gap = "" if compact else " "
    if total < _MINUTE:
        return f"{total}{gap}s"
    if total < _HOUR:
        minutes, secs = divmod(total, _MINUTE)
        return f"{minutes}m{gap}{secs:02d}s"
    if total < _DAY:
        hours, rest = divmod(total, _HOUR)
        return f"{hours}h{gap}{rest // _MINUTE:02d}m"
    days, rest = divmod(total, _DAY)
    return f"{days}d{gap}{rest // _HOUR:02d}h"
