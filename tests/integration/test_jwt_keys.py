"""RS256 and ES256 tokens, verified with a configured public key or through a JWKS URL
served by a real HTTP server; tokens signed with any other key are refused."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support.api import PUBLISH, STREAM_TOKEN, unique
from tests.support.gateway import SECRET, GatewayProcess, running_gateway
from tests.support.sse import StreamRefused, open_stream

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Signer:
    key: PrivateKey
    algorithm: str
    kid: str | None = None

    def token(self, sub: str, *, publisher: bool = False, ttl: float = 3600, **extra: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl), **extra}
        if publisher:
            claims["roles"] = ["publisher"]
        headers = {"kid": self.kid} if self.kid is not None else None
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=headers)

    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def jwk(self) -> dict[str, Any]:
        public = self.key.public_key()
        jwk: dict[str, Any] = (
            RSAAlgorithm.to_jwk(public, as_dict=True)
            if isinstance(public, rsa.RSAPublicKey)
            else ECAlgorithm.to_jwk(public, as_dict=True)
        )
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def rsa_signer(kid: str | None = None) -> Signer:
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", kid)


def ec_signer(kid: str | None = None) -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()), "ES256", kid)


@contextlib.contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[str]:
    """A real HTTP server on a free loopback port serving ``document``; yields its URL."""
    body = orjson.dumps(document)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def opens(gateway: GatewayProcess, token: str, signer: Signer) -> None:
    """``token`` opens a stream, and an event published with ``signer``'s key reaches it."""
    user = jwt.decode(token, options={"verify_signature": False})["sub"]
    async with open_stream(gateway.url, token=token) as stream:
        assert (await stream.next()).event == "connection.established"
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.post(
                PUBLISH,
                json={"event": "task.created", "scope": "user", "key": user, "data": {"k": signer.algorithm}},
                headers={"authorization": f"Bearer {signer.token('svc', publisher=True)}"},
            )
        assert response.status_code == 202, response.text
        event = await stream.next()
        assert event.id == response.json()["id"]
        assert event.json()["k"] == signer.algorithm


async def refused(gateway: GatewayProcess, token: str) -> dict[str, Any]:
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(gateway.url, token=token):
            pass
    assert caught.value.status == 401
    assert caught.value.body["code"] in ("AUTH_INVALID", "AUTH_EXPIRED")
    assert caught.value.body["message"]
    return caught.value.body


def hs256(sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")


@pytest.mark.parametrize("make_signer", [rsa_signer, ec_signer], ids=["RS256", "ES256"])
async def test_a_configured_public_key_verifies_tokens(make_signer: Any) -> None:
    signer: Signer = make_signer()
    stranger: Signer = make_signer()
    env = {
        "HERALD_JWT_ALGORITHMS": orjson.dumps([signer.algorithm]).decode(),
        "HERALD_JWT_PUBLIC_KEY": signer.public_pem(),
    }
    with running_gateway(env) as gateway:
        await opens(gateway, signer.token(unique("u")), signer)
        await refused(gateway, stranger.token(unique("u")))
        # The HMAC secret the gateway also holds is no key for tokens outside the allowlist.
        await refused(gateway, hs256(unique("u")))
        await refused(gateway, signer.token(unique("u"), ttl=-10))
        # And the stream-token exchange works with asymmetric credentials.
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.post(
                STREAM_TOKEN, headers={"authorization": f"Bearer {signer.token(unique('u'))}"}
            )
        assert response.status_code == 200, response.text
        async with open_stream(gateway.url, stream_token=response.json()["token"]) as stream:
            assert (await stream.next()).event == "connection.established"


async def test_a_token_whose_algorithm_does_not_fit_the_key_is_401() -> None:
    """ES256 is allowed but the configured key is RSA: a refusal, not a server error."""
    signer = rsa_signer()
    env = {"HERALD_JWT_ALGORITHMS": '["RS256", "ES256"]', "HERALD_JWT_PUBLIC_KEY": signer.public_pem()}
    with running_gateway(env) as gateway:
        await refused(gateway, ec_signer().token(unique("u")))
        await opens(gateway, signer.token(unique("u")), signer)


@pytest.fixture(scope="module")
def jwks_keys() -> tuple[Signer, Signer]:
    return rsa_signer("rsa-1"), ec_signer("ec-1")


@pytest.fixture(scope="module")
def jwks_gateway(jwks_keys: tuple[Signer, Signer]) -> Iterator[GatewayProcess]:
    document = {"keys": [signer.jwk() for signer in jwks_keys]}
    with jwks_server(document) as url:
        env = {"HERALD_JWT_ALGORITHMS": '["RS256", "ES256"]', "HERALD_JWKS_URL": url}
        with running_gateway(env) as gateway:
            yield gateway


async def test_jwks_keys_verify_tokens_by_kid(
    jwks_gateway: GatewayProcess, jwks_keys: tuple[Signer, Signer]
) -> None:
    rsa_key, ec_key = jwks_keys
    await opens(jwks_gateway, rsa_key.token(unique("u")), rsa_key)
    await opens(jwks_gateway, ec_key.token(unique("u")), ec_key)


async def test_jwks_refuses_tokens_signed_with_other_keys(
    jwks_gateway: GatewayProcess, jwks_keys: tuple[Signer, Signer]
) -> None:
    rsa_key, ec_key = jwks_keys
    # Another key claiming a published kid.
    await refused(jwks_gateway, rsa_signer(rsa_key.kid).token(unique("u")))
    await refused(jwks_gateway, ec_signer(ec_key.kid).token(unique("u")))
    # A kid the JWKS does not publish, and no kid at all.
    await refused(jwks_gateway, rsa_signer("unknown").token(unique("u")))
    await refused(jwks_gateway, rsa_signer(None).token(unique("u")))
    # The right key under the other key's kid.
    await refused(jwks_gateway, Signer(rsa_key.key, "RS256", ec_key.kid).token(unique("u")))
    # HS256 is not in this gateway's allowlist.
    await refused(jwks_gateway, hs256(unique("u")))
    # And the keys still work afterwards.
    await opens(jwks_gateway, rsa_key.token(unique("u")), rsa_key)


async def test_an_unreachable_jwks_is_503_and_does_not_reveal_its_url() -> None:
    """The token may be fine: the client should retry, not drop its credentials."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}/secret-path/jwks.json"
    env = {"HERALD_JWT_ALGORITHMS": '["RS256"]', "HERALD_JWKS_URL": url}
    with running_gateway(env) as gateway:
        with pytest.raises(StreamRefused) as caught:
            async with open_stream(gateway.url, token=rsa_signer("k1").token(unique("u"))):
                pass
        assert caught.value.status == 503
        assert caught.value.body["code"] == "AUTH_UNAVAILABLE"
        assert "retry-after" in caught.value.headers
        assert "secret-path" not in caught.value.body["message"]
