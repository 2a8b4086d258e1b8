"""Regression: on shutdown, an idle keep-alive connection was left open for the
grace period, and a browser reused it for its EventSource reconnect; the
stopping node answered 503, which ends EventSource's reconnecting for good."""

from __future__ import annotations

import signal
import socket
import time

from tests.support.gateway import running_gateway

REQUEST = b"GET /api/v1/events/health HTTP/1.1\r\nHost: herald\r\n\r\n"


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head


def test_an_idle_keep_alive_connection_is_closed_at_once_on_shutdown() -> None:
    with running_gateway({"HERALD_SHUTDOWN_GRACE_SECONDS": "10"}) as gateway:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(REQUEST)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            # Kept alive: the server waits for the next request on this socket.
            started = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            sock.settimeout(5)
            assert sock.recv(4096) == b"", "the idle connection is closed, not answered"
            closed_after = time.monotonic() - started
        assert gateway.process.wait(5) == 0
        exited_after = time.monotonic() - started
    assert closed_after < 2
    # Nothing else was open, so the grace period (10 s) was not waited out.
    assert exited_after < 5
