"""@herald/client and @herald/react in real Chromium against a real ``herald serve``.

The page is the React application in tests/e2e/browser/app/ (bundled by the
driver with esbuild), served from the same origin as the gateway by the
driver's app server, which can also cut the network or answer stream
requests 503 with ``fallback: "polling"``. Each test waits for what the page
shows or records, with deadlines; times measured in the browser are printed
(``-s``) as figures, not asserted beyond what the issue requires.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.browser import ROOT, Driver, run_driver
from tests.support.gateway import GatewayProcess, running_gateway, start_gateway

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
#: No heartbeat during a test: the client's cursor is exactly the last event's id.
QUIET = {"HERALD_HEARTBEAT_SECONDS": "60", "HERALD_RETRY_MS": "200"}
Snapshot = dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def page(gateway: GatewayProcess, user: str, *extra: str, timeout: float = 40) -> Any:
    jwt = gateway.token(user, resources=["novel:1"])
    args = ["--gateway", gateway.url, "--jwt", jwt, "--subscribe", "novel:1", *extra]
    return run_driver("client_page.mjs", args, timeout=timeout)


def task_ids(snapshot: Snapshot) -> list[str]:
    return [e["data"]["task_id"] for e in snapshot["app"]["events"] if e["name"] == "task.created"]


def established(snapshot: Snapshot) -> list[dict[str, Any]]:
    return [e for e in snapshot["app"]["events"] if e["name"] == "connection.established"]


def connections(count: int) -> Callable[[Snapshot], bool]:
    """The stream is open and the page has seen ``count`` connection.established events."""
    return lambda s: s["status"] == "open" and len(established(s)) >= count


def showing(*tasks: str) -> Callable[[Snapshot], bool]:
    return lambda s: all(t in s["tasks"] for t in tasks)


def created(gateway: GatewayProcess, user: str, task: str) -> str:
    return gateway.publish("task.created", "user", user, {"task_id": task, "task_type": "draft"})


def stream_requests(driver: Driver, tab: int = 0) -> list[dict[str, Any]]:
    return sorted(
        (e for e in driver.entries if e.get("kind") == "request" and e.get("tab") == tab),
        key=lambda e: e["number"],
    )


def errors(driver: Driver) -> list[dict[str, Any]]:
    return [e for e in driver.entries if e.get("kind") in ("page-error", "command-error")]


def test_react_page_updates_live_and_events_invalidate_queries() -> None:
    with running_gateway(QUIET) as gateway, page(gateway, "react-ann") as driver:
        driver.until(connections(1), 20, "an open stream")
        first = created(gateway, "react-ann", "t1")
        created(gateway, "react-bob", "not-ann")
        driver.until(showing("t1"), 10, "the task in the page")
        before = driver.snapshot()
        driver.request("set-tasks", version=2)
        gateway.publish("task.updated", "user", "react-ann", {"entity_type": "task", "action": "updated"})
        after = driver.until(lambda s: s["task_list"] == "version 2", 10, "the task list re-fetched")
        path = SCREENSHOTS / "client-react-page.png"
        driver.request("screenshot", path=str(path))
        problems = errors(driver)
        driver.finish()

    assert problems == []
    assert after["tasks"] == ["t1"], "one handler, even under StrictMode's double mount"
    assert after["indicator"] == {"status": "open", "text": "Live"}
    assert after["role"] == "leader"
    assert after["last_event_id"] != first  # the task.updated event came after it
    assert after["app"]["listFetches"] == before["app"]["listFetches"] + 1
    assert after["app"]["resyncs"] == []
    requests = stream_requests(driver)
    assert len(requests) == 1
    assert requests[0]["authorization"] is True
    assert "token=" not in requests[0]["url"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_react_page_takes_its_query_data_from_retained_state_without_a_fetch() -> None:
    """D33: TanStack queries seeded by the retained states that come with the stream's
    opening (useHeraldQuerySeed); the page never asks the application's API, and live
    events move the same queries on."""
    user = "react-retained"

    def progress(task: str, value: int) -> str:
        data = {"task_id": task, "progress": value, "stage": "draft"}
        return gateway.publish(
            "task.progress-updated", "user", user, data, coalesce=f"task:{task}", retain=True
        )

    env = {**QUIET, "HERALD_COALESCE_INTERVAL_SECONDS": "0"}
    with running_gateway(env) as gateway:
        for task, value in (("p1", 10), ("p1", 40), ("p2", 75)):
            progress(task, value)
        with page(gateway, user, "--progress-tasks", "p1,p2") as driver:
            seeded = driver.until(lambda s: s["progress"] == {"p1": "40", "p2": "75"}, 20, "seeded progress")
            live = progress("p1", 90)
            after = driver.until(lambda s: s["progress"].get("p1") == "90", 10, "live progress")
            problems = errors(driver)
            driver.finish()

    assert problems == []
    assert seeded["app"]["progressFetches"] == 0
    assert after["app"]["progressFetches"] == 0, "no fetch-then-subscribe"
    kept = [e for e in after["app"]["events"] if e.get("retained")]
    assert [(e["data"]["task_id"], e["data"]["progress"], e["id"]) for e in kept] == [
        ("p1", 40, None),
        ("p2", 75, None),
    ]
    assert after["last_event_id"] == live


def test_killed_gateway_restarted_on_the_same_port_the_page_reconnects_and_resyncs() -> None:
    port = free_port()
    gateway = start_gateway(QUIET, port=port)
    restarted: GatewayProcess | None = None
    try:
        with page(gateway, "react-kim") as driver:
            driver.until(connections(1), 20, "an open stream")
            before = created(gateway, "react-kim", "before")
            driver.until(showing("before"), 10, "the task before the kill")
            fetches = driver.snapshot()["app"]["listFetches"]

            gateway.stop(signal.SIGKILL)
            driver.until(lambda s: s["status"] in ("reconnecting", "polling"), 15, "the page to notice")
            restarted = start_gateway(QUIET, port=port)
            listening_at = time.time() * 1000
            back = driver.until(connections(2), 15, "the reconnect")
            after = created(restarted, "react-kim", "after")
            shown = driver.until(showing("before", "after"), 10, "the task after the restart")
            problems = errors(driver)
            driver.finish()
    finally:
        gateway.stop()
        if restarted is not None:
            restarted.stop()

    assert problems == []
    reconnect_ms = established(back)[-1]["at"] - listening_at
    print(f"\nreconnect: open again {reconnect_ms:.0f} ms after the new gateway listened")
    welcome = established(back)[-1]["data"]
    # The new process's log cannot know the old cursor: told, not hidden.
    assert welcome["recovered"] is False
    assert welcome["replay_miss"] == "stale"
    assert [r["replayMiss"] for r in shown["app"]["resyncs"]] == ["stale"]
    assert shown["app"]["listFetches"] > fetches, "the resync re-fetched the Herald-driven query"
    assert shown["tasks"] == ["before", "after"]
    requests = stream_requests(driver)
    assert requests[0]["last_event_id"] is None
    assert requests[-1]["last_event_id"] == before
    assert all(r["authorization"] for r in requests)
    ids = [e["id"] for e in shown["app"]["events"] if e["name"] == "task.created"]
    assert ids == [before, after]


def test_a_cut_connection_resumes_exactly_within_one_process() -> None:
    with running_gateway(QUIET) as gateway, page(gateway, "react-lee") as driver:
        driver.until(connections(1), 20, "an open stream")
        before = created(gateway, "react-lee", "before")
        driver.until(showing("before"), 10, "the task before the cut")
        assert driver.request("cut")["dropped"] >= 1
        driver.until(lambda s: s["status"] == "reconnecting", 10, "the page to notice the cut")
        missed = [
            created(gateway, "react-lee", "missed-1"),
            created(gateway, "react-mia", "not-lee"),
            created(gateway, "react-lee", "missed-2"),
        ]
        driver.request("restore")
        restored_at = time.time() * 1000
        back = driver.until(connections(2), 15, "the reconnect")
        live = created(gateway, "react-lee", "live")
        shown = driver.until(showing("live"), 10, "the live task")
        problems = errors(driver)
        driver.finish()

    assert problems == []
    welcome = established(back)[-1]
    print(f"\nresume: open again {welcome['at'] - restored_at:.0f} ms after the network came back")
    assert welcome["data"]["recovered"] is True
    assert welcome["id"] == before
    assert shown["app"]["resyncs"] == []
    ids = [(e["id"], e["data"]["task_id"]) for e in shown["app"]["events"] if e["name"] == "task.created"]
    assert ids == [(before, "before"), (missed[0], "missed-1"), (missed[2], "missed-2"), (live, "live")]
    assert shown["tasks"] == ["before", "missed-1", "missed-2", "live"]
    assert {r["last_event_id"] for r in stream_requests(driver)[1:]} == {before}


def test_two_tabs_share_one_stream_and_the_second_takes_over_when_the_first_closes() -> None:
    with running_gateway(QUIET) as gateway, page(gateway, "react-max") as driver:
        driver.until(connections(1), 20, "the first tab's stream")
        second = driver.request("open-tab")["tab"]
        first_event = created(gateway, "react-max", "shared")
        driver.until(showing("shared"), 10, "the event in the first tab")
        in_second = driver.until(showing("shared"), 10, "the event forwarded to the second tab", tab=second)
        assert health(gateway)["connections"] == 1, "one stream for two tabs"
        assert in_second["role"] == "follower"
        assert in_second["status"] == "open"

        closed_at = driver.request("close-tab", tab=0)["closed_at"]
        driver.until(
            lambda s: s["role"] == "leader" and s["status"] == "open", 10, "the takeover", tab=second
        )
        after = created(gateway, "react-max", "after-takeover")
        shown = driver.until(
            showing("shared", "after-takeover"), 10, "the event after the takeover", tab=second
        )
        problems = errors(driver)
        driver.finish()

    assert problems == []
    requests = stream_requests(driver, second)
    assert len(requests) == 1, "the second tab opened a stream only when it took over"
    assert requests[0]["last_event_id"] == first_event
    welcome = established(shown)[-1]
    assert welcome["data"]["recovered"] is True
    takeover_ms = welcome["at"] - closed_at
    print(f"\ntakeover: the second tab's stream was open {takeover_ms} ms after the first tab closed")
    assert takeover_ms < 1000
    assert shown["tasks"] == ["shared", "after-takeover"]
    assert [e["id"] for e in shown["app"]["events"] if e["name"] == "task.created"][-1] == after


@contextlib.contextmanager
def held_stream(gateway: GatewayProcess, user: str) -> Iterator[None]:
    """One stream, opened from here and held until the block ends (the node's only slot)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        request = (
            f"GET /api/v1/events/stream HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"authorization: Bearer {gateway.token(user)}\r\naccept: text/event-stream\r\n\r\n"
        )
        sock.sendall(request.encode())
        received = b""
        while b"connection.established" not in received:
            chunk = sock.recv(4096)
            assert chunk, f"the held stream was refused: {received!r}"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received
        yield


