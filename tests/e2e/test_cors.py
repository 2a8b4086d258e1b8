"""CORS in real Chromium: a page served from another origin (another local port)
publishes and opens streams when the gateway's settings allow its origin, and
is refused by the browser when they do not (the default)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.browser import run_driver
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.metrics import parse
from tests.support.redis import free_port

pytestmark = pytest.mark.browser


def page_steps(gateway: GatewayProcess, page_port: int, user: str) -> dict[str, dict[str, Any]]:
    args = [
        "--gateway", gateway.url,
        "--page-port", str(page_port),
        "--publisher", gateway.publisher_token,
        "--user", gateway.token(user),
        "--user-id", user,
    ]  # fmt: skip
    with run_driver("cross_origin.mjs", args) as driver:
        result = driver.finish()
    return {step["name"]: step for step in result["steps"]}


def events_in(gateway: GatewayProcess) -> float:
    metrics = parse(httpx.get(f"{gateway.url}/metrics", timeout=10).text)
    return metrics.get(("herald_events_in_total", (("source", "http"),)), 0.0)


def test_a_page_of_an_allowed_origin_publishes_and_streams() -> None:
    page_port = free_port()
    origin = f"http://127.0.0.1:{page_port}"
    env = {"HERALD_CORS_ALLOW_ORIGINS": json.dumps([origin]), "HERALD_HEARTBEAT_SECONDS": "30"}
    with running_gateway(env) as gateway:
        steps = page_steps(gateway, page_port, "cors-alice")
        assert events_in(gateway) == 2  # the greeting, and the ping once the stream was open
    assert all(step["origin"] == origin for step in steps.values())
    assert steps["publish"]["ok"], steps["publish"]
    assert steps["publish"]["status"] == 202
    assert steps["publish"]["body"]["duplicate"] is False
    assert (steps["token"]["ok"], steps["token"]["status"]) == (True, 200)
    eventsource = steps["eventsource"]
    assert eventsource["ok"], eventsource
    assert eventsource["events"] == ["connection.established", "published:202", "page.pinged"]
    assert eventsource["last_event_id"]
    assert (steps["fetchstream"]["ok"], steps["fetchstream"]["status"]) == (True, 200)
    # A refusal is readable too: the page learns why, not just "network error".
    refusal = steps["refusal"]
    assert (refusal["ok"], refusal["status"], refusal["body"]["code"]) == (True, 401, "AUTH_INVALID")


def test_by_default_a_page_of_another_origin_is_refused() -> None:
    page_port = free_port()
    with running_gateway({"HERALD_HEARTBEAT_SECONDS": "30"}) as gateway:
        steps = page_steps(gateway, page_port, "cors-bob")
        # The preflight was refused, so the publish was never sent.
        assert events_in(gateway) == 0
        options = httpx.options(
            f"{gateway.url}/api/v1/events",
            headers={
                "origin": f"http://127.0.0.1:{page_port}",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type",
            },
        )
        assert "access-control-allow-origin" not in options.headers
    for name in ("publish", "token", "fetchstream", "refusal"):
        assert steps[name]["ok"] is False, steps[name]
        assert "Failed to fetch" in steps[name]["error"]
    assert steps["eventsource"]["ok"] is False
    assert steps["eventsource"]["events"] == []


def test_an_origin_not_on_the_list_is_refused() -> None:
    page_port = free_port()
    env = {"HERALD_CORS_ALLOW_ORIGINS": '["https://app.example.com"]', "HERALD_HEARTBEAT_SECONDS": "30"}
    with running_gateway(env) as gateway:
        steps = page_steps(gateway, page_port, "cors-carol")
        assert events_in(gateway) == 0
    assert [name for name, step in steps.items() if step["ok"]] == []
