"""A token that expires while its stream is open ends the stream with
``error.auth-expired``, then closes it."""

from __future__ import annotations

import pytest

from tests.support.api import Api, unique
from tests.support.gateway import GatewayProcess
from tests.support.sse import open_stream


@pytest.mark.parametrize("credentials", ["bearer", "stream_token"])
async def test_a_stream_ends_when_its_token_expires(
    gateway: GatewayProcess, api: Api, credentials: str
) -> None:
    user = unique("u")
    jwt = gateway.token(user, ttl=3)  # whole seconds: it expires in 2 to 3 s
    if credentials == "bearer":
        opened = open_stream(gateway.url, token=jwt)
    else:
        opened = open_stream(gateway.url, stream_token=(await api.stream_token(jwt))["token"])
    async with opened as stream:
        hello = await stream.next()
        live = await api.publish("task.created", "user", user, {})
        # Less than AUTH_EXPIRING_SECONDS (60) left from the start: the warning comes on the
        # first tick, before or after the event.
        received = [await stream.next(timeout=5.0), await stream.next(timeout=5.0)]
        assert sorted(e.event for e in received) == ["auth.expiring", "task.created"]
        assert [e.id for e in received if e.event == "task.created"] == [live]
        ending = await stream.next(timeout=5.0)
        assert ending.event == "error.auth-expired"
        assert ending.json()["code"] == "AUTH_EXPIRED"
        assert ending.json()["message"]
        # A notice, not an event of the log: the client's cursor stays on the last event.
        assert stream.last_event_id == live
        with pytest.raises(EOFError):
            await stream.next()
        await stream.wait_closed()
        assert [e.event for e in stream.events] == [
            hello.event,
            *(e.event for e in received),
            "error.auth-expired",
        ]
    await api.wait_connections(0)
