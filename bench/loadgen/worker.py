"""A load-generator worker process: holds its share of the connections on uvloop.

It obeys commands from the coordinator over a ``multiprocessing`` pipe,
read with ``loop.add_reader`` so the loop never blocks on the pipe. Each
command gets exactly one reply, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import threading
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

from bench.common import raise_nofile
from bench.loadgen.client import Audit, CentrifugoClient, SSEClient, Stats
from bench.loadgen.dialects import CentrifugoStreams, HeraldStreams, streams
from bench.loadgen.fast_publisher import publish_share

#: After a reconnect, how long nothing may arrive before the clients still missing events
#: are taken to get none.
QUIET_SECONDS = 3.0
#: How many times a reconnected stream the server closes is opened again.
FOLLOW_UPS = 5
#: (user id, token) or (user id, token, resource the stream follows).
Spec = tuple[str, ...]


class Worker:
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.stats = Stats()
        self.clients: list[SSEClient] = []
        self.specs: list[Spec] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.path = ""
        self.dialect: HeraldStreams | CentrifugoStreams = HeraldStreams()
        self.stop = asyncio.Event()
        self.busy: asyncio.Task[None] | None = None

    # --- the command channel

    def read_commands(self, loop: asyncio.AbstractEventLoop) -> None:
        """A thread's blocking reads: uvloop's ``add_reader`` would make the pipe
        non-blocking, and a large command would then arrive in pieces."""
        while True:
            try:
                cmd, args = self.pipe.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(self.stop.set)
                return
            loop.call_soon_threadsafe(self.dispatch, cmd, args)
            if cmd == "exit":
                return

    def dispatch(self, cmd: str, args: dict[str, Any]) -> None:
        handler = getattr(self, f"cmd_{cmd}")
        self.busy = asyncio.get_running_loop().create_task(self._run(handler, args))

    async def _run(self, handler: Any, args: dict[str, Any]) -> None:
        try:
            result = await handler(**args)
            self.pipe.send(("ok", result))
        except Exception as exc:  # the coordinator must hear about it, not hang
            self.pipe.send(("error", f"{type(exc).__name__}: {exc}"))

    # --- commands

    async def cmd_connect(
        self,
        host: str,
        port: int,
        path: str,
        specs: list[Spec],
        concurrency: int,
        time_limit: float,
        dialect: str = "herald",
    ) -> dict[str, Any]:
        """Open one stream per spec, at most ``concurrency`` opening at once."""
        self.host, self.port, self.path = host, port, path
        self.dialect = streams(dialect, path)
        self.specs = specs
        errors_before = dict(self.stats.errors)
        gate = asyncio.Semaphore(concurrency)
        start = time.monotonic()
        deadline = start + time_limit

        async def one(spec: Spec) -> SSEClient | None:
            async with gate:
                return await self._open(spec, None, -1, deadline, retries=0)

        opened = await asyncio.gather(*(one(s) for s in specs))
        self.clients = [c for c in opened if c is not None]
        _settle_gc()
        return {
            "ok": len(self.clients),
            "failed": len(specs) - len(self.clients),
            "elapsed": time.monotonic() - start,
            "errors": self._errors_since(errors_before),
        }

    async def _open(
        self,
        spec: Spec,
        resume: Any,
        target_seq: int,
        deadline: float,
        retries: int,
        audit: Audit | None = None,
        tracking: bool = False,
    ) -> SSEClient | None:
        loop = asyncio.get_running_loop()
        request = self.dialect.request(self.host, self.port, spec, resume)
        attempt = 0
        while True:
            client = self.dialect.client(self.stats, request, spec, target_seq, audit)
            if isinstance(client, CentrifugoClient):
                client.tracking = tracking
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda c=client: c, self.host, self.port),  # type: ignore[misc]
                    timeout=max(0.1, deadline - time.monotonic()),
                )
                ok = await asyncio.wait_for(client.done, timeout=max(0.1, deadline - time.monotonic()))
            except (OSError, TimeoutError) as exc:
                self.stats.error(type(exc).__name__)
                client.abort()
                ok = False
            if ok:
                return client
            client.abort()
            attempt += 1
            if attempt > retries or time.monotonic() >= deadline:
                return None
            # A storm's client backs off like a browser would, with jitter.
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))

    def _errors_since(self, before: dict[str, int]) -> dict[str, int]:
        """The errors counted since ``before`` (a copy of ``stats.errors``), by kind."""
        now = self.stats.errors
        return {k: n - before.get(k, 0) for k, n in now.items() if n > before.get(k, 0)}

    async def cmd_reset(self) -> None:
        self.stats.reset()

    async def cmd_stats(self, hist: bool = True) -> dict[str, Any]:
        snap = self.stats.snapshot(with_hist=hist)
        snap["held"] = sum(1 for c in self.clients if c.established and not c.wanted_close)
        return snap

    async def cmd_behind(self, seq: int) -> int:
        """How many open clients have not yet received event ``seq`` (or a later one)."""
        return sum(1 for c in self.clients if c.last_seq < seq and not c.lost)

    async def cmd_drop(self) -> int:
        """Every connection drops at once (RST), remembering its Last-Event-ID."""
        for client in self.clients:
            client.abort()
        return len(self.clients)

    async def cmd_track(self, on: bool = True) -> int:
        """Follow every push's stream position from now on (Centrifugo: each channel's
        offset, which a reconnect needs to recover; Herald's ``id:`` is always followed)."""
        for client in self.clients:
            if isinstance(client, CentrifugoClient):
                client.tracking = on
        return len(self.clients)

    async def cmd_expect_close(self) -> int:
        """The server is about to close every stream (a restart): not an unexpected close."""
        for client in self.clients:
            client.wanted_close = True
        return len(self.clients)

    async def cmd_reconnect(
        self,
        t0_ns: int,
        target_seq: int,
        time_limit: float,
        use_last_id: bool,
        port: int | None = None,
        audit: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Every dropped client reconnects at once, resuming where it stopped (Last-Event-ID;
        Centrifugo: each channel's epoch and offset); report when each was live and when it
        had ``target_seq``, and, with ``audit`` (first, hi), whether it got exactly the events
        it missed (those after the last it had, from ``first`` on, to ``hi``), each once, and
        what the server said about recovering.

        A stream the server closes after it opened (mid-replay, say) is opened again from
        where it got to, as a browser's EventSource would, up to ``FOLLOW_UPS`` times; its
        audit spans all its connections."""
        if port is not None:
            self.port = port
        deadline = time.monotonic() + time_limit
        old = self.clients
        errors_before = dict(self.stats.errors)
        audits = [None if audit is None else Audit(max(c.last_seq + 1, audit[0]), audit[1]) for c in old]

        def reopen(c: SSEClient, resume: Any, a: Audit | None) -> Any:
            tracking = isinstance(c, CentrifugoClient) and c.tracking
            return self._open(c.spec, resume, target_seq, deadline, 20, a, tracking)

        current: list[SSEClient | None] = list(
            await asyncio.gather(
                *(reopen(c, c.resume() if use_last_id else None, a) for c, a in zip(old, audits, strict=True))
            )
        )
        live = [c.established_ns - t0_ns for c in current if c is not None]
        reopened = 0
        for follow_up in range(FOLLOW_UPS + 1):
            self.clients = [c for c in current if c is not None]
            if target_seq >= 0:
                await self._await_target(deadline)
            lost = [(i, c) for i, c in enumerate(current) if c is not None and c.lost and not c.wanted_close]
            if not lost or follow_up == FOLLOW_UPS or time.monotonic() >= deadline:
                break
            again = await asyncio.gather(*(reopen(c, c.resume(), audits[i]) for i, c in lost))
            for (i, c), fresh in zip(lost, again, strict=True):
                if fresh is not None:
                    fresh.seq_ns = c.seq_ns
                    fresh.last_seq = c.last_seq
                    reopened += 1
                current[i] = fresh
        self.clients = [c for c in current if c is not None]
        _settle_gc()
        replayed = [c.seq_ns - t0_ns for c in self.clients if c.seq_ns]
        out: dict[str, Any] = {
            "reconnected": len(self.clients),
            "failed": len(old) - len(self.clients),
            "reopened_after_close": reopened,
            "live_max_ns": max(live, default=0),
            "live_p50_ns": sorted(live)[len(live) // 2] if live else 0,
            "replayed": len(replayed),
            "replayed_max_ns": max(replayed, default=0),
            "errors": self._errors_since(errors_before),
        }
        if audit is not None:
            done = [(c, a) for c, a in zip(current, audits, strict=True) if c is not None and a is not None]
            out["missed"] = sum(a.hi - a.lo + 1 for _, a in done)
            out["exact"] = sum(1 for _, a in done if a.exact)
            out["received_in_range"] = sum(a.count for _, a in done)
            out["received_before_range"] = sum(a.before for _, a in done)
            out["missing_clients"] = sum(1 for _, a in done if a.count < a.hi - a.lo + 1)
            out["told_recovered"] = sum(1 for c, _ in done if c.told_recovered is True)
            out["told_not_recovered"] = sum(1 for c, _ in done if c.told_recovered is False)
            out["told_nothing"] = sum(1 for c, _ in done if c.told_recovered is None)
            out["inexact_samples"] = [
                {
                    "user": before.user,
                    "had_up_to_seq": before.last_seq,
                    "resumed_from": repr(before.resume())[:200],
                    "expected": [a.lo, a.hi],
                    "received": a.count,
                    "older": a.before,
                    "sum_short_by": a.shortfall,
                    "told_recovered": c.told_recovered,
                    "closed_by_server": c.lost and not c.wanted_close,
                }
                for before, c, a in zip(old, current, audits, strict=True)
                if c is not None and a is not None and not a.exact
            ][:5]
        return out

    async def _await_target(self, deadline: float) -> None:
        """Wait (bounded) for the replay to reach every client, or until nothing has arrived
        for a while: a server that could not recover sends nothing."""
        quiet_since, seen = time.monotonic(), self.stats.delivered
        while time.monotonic() < deadline and any(not c.seq_ns for c in self.clients):
            await asyncio.sleep(0.01)
            if self.stats.delivered != seen:
                quiet_since, seen = time.monotonic(), self.stats.delivered
            elif time.monotonic() - quiet_since > QUIET_SECONDS:
                break

    async def cmd_publish(self, **share: Any) -> dict[str, Any]:
        """Publish this process's share of a schedule (:func:`publish_share`)."""
        return await publish_share(**share)

    async def cmd_close(self) -> int:
        n = len(self.clients)
        for client in self.clients:
            client.close()
        self.clients = []
        await asyncio.sleep(0.1)
        return n

    async def cmd_exit(self) -> None:
        await self.cmd_close()
        self.stop.set()


def _settle_gc() -> None:
    """The clients live for the whole phase: move them out of the collector's way,
    so that a full collection never shows up as the server's latency."""
    gc.collect()
    gc.freeze()


async def _main(pipe: Pipe) -> None:
    worker = Worker(pipe)
    loop = asyncio.get_running_loop()
    threading.Thread(target=worker.read_commands, args=(loop,), daemon=True).start()
    try:
        await worker.stop.wait()
    finally:
        for client in worker.clients:
            client.abort()


def worker_main(pipe: Pipe) -> None:
    """The entry point of a worker process."""
    import uvloop

    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_main(pipe))
