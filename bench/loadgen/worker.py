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
from bench.loadgen.client import SSEClient, Stats, stream_request

Spec = tuple[str, str]  # (user id, JWT)


class Worker:
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.stats = Stats()
        self.clients: list[SSEClient] = []
        self.specs: list[Spec] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.path = ""
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
        self, host: str, port: int, path: str, specs: list[Spec], concurrency: int, time_limit: float
    ) -> dict[str, Any]:
        """Open one stream per spec, at most ``concurrency`` opening at once."""
        self.host, self.port, self.path = host, port, path
        self.specs = specs
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
            "errors": dict(self.stats.errors),
        }

    async def _open(
        self, spec: Spec, last_id: bytes | None, target_seq: int, deadline: float, retries: int
    ) -> SSEClient | None:
        loop = asyncio.get_running_loop()
        _, token = spec
        request = stream_request(self.host, self.port, self.path, token, last_id)
        attempt = 0
        while True:
            client = SSEClient(self.stats, request, spec, target_seq)
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

    async def cmd_reset(self) -> None:
        self.stats.reset()

    async def cmd_stats(self, hist: bool = True) -> dict[str, Any]:
        snap = self.stats.snapshot(with_hist=hist)
        snap["held"] = sum(1 for c in self.clients if c.established and not c.wanted_close)
        return snap

    async def cmd_drop(self) -> int:
        """Every connection drops at once (RST), remembering its Last-Event-ID."""
        for client in self.clients:
            client.abort()
        return len(self.clients)

    async def cmd_reconnect(
        self, t0_ns: int, target_seq: int, time_limit: float, use_last_id: bool
    ) -> dict[str, Any]:
        """Every dropped client reconnects at once with its Last-Event-ID; report when
        each was live (``connection.established``) and when it had ``target_seq``."""
        deadline = time.monotonic() + time_limit
        old = self.clients
        opened = await asyncio.gather(
            *(
                self._open(
                    c.spec,
                    c.last_id if use_last_id else None,
                    target_seq,
                    deadline,
                    retries=20,
                )
                for c in old
            )
        )
        self.clients = [c for c in opened if c is not None]
        _settle_gc()
        live = [c.established_ns - t0_ns for c in self.clients]
        if target_seq >= 0:
            # Wait (bounded) for the replay to reach every reconnected client.
            while time.monotonic() < deadline and any(not c.seq_ns for c in self.clients):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        replayed = [c.seq_ns - t0_ns for c in self.clients if c.seq_ns]
        return {
            "reconnected": len(self.clients),
            "failed": len(old) - len(self.clients),
            "live_max_ns": max(live, default=0),
            "live_p50_ns": sorted(live)[len(live) // 2] if live else 0,
            "replayed": len(replayed),
            "replayed_max_ns": max(replayed, default=0),
        }

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
