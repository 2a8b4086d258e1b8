"""Real Chromium (Debian's, driven by npm playwright-core) against real gateways.

Each test starts its own ``herald serve`` and a Node driver from
tests/e2e/browser/; the driver reports what happens in the browser as JSON
lines and the test waits on those, with deadlines. Missing Chromium or
node_modules fail the test with the install step to run.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import ROOT, Driver, Entry, run_driver
from tests.support.gateway import GatewayProcess, running_gateway, start_gateway

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
#: The gateway's own events, which every page should listen for.
GATEWAY_EVENTS = ["connection.established", "connection.closing", "error.auth-expired", "error.slow-consumer"]
#: No heartbeat during a test: the browser's Last-Event-ID is then exactly the last event's id.
QUIET = {"HERALD_HEARTBEAT_SECONDS": "60"}


def stream_path(gateway: GatewayProcess, jwt: str, subscribe: str | None = None) -> str:
    """A stream token's ``stream_url``, as the page would build it."""
    response = httpx.post(
        f"{gateway.url}/api/v1/auth/sse-token", headers={"authorization": f"Bearer {jwt}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    path: str = response.json()["stream_url"]
    return f"{path}&subscribe={subscribe}" if subscribe else path


def native(gateway: GatewayProcess, path: str, events: list[str], *, proxy: bool = False) -> Any:
    args = ["--gateway", gateway.url, "--stream", path, "--events", ",".join(GATEWAY_EVENTS + events)]
    return run_driver("native_eventsource.mjs", [*args, "--proxy"] if proxy else args)


def named(name: str) -> Any:
    return lambda e: e.get("kind") == "event" and e.get("name") == name


def with_id(cursor: str) -> Any:
    return lambda e: e.get("kind") == "event" and e.get("id") == cursor


def index_of(driver: Driver, entry: Entry) -> int:
    return next(i for i, e in enumerate(driver.entries) if e is entry)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- a) native EventSource: the right events, in order, and nothing else


def test_native_eventsource_gets_its_user_resource_and_global_events_and_nothing_else() -> None:
    with running_gateway(QUIET) as gateway:
        jwt = gateway.token("browser-alice", resources=["novel:1", "novel:2"])
        names = [
            "task.progress-updated",
            "chapter.draft-created",
            "system.notification",
            "task.status-changed",
        ]
        with native(gateway, stream_path(gateway, jwt, "novel:1"), names) as driver:
            hello = driver.wait_for(named("connection.established"), 20, "connection.established")
            welcome = driver.data(hello)
            assert welcome["recovered"] is False
            assert welcome["replay_miss"] == "none"
            assert welcome["subscriptions"] == ["novel:1"]
            assert welcome["connection_id"]

            progress = {"task_id": "t1", "progress": 40, "message": "drafting", "estimated_remaining": 12}
            mine = gateway.publish("task.progress-updated", "user", "browser-alice", progress)
            gateway.publish("task.progress-updated", "user", "browser-bob", {"task_id": "bob", "progress": 1})
            gateway.publish("chapter.draft-created", "novel", "2", {"chapter_id": "c9", "novel_id": "2"})
            chapter = {"chapter_id": "c1", "chapter_number": 1, "title": "Salt and Ash", "novel_id": "1"}
            resource = gateway.publish("chapter.draft-created", "novel", "1", chapter)
            notice = {"level": "info", "title": "Hello", "message": "to everyone", "action_required": False}
            everyone = gateway.publish("system.notification", "global", None, notice)
            marker = gateway.publish(
                "task.status-changed",
                "user",
                "browser-alice",
                {"task_id": "t1", "old_status": "running", "new_status": "completed"},
            )
            driver.wait_for(with_id(marker), 10, "the marker event")
            result = driver.finish()

    events = [e for e in result["entries"] if e["kind"] == "event"]
    assert [(e["name"], e["id"]) for e in events] == [
        ("connection.established", hello["id"]),
        ("task.progress-updated", mine),
        ("chapter.draft-created", resource),
        ("system.notification", everyone),
        ("task.status-changed", marker),
    ]
    assert [json.loads(e["data"]) for e in events[1:4]] == [
        {**progress, "_scope": "user", "_version": "1.0"},
        {**chapter, "_scope": "novel", "_version": "1.0"},
        {**notice, "_scope": "global", "_version": "1.0"},
    ]
    assert all(e["origin"] == gateway.url for e in events)
    assert not any("bob" in e["data"] or '"c9"' in e["data"] for e in events)


# --- b) native auto-reconnect: Last-Event-ID and retry:


def test_native_eventsource_comes_back_by_itself_to_a_restarted_gateway_with_last_event_id() -> None:
    port = free_port()
    env = {
        **QUIET,
        "HERALD_RETRY_MS": "200",
        "HERALD_SHUTDOWN_RETRY_SPREAD_MS": "300",
        "HERALD_SHUTDOWN_GRACE_SECONDS": "2",
    }
    first = start_gateway(env, port=port)
    second: GatewayProcess | None = None
    try:
        jwt = first.token("browser-carol", resources=["novel:1"])
        with native(first, stream_path(first, jwt, "novel:1"), ["task.created"]) as driver:
            hello = driver.wait_for(named("connection.established"), 20, "connection.established")
            before = first.publish("task.created", "user", "browser-carol", {"task_id": "before"})
            driver.wait_for(with_id(before), 10, "the event before the restart")

            assert first.stop() == 0
            closing = driver.wait_for(named("connection.closing"), 10, "connection.closing")
            notice = driver.data(closing)
            assert notice["reason"] == "shutdown"
            assert 200 <= notice["retry_ms"] <= 500
            seen = index_of(driver, closing)

            second = start_gateway(env, port=port)
            again = driver.wait_for(named("connection.established"), 15, "a new connection", start=seen)
            after = second.publish("task.created", "user", "browser-carol", {"task_id": "after"})
            driver.wait_for(with_id(after), 10, "the event after the restart")
            result = driver.finish()
    finally:
        first.stop()
        if second is not None:
            second.stop()

    welcome = json.loads(again["data"])
    # The new process's log cannot know the old cursor: "stale" (not "none")
    # proves the browser sent it.
    assert welcome["recovered"] is False
    assert welcome["replay_miss"] == "stale"
    assert welcome["connection_id"] != driver.data(hello)["connection_id"]
    requests = sorted((e for e in result["entries"] if e["kind"] == "request"), key=lambda e: e["number"])
    responses = [e for e in result["entries"] if e["kind"] == "response"]
    assert requests[0]["last_event_id"] is None
    assert requests[-1]["last_event_id"] == before
    # The same URL, so the same stream token, was accepted again for the reopen.
    assert len({r["url"] for r in requests}) == 1
    assert responses[0]["status"] == responses[-1]["status"] == 200
    names = [e["name"] for e in result["entries"] if e["kind"] == "event"]
    assert names == [
        "connection.established",
        "task.created",
        "connection.closing",
        "connection.established",
        "task.created",
    ]


def test_native_eventsource_resumes_exactly_after_a_dropped_connection() -> None:
    """One process, the network cut under the stream: the browser reconnects with
    Last-Event-ID and the log replays what was published meanwhile, only its own."""
    with running_gateway({**QUIET, "HERALD_RETRY_MS": "200"}) as gateway:
        jwt = gateway.token("browser-dave")
        with native(gateway, stream_path(gateway, jwt), ["task.created"], proxy=True) as driver:
            driver.wait_for(named("connection.established"), 20, "connection.established")
            before = gateway.publish("task.created", "user", "browser-dave", {"task_id": "before"})
            driver.wait_for(with_id(before), 10, "the event before the cut")

            reply = driver.request("cut")
            assert reply["dropped"] >= 1
            lost = driver.wait_for(
                lambda e: e.get("kind") == "error" and e.get("ready_state") == 0, 10, "the browser to notice"
            )
            missed = [
                gateway.publish("task.created", "user", "browser-dave", {"task_id": "missed-1"}),
                gateway.publish("task.created", "user", "browser-erin", {"task_id": "not-dave"}),
                gateway.publish("task.created", "user", "browser-dave", {"task_id": "missed-2"}),
            ]
            driver.request("restore")
            again = driver.wait_for(
                named("connection.established"), 15, "the reconnect", start=index_of(driver, lost)
            )
            live = gateway.publish("task.created", "user", "browser-dave", {"task_id": "live"})
            driver.wait_for(with_id(live), 10, "the live event after the reconnect")
            result = driver.finish()

    welcome = json.loads(again["data"])
    assert welcome["recovered"] is True
    assert welcome["replay_miss"] is None
    assert again["id"] == before
    tasks = [
        (e["id"], json.loads(e["data"])["task_id"])
        for e in result["entries"]
        if e["kind"] == "event" and e["name"] == "task.created"
    ]
    assert tasks == [(before, "before"), (missed[0], "missed-1"), (missed[2], "missed-2"), (live, "live")]
    reconnects = [e for e in result["entries"] if e["kind"] == "request" and e["last_event_id"]]
    assert reconnects
    assert {e["last_event_id"] for e in reconnects} == {before}


# --- c) the demo page


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def page_errors(driver: Driver) -> list[Entry]:
    return [e for e in driver.entries if e.get("kind") == "page-error"]


def test_demo_page_shows_live_task_progress_in_demo_mode(screenshots: Path) -> None:
    with (
        running_gateway(QUIET, args=["--demo"]) as gateway,
        run_driver("demo_page.mjs", ["--gateway", gateway.url]) as driver,
    ):
        # A task created after the page connected: its bar has a title (from
        # task.created) and a value (from task.progress-updated).
        shown = driver.until(
            lambda s: (
                s["state"] == "open"
                and s["connection_id"] not in (None, "–")
                and any(t["progress"] > 0 and t["title"] != t["id"] for t in s["tasks"])
            ),
            20,
            "an open stream and a task with progress",
        )
        path = screenshots / "demo-page.png"
        driver.request("screenshot", path=str(path))
        errors = page_errors(driver)
        driver.finish()

    assert errors == []
    assert shown["user"] == "demo"
    assert shown["subscriptions"] == "novel:1"
    assert shown["recovered"].startswith("no (none)")
    # The page streams over fetch with the JWT in a header: no stream token needed.
    assert shown["demo"]["transport"] == "fetch"
    assert shown["demo"]["streamTokens"] == 0
    moving = [t for t in shown["tasks"] if t["progress"] > 0]
    assert all(t["width"] == f"{t['progress']}%" for t in moving)
    assert all(t["id"].startswith("task-") for t in moving)
    progress_rows = [row for row in shown["feed"] if row["event"] == "task.progress-updated"]
    assert progress_rows
    assert all(row["scope"] == "user" and row["id"] for row in progress_rows)
    assert shown["last_event_id"] == next(row["id"] for row in shown["feed"] if row["id"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000


def test_demo_page_reopens_with_a_fresh_stream_token_when_the_browser_gives_up() -> None:
    """The page in the client's native EventSource mode. The stream token
    expires (2 s here), the network drops: Chromium's own reconnect gets 401
    and closes the EventSource; the client then fetches a fresh stream token
    and reopens after its last event id, missing nothing."""
    env = {**QUIET, "HERALD_RETRY_MS": "200", "HERALD_STREAM_TOKEN_TTL_SECONDS": "2"}
    native = ["--path", "/?transport=eventsource", "--proxy"]
    with (
        running_gateway(env, args=["--demo"]) as gateway,
        run_driver("demo_page.mjs", ["--gateway", gateway.url, *native]) as driver,
    ):
        first = driver.until(lambda s: s["state"] == "open" and s["demo"]["connectionId"], 20, "open")
        driver.until(lambda s: s["token_expiry"].startswith("expired"), 10, "the stream token to expire")
        driver.request("cut")
        cut = driver.until(lambda s: s["state"] == "reconnecting", 10, "the page to notice the cut")
        missed = gateway.publish("task.created", "user", "demo", {"task_id": "missed", "description": "x"})
        driver.request("restore")
        back = driver.until(
            lambda s: (
                s["state"] == "open"
                and s["demo"]["connectionId"] not in (None, first["demo"]["connectionId"])
                and any(row["id"] == missed for row in s["feed"])
            ),
            15,
            "the page to reopen and replay the missed event",
        )
        errors = page_errors(driver)
        result = driver.finish()

    assert errors == []
    assert back["demo"]["recovered"] is True
    assert back["demo"]["streamTokens"] == 2
    assert back["recovered"].startswith("yes")
    stream = [e for e in result["entries"] if e["kind"] in ("request", "response")]
    statuses = [e["status"] for e in stream if e["kind"] == "response"]
    assert statuses[0] == 200
    assert 401 in statuses
    assert statuses[-1] == 200
    first_url, last_url = stream[0]["url"], stream[-1]["url"]
    assert first_url.split("&")[0] != last_url.split("&")[0], "a new stream token"
    assert f"last_event_id={cut['demo']['lastEventId']}" in last_url
    assert "subscribe=novel%3A1" in last_url


def test_demo_page_resumes_after_auth_expired_with_a_pasted_token() -> None:
    """Not in demo mode: the page asks for a token. It expires, the gateway ends
    the stream with error.auth-expired; a fresh pasted token resumes after the
    last event id, and what was published meanwhile is replayed."""
    with (
        running_gateway({**QUIET, "HERALD_RETRY_MS": "200"}) as gateway,
        run_driver("demo_page.mjs", ["--gateway", gateway.url]) as driver,
    ):
        driver.until(lambda s: s["form_shown"] and s["state"] == "closed", 15, "the token form")
        short = gateway.token("browser-paula", resources=["novel:1"], ttl=5)
        driver.request("paste", token=short, subscribe="novel:1")
        driver.until(lambda s: s["state"] == "open" and s["demo"]["connectionId"], 10, "open")
        seen = gateway.publish(
            "task.created", "user", "browser-paula", {"task_id": "seen", "description": "a"}
        )
        driver.until(lambda s: any(t["id"] == "seen" for t in s["tasks"]), 10, "the first task")
        expired = driver.until(lambda s: s["state"] == "closed" and s["form_shown"], 15, "auth-expired")
        missed = gateway.publish(
            "task.created", "user", "browser-paula", {"task_id": "missed", "description": "b"}
        )
        driver.request("paste", token=gateway.token("browser-paula", resources=["novel:1"]))
        back = driver.until(
            lambda s: s["state"] == "open" and any(t["id"] == "missed" for t in s["tasks"]),
            10,
            "the replayed task",
        )
        errors = page_errors(driver)
        driver.finish()

    assert errors == []
    assert expired["feed"][0]["event"] == "error.auth-expired"
    assert expired["demo"]["lastEventId"] == seen
    assert back["demo"]["recovered"] is True
    assert any(row["id"] == missed for row in back["feed"])
