"""Bugs the reliability suite found, each pinned by a test named for what broke."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time

import httpx
import pytest

from herald.auth.stream_tokens import MemoryStreamTokenLeases, StreamTokens, stream_key
from herald.auth.tokens import TokenVerifier
from herald.config import Settings
from herald.errors import AuthError
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import SECRET, GatewayProcess, running_gateway
from tests.support.redis import RedisServer

pytestmark = pytest.mark.reliability


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _hs256(payload: bytes, secret: str = SECRET) -> str:
    """A correctly signed token around an exact JSON payload (escapes PyJWT would not write)."""
    head = _b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + _b64(payload)
    return (head + b"." + _b64(hmac.new(secret.encode(), head, hashlib.sha256).digest())).decode()


async def test_a_lone_surrogate_in_a_routing_key_is_refused_not_a_500_on_the_redis_bus(
    redis_server: RedisServer,
) -> None:
    """JSON's "\\ud800" decodes to a lone surrogate, which Redis's client cannot encode: a
    publish key, a JWT's sub or sid carrying one answered 500 (the Redis bus) or minted a
    stream token. Routing keys now refuse them (422 for events, 401 for tokens)."""
    with running_cluster(1, cluster_env(redis_server)) as (node,):
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            publisher = {
                "authorization": f"Bearer {node.publisher_token}",
                "content-type": "application/json",
            }
            for body in (
                b'{"event":"a.b-c","scope":"user","key":"\\ud800","data":{}}',
                b'{"event":"a.b-c","scope":"novel","key":"x\\udc80y","data":{}}',
            ):
                answer = await http.post("/api/v1/events", content=body, headers=publisher)
                assert answer.status_code == 422, answer.text
                assert answer.json()["field"] == "key"
            exp = int(time.time()) + 300
            for claims in (
                b'{"sub":"\\ud800","exp":%d}' % exp,
                b'{"sub":"u","sid":"\\udfff","exp":%d}' % exp,
            ):
                bearer = {"authorization": f"Bearer {_hs256(claims)}"}
                stream = await http.get("/api/v1/events/stream", headers=bearer)
                assert stream.status_code == 401, stream.text
                minted = await http.post("/api/v1/auth/sse-token", headers=bearer)
                assert minted.status_code == 401, minted.text
            assert not [e for e in node.logs() if e.get("level") == "error"]


async def test_a_stream_request_with_too_many_query_fields_is_answered_not_left_open(
    gateway: GatewayProcess,
) -> None:
    """parse_qs raised past 50 fields outside the admission's error handling: the request
    was never answered and its socket held forever (no timer runs once headers are in),
    one descriptor per request, past every connection limit. Now: 400 REQUEST_INVALID."""
    query = "&".join(f"f{i}=1" for i in range(51))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(f"GET /api/v1/events/stream?{query} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)  # the server answers and closes
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert b'"code":"REQUEST_INVALID"' in answer


@pytest.mark.parametrize("token", ["\ude0a", "eyJhbGciOiJIUzI1NiJ9.\ud800.x", "a.b.c\udfff"])
async def test_a_token_with_a_lone_surrogate_is_an_auth_error_not_a_unicode_crash(token: str) -> None:
    """Found by atheris: PyJWT encodes the token to UTF-8 first and raised UnicodeEncodeError,
    which neither verifier caught (headers and query strings arrive as latin-1, so the
    network cannot send one; an embedding application passing text can)."""
    settings = Settings(jwt_secret=SECRET)
    with pytest.raises(AuthError):
        await TokenVerifier(settings).verify(token)
    with pytest.raises(AuthError):
        StreamTokens(stream_key(None, SECRET), MemoryStreamTokenLeases()).verify(token)


async def test_presence_of_a_path_that_is_no_user_id_is_a_documented_refusal(gateway: GatewayProcess) -> None:
    """Found by schemathesis: ``GET /presence/{user_id}`` answered any text as a user id (a
    lone line break as the user "", a space, a comma) and 404 for a line break inside one,
    a status its OpenAPI operation did not list. Ids are checked as routing keys (422)
    and the 404 is documented."""
    publisher = {"authorization": f"Bearer {gateway.publisher_token}"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        assert (await http.get("/api/v1/events/presence/alice", headers=publisher)).status_code == 200
        for bad in ("%0A", "a%20b", "a,b", "%00"):
            answer = await http.get(f"/api/v1/events/presence/{bad}", headers=publisher)
            assert answer.status_code == 422, (bad, answer.text)
        assert (await http.get("/api/v1/events/presence/a%0Ab", headers=publisher)).status_code == 404
        document = (await http.get("/openapi.json")).json()
    operation = document["paths"]["/api/v1/events/presence/{user_id}"]["get"]
    assert {"404", "422"} <= set(operation["responses"])


async def _exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send ``raw`` on a fresh connection; everything the server writes until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def _statuses(answer: bytes) -> list[int]:
    return [int(answer[i + 9 : i + 12]) for i in range(len(answer)) if answer.startswith(b"HTTP/1.1 ", i)]


async def test_a_request_pipelined_behind_a_stream_request_is_ignored_not_a_500(
    gateway: GatewayProcess,
) -> None:
    """The stream request dropped the parser from inside llhttp's callback while llhttp went
    on parsing the bytes pipelined behind it: an assertion failed, the client got a 500
    (and the log an exception) instead of the stream's own answer."""
    stream = b"GET /api/v1/events/stream HTTP/1.1\r\nhost: x\r\n\r\n"
    health = b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\n\r\n"
    answer = await _exchange(gateway.port, stream + health)
    assert _statuses(answer) == [401], answer[:300]
    assert b"AUTH_MISSING" in answer


async def test_a_request_body_that_never_finishes_is_closed_after_the_header_timeout() -> None:
    """Slowloris through the body: the header timer was cancelled once the headers were in,
    and nothing timed the body, so a client trickling one held its connection forever."""
    with running_gateway({"HERALD_HEADER_TIMEOUT_SECONDS": "1"}) as node:
        for head in (
            b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{",
            b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n",
        ):
            started = time.monotonic()
            assert await _exchange(node.port, head, timeout=10) == b""  # closed, unanswered
            assert time.monotonic() - started < 5


async def test_a_malformed_request_behind_a_good_one_lets_the_first_be_answered(
    gateway: GatewayProcess,
) -> None:
    """A parse error while a response was in flight closed the connection at once: the
    valid request before it never got its answer, the bad one no 400."""
    health = b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\n\r\n"
    upgrade = (
        b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )
    answer = await _exchange(gateway.port, health + b"GET /x HTTP/1.1\r\nbad header\r\n\r\n")
    assert _statuses(answer) == [200, 400], answer[:300]
    assert _statuses(await _exchange(gateway.port, upgrade))[-1] == 400
