"""What operators read: ``/metrics`` (present, moving, bounded labels), the Grafana
dashboard over it, liveness and readiness, and the lifecycle logs."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import Api, api_client, unique, until_marker, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess
from tests.support.metrics import exported_names, herald_names, parse, scrape
from tests.support.redis import running_redis
from tests.support.sse import StreamRefused, open_stream

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "herald.json"
#: Label names Herald's metrics may carry: each takes values from a small fixed set.
BOUNDED_LABELS = {"reason", "code", "source", "outcome", "priority", "backend", "le"}
FAMILIES = {
    "herald_connections",
    "herald_connections_opened",
    "herald_connections_closed",
    "herald_connections_refused",
    "herald_connections_backlogged",
    "herald_users",
    "herald_events_in",
    "herald_events_dispatched",
    "herald_events_out",
    "herald_events_dropped",
    "herald_events_coalesced",
    "herald_slow_consumer_closes",
    "herald_replays",
    "herald_replay_events",
    "herald_retained_events",
    "herald_publish_to_write_seconds",
    "herald_source_messages",
    "herald_source_lag",
    "herald_subscription_changes",
    "herald_backend_up",
    "herald_accepting",
    "herald_draining",
    "herald_bus_channels_followed",
    "herald_canary_latency_seconds",
    "herald_canary_staleness_seconds",
    "herald_canary_sent",
    "herald_canary_observed",
    "herald_canary_send_failures",
}


async def test_metrics_move_with_traffic_and_never_name_a_user_or_connection(
    gateway: GatewayProcess, api: Api
) -> None:
    before = await scrape(api.client)
    user = unique("metric-user")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        connection_id = (await stream.next()).json()["connection_id"]
        cursor = await api.publish("task.created", "user", user, {})
        assert (await stream.next()).id == cursor
        during = await scrape(api.client)
        with_replay = open_stream(gateway.url, token=gateway.token(user), last_event_id=cursor)
        async with with_replay as again:
            assert (await again.next()).json()["recovered"] is True
    try:
        async with open_stream(gateway.url, token="bad"):
            pass
    except StreamRefused:
        pass
    await api.wait_connections(0)
    response = await api.client.get("/metrics")
    text = response.text
    after = parse(text)

    def delta(name: str, *labels: tuple[str, str]) -> float:
        key = (name, tuple(sorted(labels)))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert {f.name for f in text_string_to_metric_families(text)} >= FAMILIES
    assert during[("herald_connections", ())] >= 1
    assert delta("herald_connections_opened_total") == 2
    assert delta("herald_connections_closed_total", ("reason", "client_gone")) == 2
    assert delta("herald_connections_refused_total", ("code", "AUTH_INVALID")) == 1
    assert delta("herald_events_in_total", ("source", "http")) >= 1
    assert delta("herald_events_out_total") >= 1
    assert delta("herald_replays_total", ("outcome", "hit")) == 1
    assert delta("herald_replay_events_count") == 1
    assert delta("herald_publish_to_write_seconds_count") >= 1
    assert after[("herald_backend_up", (("backend", "bus:memory"),))] == 1
    # Bounded cardinality: fixed label names, and no user or connection id anywhere.
    labels = {name for f in text_string_to_metric_families(text) for s in f.samples for name in s.labels}
    assert labels <= BOUNDED_LABELS
    assert user not in text
    assert connection_id not in text


async def test_the_dashboard_is_json_over_metrics_the_gateway_exports(api: Api) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "Herald"
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(expressions) >= 15
    exported = exported_names((await api.client.get("/metrics")).text)
    used = {name for expr in expressions for name in herald_names(expr)}
    assert used, "the dashboard queries Herald's metrics"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # Every family Herald exports has a panel.
    assert {name.removesuffix("_bucket").removesuffix("_total") for name in used} >= FAMILIES
    # Variables the panels use are defined; the tracing links search Herald's two spans.
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "tracing_url"} <= variables
    links = [link["url"] for p in dashboard["panels"] for link in p.get("links", [])]
    for span in ("herald.ingest", "herald.fanout"):
        assert any(url.startswith("${tracing_url}") and f"operation={span}" in url for url in links), span
    repeated = [p for p in dashboard["panels"] if p.get("repeat") == "instance"]
    assert any("herald_bus_channels_followed" in t["expr"] for p in repeated for t in p["targets"])


async def test_liveness_and_readiness(gateway: GatewayProcess, api: Api) -> None:
    live = await api.client.get("/api/v1/events/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = await api.client.get("/api/v1/events/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "accepting": True,
        "draining": False,
        "backends": {"bus:memory": True},
    }
    # The older combined report still answers.
    assert (await api.client.get("/api/v1/events/health")).json()["status"] == "ok"


async def test_readiness_follows_each_redis_backend_while_liveness_stays() -> None:
    with running_redis() as redis, running_cluster(1, cluster_env(redis)) as (node,):
        async with api_client(node) as api:
            ready = await api.client.get("/api/v1/events/health/ready")
            assert ready.status_code == 200
            assert ready.json()["backends"] == {"bus:redis": True, "node_control": True, "revocations": True}
            redis.stop()

            async def not_ready() -> bool:
                answer = await api.client.get("/api/v1/events/health/ready")
                return answer.status_code == 503 and not any(answer.json()["backends"].values())

            await wait_until(not_ready, timeout=15, interval=0.1, what="readiness to turn 503")
            assert (await api.client.get("/api/v1/events/health/live")).status_code == 200
            metrics = await scrape(api.client)
            assert metrics[("herald_backend_up", (("backend", "bus:redis"),))] == 0
            redis.start()

            async def ready_again() -> bool:
                return (await api.client.get("/api/v1/events/health/ready")).status_code == 200

            await wait_until(ready_again, timeout=15, interval=0.1, what="readiness back")


async def test_the_lifecycle_logs_carry_the_seed_fields(gateway: GatewayProcess, api: Api) -> None:
    user = unique("logged")
    async with open_stream(
        gateway.url, token=gateway.token(user), headers={"user-agent": "herald-test/1"}
    ) as stream:
        connection_id = (await stream.next()).json()["connection_id"]
        marker = await api.marker()
        await until_marker(stream, marker)
    await api.wait_connections(0)

    def entries(event: str) -> list[dict[str, object]]:
        return [
            e for e in gateway.logs() if e.get("event") == event and e.get("connection_id") == connection_id
        ]

    await wait_until(lambda: bool(entries("sse_connection_closed")), what="the close logged")
    (opened,) = entries("sse_connection_established")
    assert opened["user_id"] == user
    assert opened["ip"] == "127.0.0.1"
    assert opened["user_agent"] == "herald-test/1"
    assert "last_event_id" in opened
    (closed,) = entries("sse_connection_closed")
    assert closed["reason"] == "client_gone"
    assert isinstance(closed["duration_s"], float)
    assert closed["events_sent"] == 1
