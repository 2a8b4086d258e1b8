"""Encode SSE frames.

Per the WHATWG spec, a line ends at CR, LF or CRLF, so:

* ``id`` and ``event`` values lose every CR and LF (and ``id`` its NULs, which
  make browsers ignore the field) rather than smuggle in a second field;
* a multi-line ``data`` value becomes one ``data:`` line per line, which the
  parser joins back with LF (a CR or CRLF in the input comes back as LF: the
  format cannot carry them);
* every field is written as ``name: value``; the parser strips exactly one
  space after the colon, so values that begin with a space survive.

:func:`event_frame` is the hot path: Herald's own events carry compact JSON,
which never contains a raw line break, so it skips the splitting.
"""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FIELD_UNSAFE = str.maketrans("", "", "\r\n")
_ID_UNSAFE = str.maketrans("", "", "\r\n\0")

#: Sent as the heartbeat: a comment, which the browser's parser skips.
HEARTBEAT = b":\n\n"


def encode(
    *,
    data: str | None = None,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """One SSE block with any of the fields, ended by a blank line."""
    lines: list[str] = []
    if comment is not None:
        lines.extend(f": {line}" for line in _LINE_BREAK.split(comment))
    if id is not None:
        lines.append(f"id: {id.translate(_ID_UNSAFE)}")
    if event is not None:
        lines.append(f"event: {event.translate(_FIELD_UNSAFE)}")
    if data is not None:
        lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    if retry is not None:
        lines.append(f"retry: {max(0, int(retry))}")
    return ("\n".join(lines) + "\n\n").encode()


def event_frame(cursor: str, event: str, data_json: bytes) -> bytes:
    """The frame of one bus event: ``data_json`` must be single-line JSON and the
    names validated (:mod:`herald.events.names`), as every bus record's are."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (cursor.encode(), event.encode(), data_json)


def retry_frame(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % max(0, retry_ms)
