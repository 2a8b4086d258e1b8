"""Which version answered (issue 14, gray releases): ``Herald-Version`` on every response,
once, whichever path made it (the native stream, the native publish route, native refusals,
the ASGI app's routes), ``server_version`` in ``connection.established``, and the client's
``Herald-Client-Version`` in the node's log of each stream."""

from __future__ import annotations

import httpx

from herald import __version__
from tests.support.api import unique, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.sse import open_stream


def version_of(response: httpx.Response) -> list[str]:
    return response.headers.get_list("herald-version")


async def test_every_response_names_the_server_version_once(gateway: GatewayProcess) -> None:
    user = unique("u")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        headers = {"authorization": f"Bearer {gateway.token(user)}", "herald-client-version": "9.8.7"}
        async with client.stream("GET", "/api/v1/events/stream", headers=headers) as stream:
            assert stream.status_code == 200
            assert version_of(stream) == [__version__]
        publish = await client.post(
            "/api/v1/events",
            json={"event": "task.created", "scope": "user", "key": user, "data": {}},
            headers={"authorization": f"Bearer {gateway.publisher_token}"},
        )
        refused = await client.get("/api/v1/events/stream", headers={"authorization": "Bearer nope"})
        health = await client.get("/api/v1/events/health")
        missing = await client.get("/no/such/route")
    assert (publish.status_code, version_of(publish)) == (202, [__version__])
    assert (refused.status_code, version_of(refused)) == (401, [__version__])
    assert (health.status_code, version_of(health)) == (200, [__version__])
    assert (missing.status_code, version_of(missing)) == (404, [__version__])

    def logged() -> bool:
        return any(
            e.get("event") == "sse_connection_established" and e.get("user_id") == user
            for e in gateway.logs()
        )

    await wait_until(logged, timeout=5, what="the stream's log line")
    line = next(
        e
        for e in gateway.logs()
        if e.get("event") == "sse_connection_established" and e.get("user_id") == user
    )
    assert line["client_version"] == "9.8.7"


async def test_connection_established_names_the_server_version(gateway: GatewayProcess) -> None:
    async with open_stream(gateway.url, token=gateway.token(unique("u"))) as stream:
        hello = await stream.next()
    assert hello.json()["server_version"] == __version__
