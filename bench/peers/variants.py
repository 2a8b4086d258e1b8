"""A server under test in the peer suite: which server, on which engine, with how many cores.

- ``herald``: ``herald serve`` with one worker, or ``--workers 2`` (cores 2); the
  memory bus (two workers share the embedded log, D25) or the Redis bus
  (``HERALD_BUS=redis``) on the run's redis-server.
- ``centrifugo``: :mod:`bench.centrifugo`, ``GOMAXPROCS`` = cores, its memory
  engine or its Redis engine on the same redis-server.
- ``ceiling``: the raw-asyncio ceiling (memory, one core, no replay).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import centrifugo
from bench.common import HERALD_WORKERS, ServerProcess, free_port, mint, start_server
from bench.loadgen.fast_publisher import CENTRIFUGO_API_KEY
from bench.loadgen.traffic import RESOURCE_TYPE, resource_of_streams
from bench.redis_server import RedisServer

PEER_SERVERS = ("herald", "centrifugo", "ceiling")


@dataclass(frozen=True)
class Variant:
    server: str
    engine: str
    cores: int

    @property
    def label(self) -> str:
        return f"{self.server} · {self.engine} · {self.cores} core{'s' if self.cores > 1 else ''}"

    @property
    def dialect(self) -> str:
        return "centrifugo" if self.server == "centrifugo" else "herald"

    @property
    def replays(self) -> bool:
        return self.server != "ceiling"

    def applies(self, scenario: str) -> bool:
        if self.server == "ceiling":
            return scenario not in ("restart",)
        if self.engine == "redis":
            # The bus's cost is in publishing and targeted events; the fan-out is the node's.
            return scenario in ("targeted", "publish", "restart")
        return True


def variants(servers: list[str], engines: list[str], cores: list[int]) -> list[Variant]:
    """Every variant the run's servers, engines and cores allow, grouped by (engine, cores)
    so that servers doing the same job run next to each other."""
    out: list[Variant] = []
    for engine in engines:
        for count in cores:
            for server in servers:
                if server == "ceiling" and (engine != "memory" or count != 1):
                    continue
                out.append(Variant(server, engine, count))
    return out


class Servers:
    """Starts variants: knows the Centrifugo binary and the run's redis-server."""

    def __init__(self, centrifugo_binary: Path | None, redis: RedisServer | None) -> None:
        self.centrifugo_binary = centrifugo_binary
        self.redis = redis
        self._tokens: dict[tuple[str, int], list[tuple[str, str, str]]] = {}

    def prefix(self, v: Variant) -> str:
        return f"bench-{v.server}-{v.cores}"

    def start(self, v: Variant, port: int = 0) -> ServerProcess:
        redis_url = None
        if v.engine == "redis":
            if self.redis is None:
                raise RuntimeError("the Redis engine needs redis-server")
            redis_url = self.redis.url
        if v.server == "centrifugo":
            if self.centrifugo_binary is None:
                raise RuntimeError("no Centrifugo binary")
            return centrifugo.start(
                self.centrifugo_binary,
                port or free_port(),
                v.cores,
                v.engine,
                redis_url,
                self.prefix(v),
            )
        env: dict[str, str] = {}
        if redis_url is not None:
            env.update(
                {"HERALD_BUS": "redis", "HERALD_REDIS_URL": redis_url, "HERALD_REDIS_PREFIX": self.prefix(v)}
            )
        name = v.server
        if v.server == "herald" and v.cores > 1:
            name = HERALD_WORKERS
        return start_server(name, gcwatch=False, workers=v.cores, extra_env=env, port=port)

    def specs(self, v: Variant, n: int) -> list[tuple[str, str, str]]:
        """Stream ``i``: user ``u{i}``, its token, the resource it follows."""
        kind = "centrifugo" if v.server == "centrifugo" else "herald"
        cached = self._tokens.get((kind, n))
        if cached is not None:
            return cached
        resources = [f"{RESOURCE_TYPE}:{r}" for r in resource_of_streams(n)]
        if kind == "centrifugo":
            out = [(f"u{i}", centrifugo.token(f"u{i}", resources[i]), resources[i]) for i in range(n)]
        else:
            out = [(f"u{i}", mint(f"u{i}", resources=[resources[i]]), resources[i]) for i in range(n)]
        self._tokens[(kind, n)] = out
        return out

    def publish_token(self, v: Variant) -> str:
        if v.server == "centrifugo":
            return CENTRIFUGO_API_KEY
        return mint("bench-publisher", publisher=True)
