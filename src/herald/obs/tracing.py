"""Tracing: W3C trace context in, OpenTelemetry spans out over OTLP (docs/architecture.md, D30).

Events may carry the producer's ``traceparent`` (a publish's header or batch item
field, a Kafka record header, an outbox column). It travels with the event through
the bus, so that each node's spans join the producer's trace:

``herald.ingest``
    one per event taken in by this node (validated, encoded, through the coalesce
    throttle, appended): a child of the producer's span. The event carries *this*
    span's context onwards.
``herald.fanout``
    one per event per node that routes it (never one per connection): its receivers
    here, the bytes handed to their sockets, the slowest socket write of the turn.

Tracing is on when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); everything else (service name, sampler,
headers, batching) the SDK reads from its own ``OTEL_*`` variables. Off,
:func:`from_environment` answers ``None`` and the hot paths check that once: no span,
not even a no-op one, is made. The SDK is the optional extra ``tracing``, imported
only when an endpoint is set.

The traceparent helpers below need no SDK: a node without tracing still carries
what producers send (a mixed cluster's traced nodes see it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

log = structlog.get_logger("herald.tracing")

INGEST_SPAN = "herald.ingest"
FANOUT_SPAN = "herald.fanout"

#: W3C Trace Context, level 1: ``version-traceid-parentid-flags``; a version other than
#: ``00`` may append fields after a dash (a reader of version 00 takes the first four).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_VERSION_00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: Longer values are not traceparents (the field is 55 characters; future versions more).
_MAX_CHARS = 256


def parse_traceparent(value: str | bytes | None) -> str | None:
    """``value`` as a version-00 ``traceparent`` (lower case, trimmed), or ``None`` when it
    is absent or malformed: a malformed one is ignored, never an error (W3C: "the vendor
    MUST ignore the traceparent")."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or len(value) > _MAX_CHARS:
        return None
    if len(value) == 55 and _VERSION_00.fullmatch(value) is not None:
        # The common case, checked in one pass and returned as it came.
        return value if value[3:35] != _ZERO_TRACE and value[36:52] != _ZERO_SPAN else None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return f"00-{trace_id}-{span_id}-{flags}"


def trace_id_of(traceparent: str) -> str:
    """The 32 hex digits of the trace id of a traceparent :func:`parse_traceparent` gave."""
    return traceparent[3:35]


class SpanContext(Protocol):
    @property
    def trace_id(self) -> int: ...

    @property
    def span_id(self) -> int: ...

    @property
    def trace_flags(self) -> int: ...

    @property
    def is_valid(self) -> bool: ...


class Span(Protocol):
    """What Herald does with a span (an OpenTelemetry SDK span is one)."""

    def set_attribute(self, key: str, value: str | int | float | bool) -> None: ...

    def set_status(self, status: Any, description: str | None = None) -> None: ...

    def get_span_context(self) -> SpanContext: ...

    def is_recording(self) -> bool: ...

    def end(self, end_time: int | None = None) -> None: ...


class Tracing:
    """This node's tracer: spans from traceparents, and traceparents from spans."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace

        from herald import __version__

        self._provider = provider
        self._tracer: Tracer = provider.get_tracer("herald", __version__)
        self._trace = trace
        self._consumer = trace.SpanKind.CONSUMER
        self._producer = trace.SpanKind.PRODUCER

    def start_ingest(self, traceparent: str | None, attributes: Mapping[str, str | int]) -> Span:
        """A ``herald.ingest`` span, child of ``traceparent`` (the producer's) if any."""
        return self._tracer.start_span(
            INGEST_SPAN, self._parent(traceparent), kind=self._consumer, attributes=attributes
        )

    def start_fanout(self, traceparent: str | None, attributes: Mapping[str, str | int]) -> Span:
        """A ``herald.fanout`` span, child of ``traceparent`` (the one the event carries)."""
        return self._tracer.start_span(
            FANOUT_SPAN, self._parent(traceparent), kind=self._producer, attributes=attributes
        )

    def traceparent(self, span: Span, fallback: str | None) -> str | None:
        """The traceparent naming ``span``, for the event to carry onwards; ``fallback``
        (the producer's) when the span has no valid context."""
        context = span.get_span_context()
        if not context.is_valid:
            return fallback
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def error(self, span: Span, code: str, message: str) -> None:
        """Mark ``span`` failed with Herald's error ``code``."""
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("herald.error", code)
        span.set_status(Status(StatusCode.ERROR, message[:200]))

    def _parent(self, traceparent: str | None) -> Context | None:
        if traceparent is None:
            return None
        trace = self._trace
        parent = trace.SpanContext(
            trace_id=int(traceparent[3:35], 16),
            span_id=int(traceparent[36:52], 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(traceparent[53:55], 16)),
        )
        context: Context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        return context

    def flush(self, timeout_ms: int = 5000) -> None:
        self._provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is buffered, then stop the exporter."""
        self._provider.shutdown()


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces over OTLP: an endpoint is set, the SDK is not
    disabled (``OTEL_SDK_DISABLED``) and ``OTEL_TRACES_EXPORTER``, if set, names ``otlp``."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or not endpoint.strip():
        return False
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    return exporters is None or "otlp" in {name.strip().lower() for name in exporters.split(",")}


def from_environment(node: str, environ: Mapping[str, str] | None = None) -> Tracing | None:
    """This process's tracer from the ``OTEL_*`` variables, or ``None`` (tracing off).

    Call it in the process that serves (each worker of ``--workers N`` makes its own,
    after it started): the span processor's export thread belongs to one process.
    ``node``: this node's name, the resource's ``service.instance.id`` unless set."""
    env = os.environ if environ is None else environ
    if not tracing_wanted(env):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.error(
            "tracing_unavailable",
            reason="an OTEL_EXPORTER_OTLP_ endpoint is set, but the OpenTelemetry SDK is not installed: "
            "install herald-gateway[tracing]; this node runs without tracing",
            missing=exc.name,
        )
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol.strip() != "http/protobuf":
        log.warning("tracing_protocol_unsupported", protocol=protocol, using="http/protobuf")
    named = {
        pair.partition("=")[0].strip() for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if pair
    }
    defaults: dict[str, str] = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name" not in named:
        defaults["service.name"] = "herald"
    if "service.instance.id" not in named:
        defaults["service.instance.id"] = node
    # Resource.create lets its argument win over the environment: only what the environment
    # left unsaid goes in. The sampler (OTEL_TRACES_SAMPLER), the exporter's endpoint, headers
    # and timeout, and the batching (OTEL_BSP_*) are read by the SDK itself.
    provider = TracerProvider(resource=Resource.create(defaults))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    log.info("tracing_on", endpoint=endpoint, sampler=env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on"))
    return Tracing(provider)
