"""``Herald-Version`` on every response of the ASGI app (issue 14: gray releases).

The native server writes the same header on the responses it makes itself
(:data:`herald.server.http11.VERSION_HEADER`); this middleware covers the
app's, whether the native server or another ASGI server runs it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald import __version__

_HEADER = (b"herald-version", __version__.encode())


class VersionHeader:
    """Pure ASGI (no request object, no task): it only adds a header to the start message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_versioned(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _HEADER]}
            await send(message)

        await self.app(scope, receive, send_versioned)
