"""Resource authorization by an HTTP callback to the application (a real local HTTP
server): asked on admission and on subscription changes, cached briefly, asked
again on reconnect, and failing closed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.api import api_client, unique, wait_until
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.sse import StreamRefused, open_stream

SECRET = "app-knows-herald"


class Application:
    """The application's authorization endpoint: who may see which resource."""

    def __init__(self) -> None:
        self.grants: dict[str, set[str]] = {}
        self.questions: list[dict[str, Any]] = []
        self.failing = False
        self.lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with app.lock:
                    app.questions.append({"body": body, "authorization": self.headers.get("authorization")})
                    allowed = sorted(app.grants.get(body["user_id"], set()) & set(body["resources"]))
                    failing = app.failing
                payload = b"oops" if failing else json.dumps({"allowed": allowed}).encode()
                self.send_response(500 if failing else 200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/herald/authorize"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def asked(self) -> int:
        with self.lock:
            return len(self.questions)


@pytest.fixture(scope="module")
def application() -> Iterator[Application]:
    app = Application()
    app.thread.start()
    yield app
    app.server.shutdown()
    app.server.server_close()


@pytest.fixture(scope="module")
def gateway(application: Application) -> Iterator[GatewayProcess]:
    env = {
        "HERALD_AUTHORIZER": "http",
        "HERALD_AUTHORIZER_URL": application.url,
        "HERALD_AUTHORIZER_TOKEN": SECRET,
        "HERALD_AUTHORIZER_CACHE_SECONDS": "2",
        "HERALD_HEARTBEAT_SECONDS": "30",
        # Asked only at admission and on changes here: these tests count the questions.
        "HERALD_AUTHORIZER_RECHECK_SECONDS": "0",
    }
    with running_gateway(env) as process:
        yield process


async def test_the_application_decides_and_is_asked_once_per_cache_period(
    gateway: GatewayProcess, application: Application
) -> None:
    user, mine, theirs = unique("u"), f"novel:{unique('n')}", f"novel:{unique('n')}"
    application.grants[user] = {mine}
    token = gateway.token(user)  # no resources claim: the application decides, not the token
    before = application.asked()
    async with open_stream(gateway.url, token=token, subscribe=mine) as stream:
        assert (await stream.next()).json()["subscriptions"] == [mine]
    question = application.questions[before]
    assert question["authorization"] == f"Bearer {SECRET}"
    assert question["body"] == {"user_id": user, "session_id": None, "resources": [mine]}
    # Within the cache period the answer is reused, refusals too.
    async with open_stream(gateway.url, token=token, subscribe=mine) as stream:
        await stream.next()
    assert application.asked() == before + 1
    with pytest.raises(StreamRefused) as refused:
        async with open_stream(gateway.url, token=token, subscribe=f"{mine},{theirs}"):
            pass
    assert refused.value.status == 403
    assert refused.value.body["code"] == "PERMISSION_DENIED"
    assert refused.value.body["refused"] == [theirs]
    assert application.questions[-1]["body"]["resources"] == [theirs], "only the unknown key is asked"


async def test_a_revoked_grant_refuses_the_reconnect(
    gateway: GatewayProcess, application: Application
) -> None:
    user, novel = unique("u"), f"novel:{unique('n')}"
    application.grants[user] = {novel}
    token = gateway.token(user)
    async with open_stream(gateway.url, token=token, subscribe=novel) as stream:
        await stream.next()
    application.grants[user] = set()

    async def refused() -> bool:
        try:
            async with open_stream(gateway.url, token=token, subscribe=novel) as again:
                await again.next()
                return False
        except StreamRefused as exc:
            return exc.status == 403

    await wait_until(refused, timeout=10, interval=0.1, what="the reconnect refused once the cache expired")


async def test_a_subscription_change_asks_the_application(
    gateway: GatewayProcess, application: Application
) -> None:
    user, granted, denied = unique("u"), f"novel:{unique('n')}", f"novel:{unique('n')}"
    application.grants[user] = {granted}
    token = gateway.token(user)
    async with open_stream(gateway.url, token=token) as stream, api_client(gateway) as api:
        connection_id = (await stream.next()).json()["connection_id"]
        response = await api.client.post(
            "/api/v1/events/subscriptions",
            json={"connection_id": connection_id, "add": [granted, denied]},
            headers={"authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["added"] == [granted]
        assert [(r["key"], r["code"]) for r in response.json()["refused"]] == [(denied, "PERMISSION_DENIED")]
        assert application.questions[-1]["body"]["resources"] == [granted, denied]


async def test_an_application_that_cannot_answer_refuses_with_503(
    gateway: GatewayProcess, application: Application
) -> None:
    user, novel = unique("u"), f"novel:{unique('n')}"
    application.grants[user] = {novel}
    application.failing = True
    try:
        with pytest.raises(StreamRefused) as refused:
            async with open_stream(gateway.url, token=gateway.token(user), subscribe=novel):
                pass
    finally:
        application.failing = False
    assert refused.value.status == 503
    assert refused.value.body["code"] == "AUTH_UNAVAILABLE"
    assert "retry-after" in refused.value.headers
    # A stream without subscriptions does not need the application.
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        assert (await stream.next()).event == "connection.established"


async def test_a_grant_withdrawn_while_the_stream_is_open_drops_that_subscription(
    application: Application,
) -> None:
    """Asked again every recheck interval: the resource the application no longer grants
    leaves the open stream (connection.subscriptions-changed, its events stop), the
    others stay; an application that cannot answer withdraws nothing."""
    env = {
        "HERALD_AUTHORIZER": "http",
        "HERALD_AUTHORIZER_URL": application.url,
        "HERALD_AUTHORIZER_CACHE_SECONDS": "0",
        "HERALD_AUTHORIZER_RECHECK_SECONDS": "0.3",
        "HERALD_HEARTBEAT_SECONDS": "30",
    }
    user = unique("u")
    kept, lost = f"novel:{unique('n')}", f"novel:{unique('n')}"
    with application.lock:
        application.grants[user] = {kept, lost}
    with running_gateway(env) as gateway:
        async with (
            api_client(gateway) as api,
            open_stream(gateway.url, token=gateway.token(user), subscribe=f"{kept},{lost}") as stream,
        ):
            hello = (await stream.next()).json()
            assert sorted(hello["subscriptions"]) == sorted([kept, lost])
            with application.lock:
                application.failing = True
            asked = application.asked()
            await wait_until(lambda: application.asked() >= asked + 2, timeout=10, what="two rechecks")
            with application.lock:
                application.failing = False
                application.grants[user] = {kept}
            changed = await stream.until(lambda e: e.event == "connection.subscriptions-changed", timeout=10)
            assert changed[-1].json()["removed"] == [lost]
            assert changed[-1].json()["subscriptions"] == [kept]
            assert [e.event for e in changed[:-1]] == [], "the failing rounds withdrew nothing"
            await api.publish("chapter.draft-created", "novel", lost.split(":")[1], {"n": 1})
            after = await api.publish("chapter.draft-created", "novel", kept.split(":")[1], {"n": 2})
            got = await stream.until(lambda e: e.id == after, timeout=10)
            assert [e.id for e in got] == [after], "the withdrawn resource's event never came"
