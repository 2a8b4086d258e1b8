"""Canaries (D32), the pure parts: what each source carries, how the mapping and the Redis
body parser let a canary through, that their scope is nobody else's, and the watcher's
latency and staleness on a real memory bus with a controlled clock."""

from __future__ import annotations

import orjson
import pytest

from herald.adapter import Adapter, PoisonRecord, default_mapping
from herald.auth.grants import check_resource_key
from herald.bus.memory import MemoryBus
from herald.errors import InvalidEvent, SubscriptionInvalid
from herald.events.canary import CANARY_CHANNEL, Canary, canary_message, is_canary
from herald.events.message import build_message, encode_data
from herald.gateway.canary import CanaryWatcher
from herald.sources.incoming import parse_event_json
from herald.sources.redis_streams import parse_entry

CANARY = Canary("kafka", "node-a", 7, 1_700_000_000.25)


def test_a_kafka_record_is_a_canary_before_any_rule_whatever_the_type_field() -> None:
    adapter = Adapter(default_mapping())
    message = adapter.map_raw(orjson.dumps(CANARY.record()), source="kafka:t:0:12")
    assert message is not None
    assert is_canary(message)
    assert (message.scope, message.key, message.source) == ("herald", "canary", "kafka:t:0:12")
    assert dict(message.data) == CANARY.data()
    # The outbox keeps the type beside the payload.
    row = adapter.map(Canary("outbox", "n", 1, 2.0).data(), source="outbox:t:3", event_type="herald.canary")
    assert row is not None
    assert is_canary(row)
    with pytest.raises(PoisonRecord):
        adapter.map({"herald_canary": {"node": "n"}}, source="kafka:t:0:13")


def test_a_redis_body_is_a_canary_only_where_a_source_reads_it() -> None:
    raw = orjson.dumps(CANARY.body())
    incoming = parse_event_json(raw, source="redis-pubsub:c", canaries=True)
    assert is_canary(incoming.message)
    assert incoming.event_id == "herald-canary:node-a:kafka:7"
    entry = parse_entry({b"json": raw}, source="redis-stream:s:1-0")
    assert is_canary(entry.message)
    with pytest.raises(InvalidEvent):  # the HTTP publish path's parse
        parse_event_json(raw, source="http")


def test_the_canary_scope_and_name_are_the_gateways_own() -> None:
    for event, scope in (("herald.canary", "herald"), ("task.created", "herald"), ("herald.canary", "user")):
        with pytest.raises(InvalidEvent):
            build_message(event=event, scope=scope, key="canary", data={})
    with pytest.raises(SubscriptionInvalid):
        check_resource_key(CANARY_CHANNEL)
    assert check_resource_key("novel:42") == "novel:42"


async def test_the_watcher_times_every_canary_on_the_bus_and_its_staleness_grows_without_them() -> None:
    now = {"wall": 1_700_000_000.0, "mono": 100.0}
    bus = MemoryBus()
    await bus.start()
    watcher = CanaryWatcher(bus, wall=lambda: now["wall"], monotonic=lambda: now["mono"])
    watcher.expect(["kafka", "outbox"])
    await watcher.start()
    assert CANARY_CHANNEL in bus.interest

    async def arrive(canary: Canary, source: str, after: float) -> None:
        now["wall"] = canary.sent_at + after
        message = canary_message(canary.data(), source=source)
        await bus.append(message, encode_data(message, 65536))

    await arrive(Canary("kafka", "a", 0, now["wall"]), "kafka:t:0:1", 0.03)
    await arrive(Canary("kafka", "b", 0, now["wall"] + 5), "kafka:t:1:1", -0.5)  # b's clock is ahead
    message = build_message(event="task.created", scope="user", key="u", data={})
    await bus.append(message, encode_data(message, 65536))  # not a canary: not counted
    # A canary through no known source (say, forged into some channel) is not counted:
    # the label takes only the sources' few names.
    await arrive(Canary("elsewhere", "x", 0, now["wall"]), "somewhere:else", 0.1)
    now["mono"] += 42
    readings = watcher.readings()
    assert set(readings) == {"kafka", "outbox"}
    kafka, outbox = readings["kafka"], readings["outbox"]
    assert kafka.observed == 2
    assert kafka.latency.count == 2
    assert kafka.latency.sum == pytest.approx(0.03)
    assert kafka.staleness == pytest.approx(42)
    assert outbox.observed == 0
    assert outbox.staleness == pytest.approx(42)  # since the watcher started
    await watcher.stop()
    assert CANARY_CHANNEL not in bus.interest
    await bus.stop()