def test_the_polling_fallback_engages_when_the_gateway_refuses_streams_and_streaming_returns() -> None:
    """A node at its max_clients answers 503 SERVER_OVERLOAD with fallback: "polling"
    and a Retry-After: the page polls at once (no N failures first), probes after
    Retry-After, and streams again once the node has room."""
    with running_gateway({**QUIET, "HERALD_MAX_CLIENTS": "1"}) as gateway, contextlib.ExitStack() as slot:
        slot.enter_context(held_stream(gateway, "someone-else"))
        jwt = gateway.token("react-ned")
        args = ["--gateway", gateway.url, "--jwt", jwt, "--poll-ms", "300", "--probe-ms", "1000"]
        with run_driver("client_page.mjs", args, timeout=45) as driver:
            polling = driver.until(
                lambda s: s["status"] == "polling" and s["app"]["polls"] >= 3, 15, "polling"
            )
            driver.request("set-tasks", version=7)
            driver.until(lambda s: s["task_list"] == "version 7", 10, "a poll to re-fetch the list")
            slot.close()  # the node has room again
            back = driver.until(connections(1), 25, "streaming once Retry-After has passed")
            polls = back["app"]["polls"]
            created(gateway, "react-ned", "streamed")
            later = driver.until(showing("streamed"), 10, "an event over the stream")
            problems = errors(driver)
            driver.finish()

    assert problems == []
    assert polling["indicator"]["status"] == "polling"
    responses = [e for e in driver.entries if e.get("kind") == "response"]
    assert responses[0]["status"] == 503
    assert responses[-1]["status"] == 200
    # fallback: "polling" in the refusal: polling began at the first one, not after N failures.
    first_polling = next(s for s in polling["app"]["states"] if s["status"] == "polling")
    assert first_polling["attempt"] == 1
    # And the next try waited for Retry-After (5-15 s from this gateway).
    requests = stream_requests(driver)
    assert requests[1]["t"] - responses[0]["t"] >= 4500
    assert later["app"]["polls"] == polls, "polling stopped once the stream was back"
    assert later["tasks"] == ["streamed"]


