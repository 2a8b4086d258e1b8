"""``python -m bench.fanout``: the fan-out path alone, Herald's against the ceiling's (issue 16).

In one process, with no sockets: ``N`` live streams whose socket write is a C
function that drops its bytes, ``k`` broadcast records arriving in one loop turn,
then the turn's writes. Herald's side is the real :class:`ConnectionManager`
(``dispatch`` for each record, then its flush); the ceiling's is the raw-asyncio
baseline's own ``Hub.deliver`` and ``Hub.flush`` (``bench/baselines/raw_asyncio.py``)
on the same stand-in transports. What is left is what each spends in Python per
delivery, the part of the end-to-end CPU the server's code decides (the syscalls
are the same for both). Reported per delivery and as Herald ÷ ceiling, best of
``--rounds`` runs (the machine is shared).

    .venv/bin/python -m bench.fanout [--n 10000] [--k 1,4] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

from bench.baselines.raw_asyncio import Hub, Stream
from herald.bus.base import BusRecord
from herald.bus.memory import MemoryBus
from herald.events.message import build_message, encode_data
from herald.manager.manager import ConnectionManager
from herald.wire.cursor import Cursor
from herald.wire.encoder import event_frame


def _dropping_write() -> Callable[[bytes], None]:
    """A C-level callable that takes bytes and keeps nothing: the cost of a call into
    the transport without the syscall behind it."""
    dropped: collections.deque[bytes] = collections.deque(maxlen=0)
    return dropped.append


class NullSink:
    def __init__(self) -> None:
        self._write = _dropping_write()

    def write(self, data: bytes) -> None:
        self._write(data)

    def writer(self) -> Callable[[bytes], None]:
        return self._write

    def backlog(self) -> int:
        return 0

    def close(self) -> None:
        return None


class NullTransport:
    """What the ceiling's flush calls on a transport: ``write`` and ``is_closing``, both C."""

    __slots__ = ("is_closing", "write")

    def __init__(self) -> None:
        self.write = _dropping_write()
        self.is_closing = bool  # bool() is False: a C call, as uvloop's is_closing is


async def herald_turns(n: int, k: int, turns: int) -> float:
    """CPU seconds for ``turns`` loop turns of ``k`` broadcasts to ``n`` streams."""
    bus = MemoryBus()
    manager = ConnectionManager(bus, heartbeat_seconds=3600)
    await manager.start()
    try:
        for i in range(n):
            conn = manager.register(
                NullSink(), user_id=f"u{i}", session_id=None, subscriptions=frozenset(), expires_at=None
            )
            await manager.start_stream(conn, None)
        manager._flush()
        records = []
        for j in range(k * turns):
            msg = build_message(event="system.tick", scope="global", key=None, data={"t": j, "s": j})
            cursor = Cursor(10**12 + j, 0)
            frame = event_frame(str(cursor), msg.event, encode_data(msg, 65536))
            records.append(BusRecord(cursor, msg, frame))
        dispatch, flush = manager.dispatch, manager._flush
        started = time.process_time()
        for turn in range(turns):
            for record in records[turn * k : (turn + 1) * k]:
                dispatch(record)
            flush()
        return time.process_time() - started
    finally:
        await manager.stop()


async def ceiling_turns(n: int, k: int, turns: int) -> float:
    hub = Hub()
    for i in range(n):
        hub.add(Stream(NullTransport(), f"u{i}", []))  # type: ignore[arg-type]
    tick = b'id: %d-0\nevent: system.tick\ndata: {"t":%d,"s":%d}\n\n'
    frames = [tick % (j, j, j) for j in range(k * turns)]
    deliver, flush, everyone = hub.deliver, hub.flush, hub.everyone
    started = time.process_time()
    for turn in range(turns):
        for frame in frames[turn * k : (turn + 1) * k]:
            deliver(frame, everyone)
        flush()
        hub.scheduled = False
    return time.process_time() - started


async def measure(n: int, ks: list[int], rounds: int, turns: int) -> list[dict[str, Any]]:
    rows = []
    for k in ks:
        herald = min([await herald_turns(n, k, turns) for _ in range(rounds)])
        ceiling = min([await ceiling_turns(n, k, turns) for _ in range(rounds)])
        deliveries = n * k * turns
        rows.append(
            {
                "streams": n,
                "records_per_turn": k,
                "herald_ns_per_delivery": round(herald / deliveries * 1e9, 1),
                "ceiling_ns_per_delivery": round(ceiling / deliveries * 1e9, 1),
                "ratio": round(herald / ceiling, 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--k", default="1,4", help="broadcasts arriving in one loop turn")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.n, [int(k) for k in args.k.split(",")], args.rounds, args.turns))
    print("| streams | broadcasts per turn | Herald ns/delivery | ceiling ns/delivery | Herald ÷ ceiling |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['streams']:,} | {row['records_per_turn']} | {row['herald_ns_per_delivery']} | "
            f"{row['ceiling_ns_per_delivery']} | {row['ratio']}× |"
        )


if __name__ == "__main__":
    main()
