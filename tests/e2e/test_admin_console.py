"""The admin console (``/admin``, D31) in real Chromium against two nodes on a real Redis,
with streams opened by real HTTP clients: the page shows what the cluster holds, and its
actions (disconnect, revoke, drain) take effect on those streams. Screenshots go to
docs/operations/ (shown in docs/operations.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.api import unique
from tests.support.browser import ROOT, Driver, run_driver
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess
from tests.support.redis import running_redis
from tests.support.sse import Stream, open_stream

pytestmark = pytest.mark.browser

DOCS = ROOT / "docs" / "operations"
#: A user id that is markup: the page must show it as text and run nothing.
XSS_USER = "<img/src=x/onerror=window.pwned=1>"


async def until(driver: Driver, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The page's snapshot once ``predicate`` holds (the driver blocks: off the event loop,
    so the streams keep reading meanwhile)."""
    return await asyncio.to_thread(driver.until, predicate, 15, what)


async def request(driver: Driver, cmd: str, **fields: Any) -> None:
    await asyncio.to_thread(driver.request, cmd, **fields)


async def ends_with(stream: Stream, event_name: str) -> dict[str, Any]:
    while True:
        event = await stream.next(timeout=10)
        if event.event == event_name:
            body: dict[str, Any] = event.json()
            with pytest.raises(EOFError):
                await stream.next()
            return body


async def tick(targets: list[tuple[GatewayProcess, str]]) -> None:
    """Light traffic while the page runs (about 40 events a second), for its charts."""
    async with httpx.AsyncClient(timeout=10) as client:
        n = 0
        while True:
            for node, user in targets:
                await client.post(
                    f"{node.url}/api/v1/events",
                    json={"event": "task.progress-updated", "scope": "user", "key": user, "data": {"n": n}},
                    headers={"authorization": f"Bearer {node.publisher_token}"},
                )
            n += 1
            await asyncio.sleep(0.05)  # pacing the traffic, not waiting for a condition


async def node_id(node: GatewayProcess) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(
            f"{node.url}/api/v1/admin/nodes",
            headers={"authorization": f"Bearer {node.token('ops', admin=True)}"},
        )
    found: str = answer.json()["answered_by"]
    return found


