"""The rank a per-rank log's file name gives: what a log's place says about it, not its lines.

Apart from the parser engine so that the run state (which keys its log book by file) can use it without
loading every log family.
"""

from __future__ import annotations

import re

_RANK_IN_NAME_RE = re.compile(r"(?<![a-z])rank[_-]?(\d{1,6})(?!\d)", re.IGNORECASE)
_WORKER_IN_NAME_RE = re.compile(r"(?<![a-z])worker[_-]?(\d{1,6})(?!\d)", re.IGNORECASE)


def rank_from_path(path: str) -> int | None:
    """The rank a per-rank log's name gives (``rank0.log``, ``rank_3.txt``, ``train-rank12.log``,
    ``worker_2.log``, ``node1_rank3.log``, ``logs/rank5/out.txt``); None when the name gives none."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    for part in reversed(parts[-2:]):
        for pattern in (_RANK_IN_NAME_RE, _WORKER_IN_NAME_RE):
            match = pattern.search(part)
            if match is not None:
                return int(match[1])
    return None
