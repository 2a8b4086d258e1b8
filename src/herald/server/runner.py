"""Run the standalone server, and shut it down in named steps."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import structlog

from herald.api.app import create_app
from herald.config import Settings
from herald.gateway import Gateway
from herald.server.context import ServerContext
from herald.server.gc_policy import GcPolicy
from herald.server.protocol import HttpProtocol

log = structlog.get_logger("herald.server")

#: Hook run once the gateway is up (the demo simulator uses it).
Extra = Callable[[Gateway], Coroutine[Any, Any, None]]


def install_event_loop() -> None:
    """uvloop where available: the stream path is measured on it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def demo_extras(settings: Settings) -> list[Extra]:
    """The demo simulator, when the settings ask for it."""
    if not settings.demo:
        return []
    from herald.sources.simulator import run_simulator

    async def simulate(gateway: Gateway) -> None:
        await run_simulator(gateway.publish)

    return [simulate]


async def serve(
    settings: Settings,
    *,
    extras: list[Extra] | None = None,
    on_ready: Callable[[str], None] | None = None,
    reuse_port: bool = False,
    private_port: int | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. ``reuse_port``: share the port with the other workers
    (SO_REUSEPORT); ``private_port``: also listen there alone (a worker's own port)."""
    loop = asyncio.get_running_loop()
    gateway = Gateway(settings)
    app = create_app(gateway, manage_gateway=False)
    await gateway.start()
    ctx = ServerContext(loop=loop, gateway=gateway, app=app, settings=settings)
    server = await loop.create_server(
        lambda: HttpProtocol(ctx),
        settings.host,
        settings.port,
        backlog=4096,
        reuse_address=True,
        reuse_port=reuse_port or None,
    )
    servers = [server]
    if private_port is not None:
        servers.append(
            await loop.create_server(
                lambda: HttpProtocol(ctx), settings.host, private_port, backlog=1024, reuse_address=True
            )
        )
    for listening in servers:
        watch_for_dead_peers(listening, settings.dead_peer_seconds)
        cap_send_buffers(listening, settings.send_buffer_bytes())
    host, port = server.sockets[0].getsockname()[:2]
    ctx.server_address = (str(host), int(port))
    background = [loop.create_task(extra(gateway)) for extra in extras or []]
    ctx.gc_policy = GcPolicy(lambda: gateway.manager.stats.opened)
    ctx.gc_policy.freeze_now()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A container's preStop hook: drain (streams move to the other nodes), then SIGTERM.
    loop.add_signal_handler(signal.SIGUSR1, gateway.drain_now)
    # One machine-readable line on stdout, for scripts and tests that wait for it.
    listening_line: dict[str, object] = {"event": "herald_listening", "host": host, "port": port}
    if private_port is not None:
        listening_line["private_port"] = servers[1].sockets[0].getsockname()[1]
    sys.stdout.write(orjson.dumps(listening_line).decode() + "\n")
    sys.stdout.flush()
    log.info(
        "herald_listening",
        url=f"http://{host}:{port}",
        bus=settings.bus,
        **({"private_port": listening_line["private_port"]} if private_port is not None else {}),
    )
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")

    await stop.wait()
    await shutdown(servers, ctx, background)


def watch_for_dead_peers(server: asyncio.Server, seconds: float) -> None:
    """TCP_USER_TIMEOUT on the listening sockets, which accepted sockets inherit.

    Heartbeats keep unacknowledged data in flight on a stream whose peer
    vanished (a laptop closed, a network switched); the timeout turns that
    into connection_lost, which frees the connection, its count and its stream
    token for the client's reconnect (docs/architecture.md, D11).
    """
    if seconds <= 0 or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return
    for sock in server.sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))


def cap_send_buffers(server: asyncio.Server, size: int) -> None:
    """``SO_SNDBUF`` on the listening sockets, which accepted sockets inherit.

    The slow-consumer budget counts Herald's queue and the transport's buffer; the
    kernel's send buffer comes on top, and with autotuning it grows to megabytes for a
    client that never reads. Capped, a never-reading stream holds at most the budget in
    the kernel too, whatever the machine's ``tcp_wmem`` (issue 13)."""
    if size <= 0:
        return
    for sock in server.sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def shutdown(
    servers: list[asyncio.Server], ctx: ServerContext, background: list[asyncio.Task[None]]
) -> None:
    grace = ctx.settings.shutdown_grace_seconds
    log.info("herald_shutdown_started", connections=len(ctx.protocols), grace_s=grace)
    # 1. Stop accepting new connections; idle keep-alive ones close now, busy ones
    #    after their response, so no client sends a new request to this node.
    for server in servers:
        server.close()
    for protocol in list(ctx.protocols):
        protocol.shutdown()
    # 2. Events the coalesce throttle holds go to the bus now, so the open streams carry
    #    them before they close; then tell every stream when to come back (jittered) and close it.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(ctx.gateway.flush_held(), timeout=max(1.0, grace))
    await ctx.gateway.manager.shutdown(grace)
    for task in background:
        task.cancel()
    # 3. Give streams and in-flight requests the grace period to finish.
    if ctx.protocols:
        ctx.idle.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.idle.wait(), timeout=grace)
    # 4. Whatever is left is cut off.
    for protocol in list(ctx.protocols):
        if protocol.transport is not None:
            protocol.transport.abort()
    for server in servers:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=1.0)
    # 5. Stop the gateway: sources, then the bus.
    await ctx.gateway.stop()
    log.info("herald_shutdown_complete")


def run(
    settings: Settings,
    *,
    extras: list[Extra] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    install_event_loop()
    asyncio.run(serve(settings, extras=extras, on_ready=on_ready))
