"""A real OTLP/HTTP trace receiver on a loopback socket, for the tracing tests.

It accepts ``POST /v1/traces`` with a protobuf body (``ExportTraceServiceRequest``,
gzip or not), decodes it with the protocol's own generated messages
(``opentelemetry-proto``) and keeps the spans; anything else is answered 404/415.
A gateway points at it with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (:meth:`OtlpReceiver.env`).
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.waiting import wait_until


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    #: Empty for a root span.
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    #: The exporting process's resource (``service.name``, ``service.instance.id``, ...).
    resource: dict[str, Any]
    status_code: int

    @property
    def node(self) -> str:
        return str(self.resource.get("service.instance.id", ""))


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind)


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("content-type", "").split(";")[0].strip() != "application/x-protobuf":
                    self.send_error(415)
                    return
                encoding = self.headers.get("content-encoding", "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._take(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The variables that point a gateway's tracing here, exporting every 50 ms."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "herald-test",
            **extra,
        }

    def _take(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            resource=resource,
                            status_code=span.status.code,
                        )
                    )
        with self._lock:
            self.spans.extend(spans)
            self.requests += 1

    def named(self, name: str, where: Callable[[ReceivedSpan], bool] = lambda _: True) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.name == name and where(span)]

    async def wait_for(
        self,
        name: str,
        where: Callable[[ReceivedSpan], bool] = lambda _: True,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """The spans named ``name`` that ``where`` accepts, once there are ``count`` of them."""
        await wait_until(lambda: len(self.named(name, where)) >= count, timeout=timeout)
        return self.named(name, where)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextlib.contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
