"""The SSE wire format (WHATWG HTML, "Server-sent events") and the event-id codec. Pure."""
