"""The coordinator's side of the load generator: worker processes and their merged results."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from bench.common import cpu_seconds
from bench.loadgen.client import BUCKET_NS
from bench.loadgen.worker import Spec, worker_main


class WorkerError(RuntimeError):
    pass


@dataclass
class Handle:
    proc: BaseProcess
    pipe: Pipe
    ps: psutil.Process
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def call(self, cmd: str, wait_s: float, **args: Any) -> Any:
        async with self.lock:
            loop = asyncio.get_running_loop()
            self.pipe.send((cmd, args))
            ready: asyncio.Future[None] = loop.create_future()
            fd = self.pipe.fileno()

            def readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(fd, readable)
            try:
                await asyncio.wait_for(ready, wait_s)
            finally:
                loop.remove_reader(fd)
            status, result = self.pipe.recv()
            if status != "ok":
                raise WorkerError(f"worker {cmd}: {result}")
            return result


class WorkerPool:
    """``workers`` processes, each holding an equal share of the connections."""

    def __init__(self, workers: int) -> None:
        self.size = workers
        self.handles: list[Handle] = []

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        for i in range(self.size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child,), name=f"bench-loadgen-{i}", daemon=True)
            proc.start()
            child.close()
            self.handles.append(Handle(proc, parent, psutil.Process(proc.pid)))

    def stop(self) -> None:
        for h in self.handles:
            with contextlib.suppress(OSError, ValueError):
                h.pipe.send(("exit", {}))
        for h in self.handles:
            h.proc.join(timeout=3)
            if h.proc.is_alive():
                h.proc.kill()
                h.proc.join(timeout=3)
            with contextlib.suppress(OSError):
                h.pipe.close()
        self.handles = []

    def pids(self) -> list[int]:
        return [h.proc.pid for h in self.handles if h.proc.pid is not None]

    def cpu_seconds(self) -> float:
        total = 0.0
        for h in self.handles:
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(h.ps)
        return total

    def rss(self) -> int:
        total = 0
        for h in self.handles:
            with contextlib.suppress(psutil.Error):
                total += h.ps.memory_info().rss
        return total

    async def all(
        self, cmd: str, wait_s: float, per_worker: list[dict[str, Any]] | None = None, **args: Any
    ) -> list[Any]:
        calls = []
        for i, h in enumerate(self.handles):
            a = dict(args)
            if per_worker is not None:
                a.update(per_worker[i])
            calls.append(h.call(cmd, wait_s, **a))
        return list(await asyncio.gather(*calls))

    async def connect(
        self,
        host: str,
        port: int,
        path: str,
        specs: Sequence[Spec],
        concurrency: int,
        time_limit: float,
        dialect: str = "herald",
    ) -> dict[str, Any]:
        shares = [specs[i :: self.size] for i in range(self.size)]
        results = await self.all(
            "connect",
            time_limit + 10,
            per_worker=[{"specs": s} for s in shares],
            host=host,
            port=port,
            path=path,
            concurrency=max(1, concurrency // self.size),
            time_limit=time_limit,
            dialect=dialect,
        )
        errors: dict[str, int] = {}
        for r in results:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {
            "ok": sum(r["ok"] for r in results),
            "failed": sum(r["failed"] for r in results),
            "errors": errors,
        }

    async def stats(self, *, hist: bool = True) -> Merged:
        return Merged.of(await self.all("stats", 30, hist=hist))


@dataclass
class Merged:
    delivered: int
    held: int
    open: int
    closed_unexpectedly: int
    max_ns: int
    last_ns: int
    errors: dict[str, int]
    hist: dict[int, int]

    @classmethod
    def of(cls, snaps: list[dict[str, Any]]) -> Merged:
        hist: dict[int, int] = {}
        errors: dict[str, int] = {}
        for s in snaps:
            for k, v in s.get("hist", {}).items():
                hist[k] = hist.get(k, 0) + v
            for k, v in s["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return cls(
            delivered=sum(s["delivered"] for s in snaps),
            held=sum(s["held"] for s in snaps),
            open=sum(s["open"] for s in snaps),
            closed_unexpectedly=sum(s["closed_unexpectedly"] for s in snaps),
            max_ns=max((s["max_ns"] for s in snaps), default=0),
            last_ns=max((s["last_ns"] for s in snaps), default=0),
            errors=errors,
            hist=hist,
        )

    def percentile_ms(self, q: float) -> float | None:
        total = sum(self.hist.values())
        if not total:
            return None
        rank = q * total
        seen = 0
        for bucket in sorted(self.hist):
            seen += self.hist[bucket]
            if seen >= rank:
                # The bucket's upper edge: a conservative reading.
                return (bucket + 1) * BUCKET_NS / 1e6
        return None
