"""Stream tokens: what ``?token=`` carries for native EventSource. Short-lived, one
open stream at a time, reopenable after a close, and never written to a log."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.api import Api, api_client, ids, unique, until_marker, wait_until
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.sse import StreamRefused, open_stream


@pytest.fixture(scope="module")
def tokens_gateway() -> Iterator[GatewayProcess]:
    with running_gateway({"HERALD_HEARTBEAT_SECONDS": "0.5"}) as process:
        yield process


@pytest.fixture
async def tokens_api(tokens_gateway: GatewayProcess) -> AsyncIterator[Api]:
    async with api_client(tokens_gateway) as client:
        yield client


@pytest.fixture(scope="module")
def short_tokens() -> Iterator[GatewayProcess]:
    with running_gateway({"HERALD_STREAM_TOKEN_TTL_SECONDS": "1"}) as process:
        yield process


@pytest.fixture
async def short_api(short_tokens: GatewayProcess) -> AsyncIterator[Api]:
    async with api_client(short_tokens) as client:
        yield client


async def refusal(gateway: GatewayProcess, **kwargs: Any) -> StreamRefused:
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(gateway.url, **kwargs):
            pass
    assert caught.value.body["message"]
    return caught.value


async def wait_past(unix_time: float) -> None:
    await wait_until(lambda: time.time() > unix_time + 0.05, timeout=5.0, what=f"the clock past {unix_time}")


async def test_the_exchange_answers_a_token_its_expiry_and_a_stream_url(
    tokens_gateway: GatewayProcess, tokens_api: Api
) -> None:
    before = time.time()
    minted = await tokens_api.stream_token(tokens_gateway.token(unique("u")))
    assert set(minted) == {"token", "expires_at", "expires_in", "stream_url"}
    assert 55 <= minted["expires_in"] <= 60
    assert before + 58 <= minted["expires_at"] <= time.time() + 60
    assert minted["stream_url"] == f"/api/v1/events/stream?token={quote(minted['token'])}"

    # A token minted from a JWT that ends sooner ends with it.
    short = await tokens_api.stream_token(tokens_gateway.token(unique("u"), ttl=20))
    assert 15 <= short["expires_in"] <= 20

    async with (
        httpx.AsyncClient(base_url=tokens_gateway.url) as client,
        client.stream("GET", minted["stream_url"]) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                assert line == "event: connection.established"
                break


@pytest.mark.parametrize(
    ("authorization", "code"),
    [(None, "AUTH_MISSING"), ("Bearer nope", "AUTH_INVALID"), ("Basic eDp5", "AUTH_INVALID")],
)
async def test_the_exchange_needs_a_valid_jwt(tokens_api: Api, authorization: str | None, code: str) -> None:
    response = await tokens_api.stream_token_response(authorization)
    assert response.status_code == 401
    assert response.json()["code"] == code
    assert response.json()["message"]


async def test_the_exchange_refuses_an_expired_jwt(tokens_gateway: GatewayProcess, tokens_api: Api) -> None:
    response = await tokens_api.stream_token_response(f"Bearer {tokens_gateway.token(unique('u'), ttl=-5)}")
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_EXPIRED"


async def test_a_stream_token_opens_the_stream_of_its_jwts_user_session_and_resources(
    tokens_gateway: GatewayProcess, tokens_api: Api
) -> None:
    user, sid, novel = unique("u"), unique("sid"), unique("n")
    jwt = tokens_gateway.token(user, sid=sid, resources=("novel:*",))
    minted = await tokens_api.stream_token(jwt)
    async with open_stream(
        tokens_gateway.url, stream_token=minted["token"], subscribe=f"novel:{novel}"
    ) as stream:
        hello = (await stream.next()).json()
        assert hello["subscriptions"] == [f"novel:{novel}"]
        expected = [
            await tokens_api.publish("task.created", "user", user, {}),
            await tokens_api.publish("genesis.step-completed", "session", sid, {}),
            await tokens_api.publish("chapter.draft-created", "novel", novel, {}),
        ]
        await tokens_api.publish("task.created", "user", unique("other"), {})
        marker = await tokens_api.marker()
        assert ids(await until_marker(stream, marker)) == expected

    # Its grants are the JWT's: a resource the JWT did not grant is refused.
    narrow = await tokens_api.stream_token(tokens_gateway.token(user, resources=("novel:1",)))
    refused = await refusal(tokens_gateway, stream_token=narrow["token"], subscribe="novel:2")
    assert refused.status == 403
    assert refused.body["code"] == "PERMISSION_DENIED"
    # A refused subscription took no lease: the token still opens a stream.
    async with open_stream(tokens_gateway.url, stream_token=narrow["token"], subscribe="novel:1") as stream:
        assert (await stream.next()).event == "connection.established"


async def test_one_open_stream_per_token_and_reopening_after_a_close(
    tokens_gateway: GatewayProcess, tokens_api: Api
) -> None:
    user = unique("u")
    minted = await tokens_api.stream_token(tokens_gateway.token(user))
    await tokens_api.wait_connections(0)
    async with open_stream(tokens_gateway.url, stream_token=minted["token"]) as first:
        await first.next()
        for _ in range(2):
            refused = await refusal(tokens_gateway, stream_token=minted["token"])
            assert refused.status == 401
            assert refused.body["code"] == "STREAM_TOKEN_IN_USE"
        # The refusals did not disturb the stream that holds the token.
        delivered = await tokens_api.publish("task.created", "user", user, {"n": 1})
        assert (await first.next()).id == delivered
        assert await tokens_api.connections() == 1
    await tokens_api.wait_connections(0)

    # Reopened as EventSource does: same URL, with Last-Event-ID.
    missed = await tokens_api.publish("task.created", "user", user, {"n": 2})
    async with open_stream(
        tokens_gateway.url, stream_token=minted["token"], last_event_id=delivered
    ) as again:
        hello = await again.next()
        assert hello.json()["recovered"] is True
        assert (await again.next()).id == missed
        refused = await refusal(tokens_gateway, stream_token=minted["token"])
        assert refused.body["code"] == "STREAM_TOKEN_IN_USE"
    await tokens_api.wait_connections(0)
    async with open_stream(tokens_gateway.url, stream_token=minted["token"]) as third:
        assert (await third.next()).event == "connection.established"


async def test_tokens_never_reach_the_logs(tokens_gateway: GatewayProcess, tokens_api: Api) -> None:
    user = unique("logged")
    jwt = tokens_gateway.token(user)
    minted = await tokens_api.stream_token(jwt)
    async with open_stream(tokens_gateway.url, stream_token=minted["token"], last_event_id="1-0") as stream:
        await stream.next()
        await refusal(tokens_gateway, stream_token=minted["token"])
    await refusal(tokens_gateway, stream_token=jwt)  # an application JWT in the URL
    await refusal(tokens_gateway, stream_token="garbage-token-value-0123456789")

    def closed_logged() -> bool:
        return any(
            entry.get("event") == "sse_connection_closed" and entry.get("user_id") == user
            for entry in tokens_gateway.logs()
        )

    await wait_until(closed_logged, what="the stream's close in the log")
    raw = tokens_gateway.log_path.read_text()
    opened = [e for e in tokens_gateway.logs() if e.get("event") == "sse_connection_established"]
    assert any(e.get("user_id") == user and e.get("credentials") == "stream_token" for e in opened)
    for secret in (minted["token"], jwt, "garbage-token-value-0123456789"):
        assert secret not in raw
    assert "token=" not in raw


async def test_an_expired_stream_token_is_401_auth_expired(
    short_tokens: GatewayProcess, short_api: Api
) -> None:
    minted = await short_api.stream_token(short_tokens.token(unique("u")))
    assert minted["expires_in"] <= 1
    await wait_past(minted["expires_at"])
    refused = await refusal(short_tokens, stream_token=minted["token"])
    assert refused.status == 401
    assert refused.body["code"] == "AUTH_EXPIRED"


async def test_a_stream_outlives_its_stream_token_but_cannot_reopen_after_it(
    short_tokens: GatewayProcess, short_api: Api
) -> None:
    user = unique("u")
    # ``exp`` is whole seconds: minted early in a second, the 1 s token lives long enough to open.
    await wait_until(lambda: time.time() % 1 < 0.3, what="the start of a second")
    minted = await short_api.stream_token(short_tokens.token(user))
    async with open_stream(short_tokens.url, stream_token=minted["token"]) as stream:
        await stream.next()
        await wait_past(minted["expires_at"])
        # The stream lasts as long as the JWT behind it, not the minutes-long stream token.
        cursor = await short_api.publish("task.created", "user", user, {})
        assert (await stream.next()).id == cursor
    await short_api.wait_connections(0)
    refused = await refusal(short_tokens, stream_token=minted["token"], last_event_id=cursor)
    assert refused.status == 401
    assert refused.body["code"] == "AUTH_EXPIRED"
