"""Real network partitions: network namespaces joined by a bridge, links cut by dropping packets.

A :class:`Network` is a private layer-2 network of its own: a *hub* namespace
holds a bridge; each host (:meth:`Network.host`) is a namespace with one veth
into that bridge and an address of the network's ``10.x.y.0/24``; the test
process itself joins as the host ``tester`` (a veth from the root namespace,
so the test talks to every host without entering a namespace). Servers
listen on their namespace's address (or its loopback), never on a public
interface.

:meth:`Network.cut` makes two hosts unreachable to each other by a silent
blackhole: an nftables rule on the hub's bridge drops every IPv4 packet
between their addresses, both ways. Neither end gets an RST, an ICMP error
or a local send error (as dropping on a host's own output or taking its link
down would give): their packets simply vanish, which is what a partition
looks like to TCP and what ``TCP_USER_TIMEOUT`` and Redis timeouts are for.
:meth:`Network.heal` removes the rule; established connections carry on at
their next retransmission.

``tc ... netem`` would do as well, but this kernel has no netem (and no
``modprobe``); nftables is built in. ``scripts/install-system-deps.sh``
installs Debian's ``iproute2`` and ``nftables``. Root is needed: without it,
or without ``ip``/``nft``, :func:`require` raises (the test fails, it never
skips).

Cleanup: :meth:`Network.close` deletes every namespace it made (with them go
their veths, the bridge and the rules); a context manager runs it whatever
the test did, and a new network first deletes namespaces left by a test
process that no longer exists (killed before it could clean up).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.kafka import KafkaBroker
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer, redis_server_binary
from tests.support.waiting import wait_until_sync

#: Every namespace this module makes is named ``herald-<pid>-<tag>-<host>``.
PREFIX = "herald-"


def require() -> None:
    """Raise, saying what is missing, unless namespaces can be made here."""
    if os.geteuid() != 0:
        raise RuntimeError("network partitions need root (network namespaces, veth pairs, nftables)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` is not installed: run scripts/install-system-deps.sh")


def _run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def remove_stale() -> None:
    """Delete the namespaces of test processes that are gone."""
    for name in _namespaces():
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(RuntimeError):
                _run("ip", "netns", "delete", name)


def _free_subnet() -> ipaddress.IPv4Network:
    """A ``10.x.y.0/24`` that no address or route of the root namespace overlaps."""
    taken = []
    for line in _run("ip", "-4", "-o", "addr", "show").splitlines() + _run("ip", "-4", "route").splitlines():
        for word in line.split():
            with contextlib.suppress(ValueError):
                if "/" in word or word.count(".") == 3:
                    taken.append(ipaddress.ip_network(word, strict=False))
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{random.randint(100, 254)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise RuntimeError("no free 10.x.y.0/24 for a test network")


@dataclass(frozen=True)
class Host:
    """One machine of the network: a namespace (``None`` for the test process's own) and an address."""

    name: str
    namespace: str | None
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        if self.namespace is None:
            return list(argv)
        return ["ip", "netns", "exec", self.namespace, *argv]

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace (``ip netns exec`` execs it: the pid is the process's)."""
        return subprocess.Popen(self.command(argv), **kwargs)  # type: ignore[call-overload,no-any-return]

    def run(self, *argv: str) -> str:
        return _run(*self.command(argv))


class Network:
    """A bridge in a hub namespace, one namespace per host, the test process as ``tester``."""

    def __init__(self) -> None:
        require()
        remove_stale()
        self.tag = secrets.token_hex(3)
        self.subnet = _free_subnet()
        self._addresses = iter(self.subnet.hosts())
        self.hub = f"{PREFIX}{os.getpid()}-{self.tag}-hub"
        self._namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self.cuts: set[frozenset[str]] = set()
        #: Our veth ends in the root namespace: deleted at once (a deleted namespace's go later).
        self._root_links: list[str] = []
        try:
            self._make_hub()
            self.tester = self._add("tester", namespace=None)
        except BaseException:
            self.close()
            raise

    def _make_hub(self) -> None:
        _run("ip", "netns", "add", self.hub)
        self._namespaces.append(self.hub)
        hub = Host("hub", self.hub, "")
        hub.run("ip", "link", "set", "lo", "up")
        hub.run("ip", "link", "add", "br0", "type", "bridge")
        hub.run("ip", "link", "set", "br0", "up")
        # One set of (source, destination) pairs whose packets the bridge drops.
        _run(
            "ip", "netns", "exec", self.hub, "nft", "-f", "-",
            stdin=(
                "table bridge partitions {\n"
                "  set cut { type ipv4_addr . ipv4_addr; }\n"
                "  chain forward { type filter hook forward priority 0; policy accept;\n"
                "    ip saddr . ip daddr @cut drop; }\n"
                "}\n"
            ),
        )  # fmt: skip

    def _add(self, name: str, *, namespace: str | None) -> Host:
        index = len(self.hosts)
        outer, inner = f"hp{self.tag}{index}", f"hh{self.tag}{index}"
        address = str(next(self._addresses))
        hub = Host("hub", self.hub, "")
        # Both ends are made in the hub, then one is moved to the host (or the root namespace).
        hub.run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        hub.run("ip", "link", "set", outer, "master", "br0")
        hub.run("ip", "link", "set", outer, "up")
        if namespace is None:
            hub.run("ip", "link", "set", inner, "netns", str(os.getpid()))
        else:
            hub.run("ip", "link", "set", inner, "netns", namespace)
        host = Host(name, namespace, address)
        if namespace is None:
            self._root_links.append(inner)
        host.run("ip", "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", inner)
        host.run("ip", "link", "set", inner, "up")
        self.hosts[name] = host
        return host

    def host(self, name: str) -> Host:
        """A new namespace on the network, with its loopback up."""
        assert name not in self.hosts, name
        namespace = f"{PREFIX}{os.getpid()}-{self.tag}-{name}"
        _run("ip", "netns", "add", namespace)
        self._namespaces.append(namespace)
        Host(name, namespace, "").run("ip", "link", "set", "lo", "up")
        return self._add(name, namespace=namespace)

    def _pairs(self, a: Host, b: Host) -> str:
        return f"{{ {a.address} . {b.address}, {b.address} . {a.address} }}"

    def cut(self, a: Host, b: Host) -> None:
        """From now on every packet between ``a`` and ``b`` is dropped, silently, both ways."""
        Host("hub", self.hub, "").run(
            "nft", "add", "element", "bridge", "partitions", "cut", self._pairs(a, b)
        )
        self.cuts.add(frozenset((a.name, b.name)))

    def heal(self, a: Host, b: Host) -> None:
        """The link between ``a`` and ``b`` carries packets again (nothing to do if it was not cut)."""
        if frozenset((a.name, b.name)) not in self.cuts:
            return
        Host("hub", self.hub, "").run(
            "nft", "delete", "element", "bridge", "partitions", "cut", self._pairs(a, b)
        )
        self.cuts.discard(frozenset((a.name, b.name)))

    def close(self) -> None:
        """Delete every namespace made (their veths, the bridge and its rules go with them)."""
        for link in self._root_links:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "link", "delete", link)
        self._root_links.clear()
        for namespace in reversed(self._namespaces):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run("ip", "netns", "delete", namespace)
        self._namespaces.clear()


@contextlib.contextmanager
def network() -> Iterator[Network]:
    made = Network()
    try:
        yield made
    finally:
        made.close()


# --- servers inside a host's namespace, on its address


class RedisIn(RedisServer):
    """``redis-server`` in ``host``'s namespace, on its address. Protected mode (which
    refuses every client from a non-loopback address when no password is set) is off:
    the address is on the test's private network only."""

    def __init__(self, host: Host, **kwargs: bool) -> None:
        super().__init__(port=6379, **kwargs)
        self.host = host

    @property
    def url(self) -> str:
        return f"redis://{self.host.address}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(
            host=self.host.address, port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    def start(self) -> RedisIn:
        assert self.process is None, "already running"
        self.process = self.host.popen(
            [
                redis_server_binary(), "--port", str(self.port), "--bind", self.host.address,
                "--protected-mode", "no", "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec", "--dir", str(self.dir), "--logfile", str(self.log_path),
                "--maxmemory-policy", "noeviction",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until_sync(self._answers, timeout=10.0)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"redis-server did not start on {self.url}:\n{self._log()}") from None
        return self

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class PostgresIn(PostgresServer):
    """PostgreSQL in ``host``'s namespace, listening on its address; trusted from the network."""

    def __init__(self, host: Host, *, synchronous_commit: bool = True) -> None:
        super().__init__(synchronous_commit=synchronous_commit)
        self.host = host
        self.port = 5432
        self.address = host.address
        # Every server command (initdb, pg_ctl) runs in the namespace, as postgres when root.
        self._as = host.command(self._as)

    def _initialized(self) -> None:
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.host.address}/24 trust\n")


class KafkaIn(KafkaBroker):
    """A Kafka broker in ``host``'s namespace: clients on its address, the controller on its loopback."""

    def __init__(self, host: Host) -> None:
        super().__init__()
        self.host = host
        self.port, self.controller_port = 9092, 9093

    @property
    def bootstrap(self) -> str:
        return f"{self.host.address}:{self.port}"

    def _write_config(self) -> Path:
        config = super()._write_config()
        text = config.read_text()
        for key in ("listeners=PLAINTEXT://", "advertised.listeners=PLAINTEXT://"):
            text = text.replace(f"{key}127.0.0.1:", f"{key}{self.host.address}:")
        config.write_text(text)
        return config

    def command(self, argv: list[str]) -> list[str]:
        return self.host.command(argv)


def start_gateway_in(host: Host, env: Mapping[str, str] | None = None, *, port: int = 8000) -> GatewayProcess:
    """``herald serve`` in ``host``'s namespace on its address (one process), as
    :func:`tests.support.gateway.start_gateway` starts one on loopback."""
    return start_gateway(env, port=port, host=host.address, command=host.command)