def test_the_client_s_native_eventsource_mode_against_the_same_server() -> None:
    with running_gateway(QUIET) as gateway, page(gateway, "react-oz", "--transport", "eventsource") as driver:
        driver.until(connections(1), 20, "an open stream")
        before = created(gateway, "react-oz", "before")
        driver.until(showing("before"), 10, "the task before the cut")
        driver.request("cut")
        driver.until(lambda s: s["status"] == "reconnecting", 10, "the page to notice")
        missed = created(gateway, "react-oz", "missed")
        driver.request("restore")
        back = driver.until(connections(2), 15, "the browser's own reconnect")
        shown = driver.until(showing("before", "missed"), 10, "the replayed task")
        problems = errors(driver)
        driver.finish()

    assert problems == []
    assert established(back)[-1]["data"]["recovered"] is True
    requests = stream_requests(driver)
    assert all("token=sha256%3A" in r["url"] and not r["authorization"] for r in requests)
    # The browser itself reconnected with the same token and Last-Event-ID.
    assert requests[-1]["last_event_id"] == before
    assert len({r["url"] for r in requests}) == 1
    ids = [e["id"] for e in shown["app"]["events"] if e["name"] == "task.created"]
    assert ids == [before, missed]


def health(gateway: GatewayProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{gateway.url}/api/v1/events/health", timeout=10).json()
    return body


def test_the_client_bundle_streams_inside_a_web_worker() -> None:
    """No DOM assumptions: the served bundle runs in a dedicated worker (Web Locks and
    BroadcastChannel exist there too, so it still shares one stream per browser)."""
    with running_gateway(QUIET) as gateway:
        jwt = gateway.token("worker-pat")
        with run_driver("worker_client.mjs", ["--gateway", gateway.url, "--jwt", jwt]) as driver:
            driver.wait_for(lambda e: e.get("kind") == "state" and e.get("status") == "open", 20, "open")
            cursor = created(gateway, "worker-pat", "in-a-worker")
            seen = driver.wait_for(
                lambda e: e.get("kind") == "event" and e.get("id") == cursor, 10, "the event"
            )
            problems = errors(driver)
            driver.finish()

    assert problems == []
    assert seen["data"]["task_id"] == "in-a-worker"
    states = [e for e in driver.entries if e.get("kind") == "state"]
    assert {e["dom"] for e in states} == {"undefined"}
    assert states[-1]["role"] == "leader"


def test_auth_expiring_moves_the_page_to_a_fresh_token_with_nothing_lost() -> None:
    """The gateway warns 30 s ahead of expiry, about 10 s after the page starts; the client
    asks the application for a new token and resumes from its cursor on a new stream before
    the old one is cut."""
    with running_gateway({**QUIET, "HERALD_AUTH_EXPIRING_SECONDS": "30"}) as gateway:
        user = "expiring-eve"
        short = gateway.token(user, resources=["novel:1"], ttl=40)
        fresh = gateway.token(user, resources=["novel:1"], ttl=3600)
        args = ["--gateway", gateway.url, "--jwt", f"{short},{fresh}", "--subscribe", "novel:1"]
        with run_driver("client_page.mjs", args, timeout=60) as driver:
            driver.until(connections(1), 20, "an open stream")
            before = created(gateway, user, "before")
            driver.until(showing("before"), 10, "the first task")
            moved = driver.until(connections(2), 25, "a second stream on the fresh token")
            after = created(gateway, user, "after")
            final = driver.until(showing("before", "after"), 10, "the task published after the move")
            problems = errors(driver)
            requests = stream_requests(driver)
            driver.finish()

    assert problems == []
    names = [e["name"] for e in final["app"]["events"]]
    assert "auth.expiring" in names
    assert "error.auth-expired" not in names, "the stream moved before it was cut"
    assert final["app"]["tokens"] == [0, 1]
    assert established(moved)[1]["data"]["recovered"] is True
    assert requests[1]["last_event_id"] == before
    assert task_ids(final) == ["before", "after"]
    assert after != before
    assert final["app"]["errors"] == []


def test_a_revoked_token_closes_the_page_for_good_and_the_error_hook_hears_it() -> None:
    with running_gateway(QUIET) as gateway:
        user = "revoked-rita"
        jwt = gateway.token(user, resources=["novel:1"], now=time.time() - 30)
        args = ["--gateway", gateway.url, "--jwt", jwt, "--subscribe", "novel:1"]
        with run_driver("client_page.mjs", args, timeout=40) as driver:
            driver.until(connections(1), 20, "an open stream")
            response = httpx.post(
                f"{gateway.url}/api/v1/admin/revocations",
                json={"user": user},
                headers={"authorization": f"Bearer {gateway.token('ops', admin=True)}"},
                timeout=10,
            )
            assert response.status_code == 201, response.text
            closed = driver.until(lambda s: s["status"] == "closed", 10, "the page closed")
            started = time.monotonic()
            # The backoff's base is 200 ms: a client that retried would have by now.
            later = driver.until(lambda s: time.monotonic() > started + 1.5, 5, "a moment later")
            problems = errors(driver)
            requests = stream_requests(driver)
            driver.finish()

    assert problems == []
    assert [e["name"] for e in closed["app"]["events"]][-1] == "error.auth-revoked"
    assert [(e["code"], e["kind"]) for e in later["app"]["errors"]] == [("AUTH_REVOKED", "auth")]
    assert later["status"] == "closed"
    assert len(requests) == 1, "no retry with a revoked token"
