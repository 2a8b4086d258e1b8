"""Deep replay: what a stale cursor can still get from a source that keeps its records (Kafka).

When the log cannot replay a well-formed cursor *c* exactly because *c* is
older than its floor *f* (the window passed it, or the log restarted), a
:class:`DeepReplaySource` may still hold the records behind the events of
``(c, f]``. The manager asks it once per such stream (never per event) and
writes, after ``connection.established``:

1. the recovered events this stream may see, in the source's order, each
   with an empty ``id`` (they have no cursor: the client's Last-Event-ID
   does not move), only the newest per coalesce key;
2. an ``id`` block with *f*;
3. the log's replay from *f*, which is exact, then live (the D4 seam).

The upper seam is exact: the source skips records whose event is in the
log's replay from *f* (by ``source`` coordinates), and reads only what the
consumer group has committed (what is in the log or superseded). The lower
seam is approximate (records are found by time, not cursor), and events of
other sources in ``(c, f]`` are gone: the stream stays ``recovered: false``
and says what it got (``deep_replay`` in ``connection.established``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from herald.bus.base import EventBus, Replay
from herald.errors import HeraldError
from herald.events.message import SSEMessage, encode_data
from herald.manager.routing import visible_to
from herald.wire.cursor import Cursor
from herald.wire.encoder import event_frame

if TYPE_CHECKING:
    from herald.manager.connection import Connection

log = structlog.get_logger("herald.manager.deep_replay")

#: Largest recovered event written (the source's mapping checks its own limit first).
_MAX_EVENT_BYTES = 1024 * 1024


class DeepReplaySource(Protocol):
    #: What ``deep_replay.source`` names (``kafka``).
    name: str

    async def recover(
        self, since_ms: int, keep: Callable[[SSEMessage], bool], in_log: Collection[str]
    ) -> tuple[Sequence[SSEMessage], bool] | None:
        """Events from records at or after ``since_ms`` (Unix milliseconds) that ``keep``
        accepts and whose ``source`` is not in ``in_log``, oldest first, within the
        source's own bounds (time, count), and whether it read the whole span. ``None``:
        not tried (busy, or the cursor is too old to be worth it)."""
        ...


def newest_per_coalesce_key(messages: Sequence[SSEMessage]) -> list[SSEMessage]:
    """``messages`` with only the newest of each ``(scope, key, coalesce)``, where it stood.

    Superseded values of a coalesce key matter to no one (the throttle never let
    most of them into the log); the newest keeps its place among the others.
    """
    newest: dict[tuple[str, str | None, str], int] = {}
    for index, message in enumerate(messages):
        if message.coalesce is not None:
            newest[(message.scope, message.key, message.coalesce)] = index
    return [
        message
        for index, message in enumerate(messages)
        if message.coalesce is None or newest[(message.scope, message.key, message.coalesce)] == index
    ]


def report(source: str, sent: int, complete: bool, since_ms: int) -> dict[str, Any]:
    """``connection.established``'s ``deep_replay`` (:class:`herald.events.system.DeepReplay`)."""
    since = datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return {"source": source, "events": sent, "complete": complete, "since": since}


@dataclass(frozen=True, slots=True)
class DeepOutcome:
    """What a stream gets from a deep replay: frames, then the log's replay from ``floor``."""

    floor: Cursor
    #: The log's exact replay after ``floor``.
    log: Replay
    #: The recovered events' frames, each with an empty ``id``.
    frames: list[bytes]
    #: ``connection.established``'s ``deep_replay``.
    report: dict[str, Any]


async def recover_deep(
    bus: EventBus, source: DeepReplaySource, conn: Connection, after: Cursor, floor: Cursor | None
) -> DeepOutcome | None:
    """Ask ``source`` for what ``conn`` missed between ``after`` and the log's ``floor``;
    ``None`` when there is nothing to try (a cursor newer than the floor is not stale but
    unknown), the log moved meanwhile, or the source failed."""
    if floor is None or not after < floor:
        return None
    try:
        from_floor = await bus.replay(floor)
        if not from_floor.exact:
            return None  # trimmed past the floor meanwhile: nothing exact to join
        in_log = {r.message.source for r in from_floor.records if r.message.source is not None}
        recovered = await source.recover(after.ms, lambda message: visible_to(conn, message), in_log)
    except HeraldError as exc:
        log.warning("deep_replay_failed", connection_id=conn.id, code=exc.code)
        return None
    except Exception:  # a source's bug must not cost the stream its plain replay
        log.exception("deep_replay_failed", connection_id=conn.id)
        return None
    if recovered is None:
        return None
    messages, complete = recovered
    frames = []
    for message in newest_per_coalesce_key(messages):
        try:
            frames.append(event_frame("", message.event, encode_data(message, _MAX_EVENT_BYTES)))
        except HeraldError:
            continue
    log.info(
        "deep_replay",
        connection_id=conn.id,
        source=source.name,
        events=len(frames),
        complete=complete,
        after=str(after),
        floor=str(floor),
    )
    return DeepOutcome(floor, from_floor, frames, report(source.name, len(frames), complete, after.ms))
