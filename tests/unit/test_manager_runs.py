"""A turn's records for the same receivers are handed over as one run (issue 16).

Each test opens a run, changes something the run's routing depends on before the
turn ends, and checks that every record reached exactly the streams, and in the
order, it would have reached had it been handed over when it was dispatched. The
first write of each stream proves the run was still open across the change.
"""

from __future__ import annotations

from herald.events.message import SSEMessage, build_message
from herald.manager.connection import CloseReason
from tests.unit.test_manager import connect, flushed, make_manager, publish


def notice(n: int) -> SSEMessage:
    return build_message(event="system.notification", scope="global", key=None, data={"n": n})


def on_doc(n: int) -> SSEMessage:
    return build_message(event="task.progress-updated", scope="doc", key="1", data={"n": n})


def numbers(events: list[tuple[str, str | None, dict[str, object]]]) -> list[object]:
    return [data.get("n") for name, _, data in events if name != "connection.established"]


async def test_a_turns_broadcasts_reach_each_stream_as_one_write_in_cursor_order() -> None:
    bus, manager = await make_manager()
    _, alice = await connect(manager, "alice")
    _, bob = await connect(manager, "bob")
    await flushed()
    alice.written.clear()
    bob.written.clear()
    cursors = [str(await publish(bus, notice(n))) for n in range(3)]
    await flushed()
    for sink in (alice, bob):
        assert len(sink.written) == 1
        assert [cursor for _, cursor, _ in sink.events()] == cursors
    assert manager.delivered() == 6


async def test_a_stream_opened_inside_a_run_gets_only_what_came_after_it() -> None:
    bus, manager = await make_manager()
    _, alice = await connect(manager, "alice")
    await flushed()
    alice.written.clear()
    await publish(bus, notice(1))
    _, carol = await connect(manager, "carol")
    await publish(bus, notice(2))
    await flushed()
    assert len(alice.written) == 1, "the turn's frames leave in one write"
    assert numbers(alice.events()) == [1, 2]
    assert numbers(carol.events()) == [2]


async def test_a_stream_held_and_released_inside_a_run_gets_each_record_once() -> None:
    """Released with nothing of its own to write first (no retained state), a stream that
    took a record into its held list while the run was open must not get it from the
    run as well."""
    bus, manager = await make_manager()
    conn, alice = await connect(manager, "alice")
    _, bob = await connect(manager, "bob")
    await flushed()
    alice.written.clear()
    bob.written.clear()
    await publish(bus, notice(1))
    conn.hold()
    await publish(bus, notice(2))
    conn.release()
    await publish(bus, notice(3))
    await flushed()
    assert numbers(alice.events()) == [1, 2, 3]
    assert numbers(bob.events()) == [1, 2, 3]


async def test_a_resource_added_inside_a_run_is_live_only_after_the_change() -> None:
    bus, manager = await make_manager()
    _, bob = await connect(manager, "bob", subscriptions=["doc:1"])
    alice_conn, alice = await connect(manager, "alice")
    await flushed()
    bob.written.clear()
    alice.written.clear()
    await publish(bus, on_doc(1))
    await manager.change_subscriptions(alice_conn, add=["doc:1"], remove=[])
    await publish(bus, on_doc(2))
    await flushed()
    assert numbers(bob.events()) == [1, 2]
    assert [name for name, _, _ in alice.events()] == [
        "connection.subscriptions-changed",
        "task.progress-updated",
    ]
    assert numbers(alice.events()) == [None, 2]


async def test_a_stream_paused_inside_a_run_gets_the_earlier_records_before_the_queued_ones() -> None:
    bus, manager = await make_manager()
    conn, alice = await connect(manager, "alice")
    _, bob = await connect(manager, "bob")
    await flushed()
    alice.written.clear()
    bob.written.clear()
    await publish(bus, notice(1))
    conn.pause_writing()
    await publish(bus, notice(2))
    await publish(bus, notice(3))
    assert len(manager.indirect) == 1
    conn.resume_writing()
    await publish(bus, notice(4))
    await flushed()
    assert numbers(alice.events()) == [1, 2, 3, 4]
    assert numbers(bob.events()) == [1, 2, 3, 4]
    assert not manager.indirect


async def test_a_stream_closed_inside_a_run_gets_what_was_routed_before_its_final_frame() -> None:
    bus, manager = await make_manager()
    conn, alice = await connect(manager, "alice")
    await flushed()
    alice.written.clear()
    await publish(bus, notice(1))
    manager.send_away(conn, CloseReason.SHUTDOWN)
    await publish(bus, notice(2))
    await flushed()
    assert [name for name, _, _ in alice.events()] == ["system.notification", "connection.closing"]
    assert numbers(alice.events())[0] == 1
    assert alice.closed
    assert conn not in manager.indirect


async def test_a_record_only_queued_behind_a_paused_stream_is_not_observed_as_written() -> None:
    bus, manager = await make_manager()
    conn, _ = await connect(manager, "alice")
    await flushed()
    written = manager.stats.write_latency.count
    conn.pause_writing()
    await publish(bus, notice(1))
    await flushed()
    assert manager.stats.write_latency.count == written
    conn.resume_writing()
    await publish(bus, notice(2))
    await flushed()
    assert manager.stats.write_latency.count == written + 1
