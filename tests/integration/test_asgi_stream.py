"""The stream endpoint of the ASGI app: what an ASGI server embedding Herald serves.

The native server intercepts only ``GET /api/v1/events/stream`` byte for byte
and hands every other request to the ASGI app through its ASGI cycle (a real
ASGI server, chunked responses and all). A percent-encoded path reaches the
same route there, which is how these tests drive the ASGI stream over a socket.
"""

from __future__ import annotations

import pytest

from tests.support.api import Api, ids, unique, until_marker
from tests.support.gateway import GatewayProcess
from tests.support.sse import StreamRefused, open_stream

ASGI_STREAM = "/api/v1/events/%73tream"


async def test_the_asgi_stream_delivers_replays_and_goes_live(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    token = gateway.token(user)
    await api.publish("task.created", "user", user, {"n": 1})  # before: never replayed
    async with open_stream(gateway.url, token=token, path=ASGI_STREAM, last_event_id="1-0") as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert (
            stream.response.headers["transfer-encoding"] == "chunked"
        )  # the ASGI cycle, not the native path
        hello = await stream.next()
        assert hello.event == "connection.established"
        assert hello.json()["replay_miss"] == "stale"
        live = await api.publish("task.created", "user", user, {"n": 2})
        await api.publish("task.created", "user", unique("other"), {})
        first_marker = await api.marker()
        assert ids(await until_marker(stream, first_marker)) == [live]
    await api.wait_connections(0)
    async with open_stream(gateway.url, token=token, path=ASGI_STREAM, last_event_id=hello.id) as stream:
        assert (await stream.next()).json()["recovered"] is True
        marker = await api.marker()
        assert ids(await until_marker(stream, marker)) == [live, first_marker]
    await api.wait_connections(0)


async def test_the_asgi_stream_refuses_with_json(gateway: GatewayProcess) -> None:
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(gateway.url, token="nope", path=ASGI_STREAM):
            pass
    assert caught.value.status == 401
    assert caught.value.body["code"] == "AUTH_INVALID"


async def test_head_on_the_stream_is_answered_and_the_connection_stays_usable(
    gateway: GatewayProcess, api: Api
) -> None:
    """A HEAD must end: a stream held open behind it would stall the keep-alive connection."""
    token = gateway.token(unique("u"))
    head = await api.client.head("/api/v1/events/stream", headers={"authorization": f"Bearer {token}"})
    assert head.status_code == 405
    assert head.headers["allow"] == "GET"
    # The same keep-alive connection answers the next request.
    assert (await api.client.get("/api/v1/events/health")).status_code == 200
    assert await api.connections() == 0
