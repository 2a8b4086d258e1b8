"""``POST /api/v1/events`` and ``/api/v1/events/batch`` answered without the ASGI app.

Publishing is the per-event cost that dominates a real event mix, and for a
single publish the framework's path (ASGI messages, middleware, dependency
solving, response models) cost more CPU than everything Herald does with the
event (docs/architecture.md, D27). So the standalone server answers a
well-formed publish itself, with the same checks in the same order and the
same answers as the routes in :mod:`herald.api.routes` and
:mod:`herald.api.batch`.

Only the plain case is served here: a JSON body that the publish model
accepts, from a client that is not a browser (no ``Origin``: CORS stays the
ASGI app's). Anything else (a body that does not parse or validate, an
``Origin``) goes to the ASGI app, which produces the canonical error or CORS
answer: one source of truth for every error body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import structlog
from pydantic import ValidationError

from herald.api import paths
from herald.api.batch import batch_answer, batch_headers, parse_batch, publish_items
from herald.api.schemas import PublishRequest
from herald.errors import HeraldError
from herald.gateway.publishing import publisher_key
from herald.server import http11

if TYPE_CHECKING:
    from herald.server.protocol import HttpProtocol, Request

log = structlog.get_logger("herald.server")

PUBLISH_PATH = paths.PUBLISH.encode()
BATCH_PATH = paths.PUBLISH_BATCH.encode()

_INTERNAL_ERROR = http11.json_response(500, {"code": "INTERNAL_ERROR", "message": "the request failed"})


def serves(request: Request) -> bool:
    """Whether ``request`` is a publish this module answers (else the ASGI app does)."""
    if request.method != b"POST" or request.path not in (PUBLISH_PATH, BATCH_PATH):
        return False
    json_body = False
    for name, value in request.headers:
        if name == b"origin":
            return False
        if name == b"content-type":
            json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
    return json_body


class NativePublish:
    """One publish request on a keep-alive connection: answered, then the next request."""

    __slots__ = ("protocol", "request")

    def __init__(self, protocol: HttpProtocol, request: Request) -> None:
        self.protocol = protocol
        self.request = request

    def disconnected(self) -> None:
        """The client went away: the publish completes all the same (it is not undone)."""

    async def run(self) -> None:
        keep_alive = self.request.keep_alive
        try:
            if self.request.path == PUBLISH_PATH:
                answer = await self._publish()
            else:
                answer = await self._publish_batch()
        except HeraldError as exc:
            answer = (exc.status, orjson.dumps(exc.body()), exc.headers())
        except Exception:
            log.exception("native_publish_failed", path=self.request.path.decode("latin-1"))
            self._write(_INTERNAL_ERROR)
            self.protocol.response_complete(False)
            return
        if answer is None:
            await self._by_the_app()
            return
        status, payload, headers = answer
        self._write(_response(status, payload, headers, keep_alive))
        self.protocol.response_complete(keep_alive)

    async def _publish(self) -> tuple[int, bytes, dict[str, str]] | None:
        # The body first, then the credentials, as the route (FastAPI validates before it
        # calls the handler): an invalid body is a 422 whoever sends it.
        try:
            body = PublishRequest.model_validate_json(self.request.body)
        except ValidationError:
            return None  # the app's answer: 422 REQUEST_INVALID with the problems listed
        gateway = self.protocol.ctx.gateway
        publisher = await gateway.authenticate_publisher(self._header(b"authorization"))
        result = await gateway.publish(
            body.message(source="http", traceparent=self._header(b"traceparent")),
            idempotency_key=publisher_key(publisher.user_id, body.idempotency_key),
        )
        payload = orjson.dumps(
            {"id": str(result.cursor), "duplicate": result.duplicate, "coalesced": result.coalesced}
        )
        return 202, payload, {}

    async def _publish_batch(self) -> tuple[int, bytes, dict[str, str]]:
        gateway = self.protocol.ctx.gateway
        publisher = await gateway.authenticate_publisher(self._header(b"authorization"))
        items = parse_batch(self.request.body, self._header(b"traceparent"))
        results = await publish_items(gateway, items, publisher.user_id)
        status, answer = batch_answer(results)
        return status, orjson.dumps(answer), batch_headers(status, results)

    async def _by_the_app(self) -> None:
        from herald.server.asgi_cycle import AsgiCycle

        cycle = AsgiCycle(self.protocol, self.request)
        self.protocol.cycle = cycle
        await cycle.run(self.protocol.ctx.app)

    def _header(self, name: bytes) -> str | None:
        for key, value in self.request.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def _write(self, data: bytes) -> None:
        transport = self.protocol.transport
        if transport is not None and not self.protocol.lost:
            transport.write(data)


def _response(status: int, payload: bytes, headers: dict[str, str], keep_alive: bool) -> bytes:
    out = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(payload)),
        http11.VERSION_HEADER,
    ]
    out.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())
    if not keep_alive:
        out.append((b"connection", b"close"))
    return http11.head(status, out) + payload
