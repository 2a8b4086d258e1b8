"""Heartbeats: an idle stream hears a comment every ``HERALD_HEARTBEAT_SECONDS``,
carrying the node's position as its ``id`` while the stream is current."""

from __future__ import annotations

from contextlib import AsyncExitStack

from tests.support.api import Api, unique, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.sse import Stream, open_stream

#: The shared gateway's interval is 0.5 s; a comment at least every 1.5 s is plenty of margin.
INTERVAL = 0.5
SLACK = 3


async def test_an_idle_stream_hears_heartbeats(gateway: GatewayProcess) -> None:
    async with open_stream(gateway.url, token=gateway.token(unique("idle"))) as stream:
        await stream.next()
        wanted = 4
        await wait_until(
            lambda: stream.heartbeats >= wanted,
            timeout=wanted * INTERVAL * SLACK,
            what=f"{wanted} heartbeats",
        )
        # Comments are not events: the client dispatched nothing but the greeting.
        assert [e.event for e in stream.events] == ["connection.established"]


async def test_every_idle_stream_hears_its_own_heartbeats(gateway: GatewayProcess) -> None:
    async with AsyncExitStack() as stack:
        streams: list[Stream] = []
        for _ in range(6):
            stream = await stack.enter_async_context(
                open_stream(gateway.url, token=gateway.token(unique("u")))
            )
            await stream.next()
            streams.append(stream)
        wanted = 3
        await wait_until(
            lambda: all(s.heartbeats >= wanted for s in streams),
            timeout=wanted * INTERVAL * SLACK,
            what=f"{wanted} heartbeats on every stream",
        )


async def test_a_heartbeat_carries_the_nodes_position(gateway: GatewayProcess, api: Api) -> None:
    async with open_stream(gateway.url, token=gateway.token(unique("idle"))) as stream:
        await stream.next()
        elsewhere = await api.publish("task.created", "user", unique("other"), {})
        assert (await api.health())["position"] == elsewhere
        await wait_until(
            lambda: stream.last_event_id == elsewhere,
            timeout=INTERVAL * SLACK * 2,
            what="a heartbeat with the new position",
        )
        assert [e.event for e in stream.events] == ["connection.established"]
