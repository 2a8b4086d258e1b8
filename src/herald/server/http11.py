"""Pieces of HTTP/1.1 the server writes: status lines, heads, error bodies. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

import orjson

from herald import __version__
from herald.api.stream_request import stream_headers
from herald.errors import HeraldError

#: On every response, so a gray release can tell which version answered (the ASGI app's
#: responses get it from :class:`herald.api.version.VersionHeader`).
VERSION_HEADER = (b"herald-version", __version__.encode())


def status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


def head(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    parts = [status_line(status)]
    parts.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def json_response(status: int, body: dict[str, object], extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """A complete response that closes the connection after it."""
    payload = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
        VERSION_HEADER,
    ]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra)
    return head(status, headers) + payload


def error_response(error: HeraldError, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    return json_response(error.status, error.body(), [*error.headers().items(), *extra])


#: The head of every stream. No length and no chunking: the body runs until the
#: connection closes (RFC 9112 §6.3), so the same frame bytes go to every
#: socket without a per-connection chunk header around them.
STREAM_HEAD = head(
    200,
    [(k.encode(), v.encode()) for k, v in stream_headers()] + [(b"connection", b"close"), VERSION_HEADER],
)


def stream_head(extra: Iterable[tuple[str, str]]) -> bytes:
    """:data:`STREAM_HEAD` with ``extra`` headers (CORS, computed per request)."""
    lines = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in extra)
    return STREAM_HEAD[:-2] + lines + b"\r\n"
