"""Cursors: the bus's position of an event, and the SSE ``id`` a client sends back.

A cursor is ``{milliseconds}-{sequence}``: the append time in Unix milliseconds
and a counter that orders events appended within the same millisecond. The
same shape as a Redis Stream id, so every bus backend shares one codec.
Cursors compare as tuples: ``(1767225600000, 0) < (1767225600000, 1)``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_CURSOR = re.compile(r"([0-9]{1,15})-([0-9]{1,15})")
#: Longest text worth parsing; anything longer is garbage, not a cursor.
MAX_CURSOR_CHARS = 40


class Cursor(NamedTuple):
    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


def parse_cursor(text: str | None) -> Cursor | None:
    """The cursor ``text`` names, or ``None`` for anything that is not one.

    Never raises: a garbage ``Last-Event-ID`` is a client that cannot be
    replayed, not a failed request.
    """
    if not text or len(text) > MAX_CURSOR_CHARS:
        return None
    match = _CURSOR.fullmatch(text.strip())
    if match is None:
        return None
    return Cursor(int(match[1]), int(match[2]))


def next_cursor(last: Cursor, now_ms: int) -> Cursor:
    """The cursor after ``last`` for an event appended at ``now_ms``.

    Monotonic even when the wall clock steps backwards: the millisecond part
    never decreases, the sequence breaks ties.
    """
    if now_ms > last.ms:
        return Cursor(now_ms, 0)
    return Cursor(last.ms, last.seq + 1)