async def test_the_admin_console_shows_the_cluster_and_its_actions_take_effect() -> None:
    alice, bob, dave = unique("alice"), unique("bob"), unique("dave")
    novel = f"novel:{unique('n')}"
    with (
        running_redis() as redis,
        running_cluster(
            2, cluster_env(redis, HERALD_RETRY_MS="1000", HERALD_MAX_CONNECTIONS_PER_USER="0")
        ) as nodes,
    ):
        ids = [await node_id(node) for node in nodes]
        n0, n1 = nodes
        async with contextlib.AsyncExitStack() as stack:

            async def stream(node: GatewayProcess, user: str, subscribe: str | None = None) -> Stream:
                token = node.token(user, resources=[novel] if subscribe else [])
                return await stack.enter_async_context(
                    open_stream(node.url, token=token, subscribe=subscribe)
                )

            alice_here = await stream(n0, alice)
            alice_there = await stream(n1, alice, subscribe=novel)
            bob_there = await stream(n1, bob)
            dave_there = await stream(n1, dave, subscribe=novel)
            xss = await stream(n0, XSS_USER)
            for opened in (alice_here, alice_there, bob_there, dave_there, xss):
                await opened.next()  # connection.established
            last = n0.publish("task.created", "user", alice, {"title": "t"})
            for n in range(12):
                n1.publish("chapter.updated", "novel", novel.split(":")[1], {"n": n})
            n0.publish("task.created", "user", XSS_USER, {"title": "x"})

            ticker = asyncio.create_task(tick([(n0, bob), (n1, dave)]))
            stack.callback(ticker.cancel)
            driver = stack.enter_context(
                run_driver(
                    "admin_console.mjs", ["--gateway", n0.url, "--path", "/admin?poll=250", "--timeout", "60"]
                )
            )
            first = await until(driver, lambda s: s["token_form_shown"], "the token form")
            assert first["nodes"] == []
            await request(driver, "token", token=n0.token("ops-dana", admin=True))
            shown = await until(
                driver,
                lambda s: (
                    {n["node"]: n["streams"] for n in s["nodes"]} == {ids[0]: 2, ids[1]: 3}
                    and any(c["channel"] == novel for c in s["channels"])
                    and s["rate_points"] >= 16
                    and s["rate_in"] > 0
                ),
                "both nodes with their streams, the busiest channels and a chart",
            )
            assert shown["status"] == "live"
            assert shown["stored_token"] is True
            assert shown["kpis"] == {"nodes": "2", "streams": "5", "users": "5"}
            assert all(n["state"] == "ready" for n in shown["nodes"])
            top = next(c for c in shown["channels"] if c["channel"] == novel)
            assert top["cells"] == [novel, "12", "24"]
            # Markup in a user id is text on the page, and nothing ran.
            assert f"user:{XSS_USER}" in [c["channel"] for c in shown["channels"]]
            await request(driver, "screenshot", path=str(DOCS / "admin-console.png"))

            # Look up a user: their streams on both nodes, and what was sent to them.
            await request(driver, "lookup", user=alice)
            found = await until(
                driver,
                lambda s: sorted(r["node"] for r in s["streams"]) == sorted(ids) and len(s["events"]) >= 2,
                "alice's streams on both nodes",
            )
            rows = {r["node"]: r["cells"] for r in found["streams"]}
            assert rows[ids[0]][4] == last  # the last event id
            assert rows[ids[1]][3] == novel  # the subscriptions
            assert found["events"][0][1] == "chapter.updated"
            await request(driver, "screenshot", path=str(DOCS / "admin-console-user.png"))

            # Disconnect: both of alice's streams end with connection.closing, reason disconnected.
            await request(driver, "click", selector="#disconnect")
            closings = await asyncio.gather(
                ends_with(alice_here, "connection.closing"), ends_with(alice_there, "connection.closing")
            )
            assert {body["reason"] for body in closings} == {"disconnected"}
            await until(
                driver,
                lambda s: any("2 streams closed" in line for line in s["log"]) and s["streams"] == [],
                "the disconnect logged and alice gone",
            )

            # Markup as a user id, looked up: shown as text.
            await request(driver, "lookup", user=XSS_USER)
            marked = await until(driver, lambda s: len(s["streams"]) == 1, "the markup user's stream")
            assert (marked["pwned"], marked["injected"]) == (None, 0)

            # Revoke: bob's stream ends with error.auth-revoked.
            await request(driver, "lookup", user=bob)
            await until(driver, lambda s: len(s["streams"]) == 1, "bob's stream")
            await request(driver, "click", selector="#revoke")
            revoked = await ends_with(bob_there, "error.auth-revoked")
            assert revoked["code"] == "AUTH_REVOKED"

            # Drain the second node from the first one's page: its streams move off.
            await request(driver, "click", selector=f'#nodes button[data-node="{ids[1]}"]')
            moved = await ends_with(dave_there, "connection.closing")
            assert moved["reason"] == "drain"
            drained = await until(
                driver,
                lambda s: (
                    {n["node"]: n["state"] for n in s["nodes"]} == {ids[0]: "ready", ids[1]: "draining"}
                    and {n["node"]: n["streams"] for n in s["nodes"]} == {ids[0]: 1, ids[1]: 0}
                ),
                "the second node draining and empty",
            )
            await request(driver, "screenshot", path=str(DOCS / "admin-console-drained.png"))
            errors = [e for e in driver.entries if e.get("kind") in ("page-error", "console", "dialog")]
            calls = [(e["method"], e["status"]) for e in driver.entries if e.get("kind") == "admin-call"]
            await asyncio.to_thread(driver.finish)

        assert errors == []
        assert calls == [("DELETE", 200), ("POST", 201), ("POST", 202)]
        assert any(line.endswith("2 streams closed") for line in drained["log"])
        logged = [
            (e["action"], e["by"])
            for node in nodes
            for e in node.logs()
            if e.get("event") == "admin_action" and e.get("action") in ("disconnect", "drain")
        ]
        assert sorted(logged) == [
            ("disconnect", "ops-dana"),
            ("disconnect", "ops-dana"),
            ("drain", "ops-dana"),
        ]
        assert any(e.get("event") == "revocation_made" and e.get("by") == "ops-dana" for e in n0.logs())
    for name in ("admin-console.png", "admin-console-user.png", "admin-console-drained.png"):
        assert (DOCS / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
