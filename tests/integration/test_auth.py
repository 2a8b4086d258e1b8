"""Who may open a stream: every refusal is a status with a JSON ``{code, message}``
body, and no stream."""

from __future__ import annotations

import base64
import time
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import orjson
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from tests.support.api import Api, unique
from tests.support.gateway import SECRET, GatewayProcess
from tests.support.sse import StreamRefused, open_stream


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": unique("u"), "iat": now, "exp": now + 3600, **extra}


def _unsigned(alg: str) -> str:
    """A token that claims to need no signature."""
    header = _b64(orjson.dumps({"alg": alg, "typ": "JWT"}))
    return f"{header}.{_b64(orjson.dumps(_claims()))}."


def _signed(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # The gateway's secret is short for HS512; the token must still be signed with it.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


#: name -> (a bearer token, the code it is refused with)
BAD_BEARERS: dict[str, tuple[Callable[[], str], str]] = {
    "malformed": (lambda: "not-a-jwt", "AUTH_INVALID"),
    "three garbage parts": (lambda: "abc.def.ghi", "AUTH_INVALID"),
    "bad signature": (
        lambda: _signed(_claims(), key="another-secret-0123456789abcdefghijklmn"),
        "AUTH_INVALID",
    ),
    "tampered payload": (
        lambda: ".".join(
            [
                _signed(_claims()).split(".")[0],
                _b64(orjson.dumps(_claims(sub="admin"))),
                _signed(_claims()).split(".")[2],
            ]
        ),
        "AUTH_INVALID",
    ),
    "expired": (lambda: _signed(_claims(exp=int(time.time()) - 10)), "AUTH_EXPIRED"),
    "nbf in the future": (lambda: _signed(_claims(nbf=int(time.time()) + 600)), "AUTH_INVALID"),
    "iat in the future": (lambda: _signed(_claims(iat=int(time.time()) + 600)), "AUTH_INVALID"),
    "alg none": (lambda: _unsigned("none"), "AUTH_INVALID"),
    "alg None": (lambda: _unsigned("None"), "AUTH_INVALID"),
    "HS512 outside the allowlist": (lambda: _signed(_claims(), algorithm="HS512"), "AUTH_INVALID"),
    "no exp": (lambda: _signed({"sub": unique("u")}), "AUTH_INVALID"),
    "no sub": (lambda: _signed({"exp": int(time.time()) + 60}), "AUTH_INVALID"),
    "sub with a comma": (lambda: _signed(_claims(sub="a,b")), "AUTH_INVALID"),
    "resources not a list": (lambda: _signed(_claims(resources="novel:*")), "AUTH_INVALID"),
}


def assert_refusal(refused: StreamRefused, status: int, code: str) -> None:
    assert refused.status == status, refused.body
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.body["code"] == code
    assert isinstance(refused.body["message"], str)
    assert refused.body["message"]


async def refused_stream(gateway: GatewayProcess, **kwargs: Any) -> StreamRefused:
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(gateway.url, **kwargs):
            pass
    return caught.value


@pytest.mark.parametrize("case", sorted(BAD_BEARERS))
async def test_a_bad_bearer_token_is_refused_with_401(gateway: GatewayProcess, case: str) -> None:
    make, code = BAD_BEARERS[case]
    assert_refusal(await refused_stream(gateway, token=make()), 401, code)


async def test_no_credentials_is_401_auth_missing(gateway: GatewayProcess) -> None:
    assert_refusal(await refused_stream(gateway), 401, "AUTH_MISSING")


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Token abc"])
async def test_an_authorization_header_that_is_not_bearer_is_401(
    gateway: GatewayProcess, authorization: str
) -> None:
    refused = await refused_stream(gateway, headers={"authorization": authorization})
    assert_refusal(refused, 401, "AUTH_INVALID")


async def test_a_jwt_in_the_url_is_refused(gateway: GatewayProcess) -> None:
    """Only stream tokens go in URLs: an application JWT there is refused, even a valid one."""
    refused = await refused_stream(gateway, stream_token=gateway.token(unique("u")))
    assert_refusal(refused, 401, "AUTH_INVALID")


async def test_a_stream_token_is_not_a_bearer_token(gateway: GatewayProcess, api: Api) -> None:
    minted = await api.stream_token(gateway.token(unique("u")))
    assert_refusal(await refused_stream(gateway, token=minted["token"]), 401, "AUTH_INVALID")
    # Nor can it buy another stream token.
    again = await api.stream_token_response(f"Bearer {minted['token']}")
    assert again.status_code == 401
    assert again.json()["code"] == "AUTH_INVALID"


async def test_a_header_and_a_url_token_together_are_refused(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    minted = await api.stream_token(gateway.token(user))
    refused = await refused_stream(gateway, token=gateway.token(user), stream_token=minted["token"])
    assert_refusal(refused, 401, "AUTH_INVALID")


async def test_refused_requests_leave_no_connection_behind(gateway: GatewayProcess, api: Api) -> None:
    await api.wait_connections(0)
    for make, _ in BAD_BEARERS.values():
        await refused_stream(gateway, token=make())
    # A real stream, opened after them, is the only connection.
    async with open_stream(gateway.url, token=gateway.token(unique("u"))) as stream:
        await stream.next()
        assert await api.connections() == 1


async def test_subscribing_to_a_resource_the_token_does_not_grant_is_403(gateway: GatewayProcess) -> None:
    token = gateway.token(unique("u"), resources=("novel:42", "chapter:*"))
    refused = await refused_stream(gateway, token=token, subscribe="novel:42,novel:7,chapter:1,world:9")
    assert_refusal(refused, 403, "PERMISSION_DENIED")
    assert refused.body["refused"] == ["novel:7", "world:9"]

    nothing_granted = await refused_stream(gateway, token=gateway.token(unique("u")), subscribe="novel:42")
    assert_refusal(nothing_granted, 403, "PERMISSION_DENIED")
    assert nothing_granted.body["refused"] == ["novel:42"]


@pytest.mark.parametrize(
    "subscribe", ["novel", "novel:", ":42", "Novel:42", "novel:4 2", "user:alice", "global:x", "session:s"]
)
async def test_a_malformed_subscription_is_422(gateway: GatewayProcess, subscribe: str) -> None:
    token = gateway.token(unique("u"), resources=("novel:*",))
    refused = await refused_stream(gateway, token=token, subscribe=subscribe)
    assert_refusal(refused, 422, "SUBSCRIPTION_INVALID")


async def test_granted_subscriptions_open_and_are_echoed(gateway: GatewayProcess) -> None:
    token = gateway.token(unique("u"), resources=("novel:42", "chapter:*"))
    async with open_stream(gateway.url, token=token, subscribe="novel:42,chapter:9,novel:42") as stream:
        hello = (await stream.next()).json()
        assert hello["subscriptions"] == ["chapter:9", "novel:42"]


async def test_credentials_are_checked_before_subscriptions(gateway: GatewayProcess) -> None:
    """An unauthenticated caller learns nothing about what it asked for."""
    assert_refusal(await refused_stream(gateway, subscribe="Not A Key"), 401, "AUTH_MISSING")
    assert_refusal(await refused_stream(gateway, token="garbage", subscribe="novel:1"), 401, "AUTH_INVALID")


def test_a_gateway_with_a_configured_secret_logs_no_token(gateway: GatewayProcess) -> None:
    log = gateway.log_path.read_text()
    assert "herald_listening" in log
    assert "eyJ" not in log, "a JWT was written to the log"
