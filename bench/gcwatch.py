"""Run a server with its garbage collections recorded: ``python -m bench.gcwatch herald serve ...``
or ``python -m bench.gcwatch -m bench.baselines.raw_asyncio --port 0``.

A ``gc.callbacks`` hook notes each collection's generation, start and
duration (CLOCK_MONOTONIC, comparable with the load generator's stage
times); at exit they are written as JSON to ``$BENCH_GC_LOG``. The server's
own code is not touched. A full collection that walks every connection's
objects stops the event loop, and shows up as every client's latency at once
(see LESSONS.md, "Garbage-collection pauses").
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import signal
import sys
import time
from typing import Any

_events: list[tuple[int, int, int, int]] = []  # (start ns, generation, duration ns, collected)
_started = [0]
#: Young collections are many and short: counted, and listed only when they take over 1 ms
#: (so that the list itself does not grow the RSS being measured).
_young = {"count": 0, "total_ns": 0, "max_ns": 0}
_LIST_YOUNG_OVER_NS = 1_000_000


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.monotonic_ns()
        return
    took = time.monotonic_ns() - _started[0]
    generation = int(info["generation"])
    if generation == 0:
        _young["count"] += 1
        _young["total_ns"] += took
        if took > _young["max_ns"]:
            _young["max_ns"] = took
        if took < _LIST_YOUNG_OVER_NS:
            return
    _events.append((_started[0], generation, took, int(info["collected"])))


def _dump() -> None:
    path = os.environ.get("BENCH_GC_LOG")
    if not path:
        return
    with open(path, "w") as f:
        json.dump({"pid": os.getpid(), "collections": _events, "young": _young}, f)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    gc.callbacks.append(_callback)
    atexit.register(_dump)
    # uvicorn re-raises the SIGTERM it caught once it has shut down: end through
    # SystemExit then, so that the record is written.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args[0] == "herald":
        from herald.cli import main as herald_main

        sys.argv = args
        herald_main()
    else:
        raise SystemExit(f"don't know how to run {args[0]!r}")


if __name__ == "__main__":
    main()
