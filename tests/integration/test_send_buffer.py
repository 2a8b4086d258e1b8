"""What the kernel may hold for a stream (issue 13): ``SO_SNDBUF`` on the server's stream
sockets, sized to the slow-consumer budget, read back from the kernel with ``ss``
(iproute2) for the server side of real connections."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.api import unique
from tests.support.gateway import running_gateway
from tests.support.raw_stream import RawStream

BUDGET = 64 * 1024


def autotuning_starts_at() -> int:
    """The kernel's initial send buffer (net.ipv4.tcp_wmem: min, initial, max)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[1])


def server_send_buffers(port: int) -> list[int]:
    """The kernel's send buffer (``skmem`` ``tb``) of each established socket on ``port``."""
    out = subprocess.run(
        ["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(size) for size in re.findall(r"\btb(\d+)", out)]


@pytest.mark.parametrize(
    ("configured", "expected"),
    [(None, BUDGET), ("0", None), ("16384", 2 * 16384)],
    ids=["default-half-the-budget", "kernel-autotuning", "configured"],
)
async def test_a_streams_kernel_buffer_is_capped_by_the_budget(
    configured: str | None, expected: int | None
) -> None:
    """Linux doubles the ``SO_SNDBUF`` it is given; the default gives half the budget, so the
    kernel holds at most the budget. 0 leaves the kernel's autotuning (its tcp_wmem)."""
    env = {"HERALD_SLOW_CONSUMER_BYTES": str(BUDGET), "HERALD_HEARTBEAT_SECONDS": "0.5"}
    if configured is not None:
        env["HERALD_SOCKET_SEND_BUFFER_BYTES"] = configured
    with running_gateway(env) as gateway:
        stream = await RawStream.open(gateway.port, gateway.token(unique("u")), rcvbuf=4096)
        try:
            buffers = server_send_buffers(gateway.port)
            assert buffers, "the stream's server-side socket"
            if expected is None:
                initial = autotuning_starts_at()
                assert all(size >= initial for size in buffers), (buffers, initial)
                assert all(size != BUDGET for size in buffers)
            else:
                assert all(size == expected for size in buffers), buffers
        finally:
            stream.sock.close()
