"""A real Apache Kafka broker for tests: single node, KRaft mode, free loopback ports.

The jars come from Maven Central (``scripts/install-kafka.sh``, run by ``make
install-test``, into ``~/.cache/herald/kafka-<version>/libs``); if they are
missing, the harness runs that script itself. The broker runs on the system
Java. A test that needs Kafka and cannot start it fails with the broker's
log; it never skips.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support.redis import free_port
from tests.support.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]
POM = ROOT / "scripts" / "kafka" / "pom.xml"
STARTUP_TIMEOUT = 60.0
_STARTED = "Kafka Server started"

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""


def _cluster_id() -> str:
    """A random cluster id as Kafka's own Uuid.randomUuid makes it: never one that starts with '-',
    which the storage tool's argument parser would take for an option (a 1-in-64 failure)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_version() -> str:
    found = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert found, f"no kafka.version in {POM}"
    return found[1]


def kafka_libs() -> Path:
    """The broker's jars, fetched from Maven Central on first use."""
    version = kafka_version()
    home = Path(os.environ.get("HERALD_KAFKA_HOME") or Path.home() / ".cache" / "herald" / f"kafka-{version}")
    if not (home / ".complete").exists():
        subprocess.run([str(ROOT / "scripts" / "install-kafka.sh")], check=True)
    return home / "libs"


def java_binary() -> str:
    found = shutil.which("java")
    if found is None:
        raise RuntimeError("java is not installed: run scripts/install-kafka.sh")
    return found


class KafkaBroker:
    """One broker+controller; :meth:`stop`/:meth:`kill` and :meth:`start` again keep ports and data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.controller_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="herald-kafka-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._formatted = False
        self._log_offset = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "kafka.log"

    def _write_config(self) -> Path:
        (self.dir / "log4j2.properties").write_text(LOG4J2)
        config = self.dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.dir / 'data'}",
                    "num.partitions=1",
                    "auto.create.topics.enable=true",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "group.min.session.timeout.ms=1000",
                    "log.flush.interval.messages=1",
                    "",
                ]
            )
        )
        return config

    def start(self) -> KafkaBroker:
        assert self.process is None, "already running"
        libs = kafka_libs()
        config = self._write_config()
        classpath = f"{libs}/*"
        if not self._formatted:
            cluster_id = _cluster_id()
            subprocess.run(
                [java_binary(), "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(config)],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self._formatted = True
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            argv = [java_binary(), "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
                    f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                    "-cp", classpath, "kafka.Kafka", str(config)]  # fmt: skip
            self.process = subprocess.Popen(self.command(argv), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_sync(self._started, timeout=STARTUP_TIMEOUT, interval=0.05)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"Kafka did not start on {self.bootstrap}:\n{self.log_tail()}") from None
        return self

    def command(self, argv: list[str]) -> list[str]:
        """How the broker's process is started (a namespace's broker runs it in there)."""
        return argv

    def _started(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"Kafka exited with {self.process.returncode}:\n{self.log_tail()}")
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return _STARTED.encode() in log.read()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """A clean shutdown (SIGTERM)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- clients for tests

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[AIOKafkaAdminClient]:
        client = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await client.start()
        try:
            yield client
        finally:
            await client.close()

    async def create_topics(self, topics: dict[str, int]) -> None:
        """Create each topic with its number of partitions, and wait until it has leaders."""
        async with self.admin() as admin:
            await admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in topics.items()])
        async with self.producer() as producer:
            for name, partitions in topics.items():
                found = await producer.partitions_for(name)
                assert found == set(range(partitions)), (name, found)

    @contextlib.asynccontextmanager
    async def producer(self) -> AsyncIterator[AIOKafkaProducer]:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            yield producer
        finally:
            await producer.stop()

    async def produce(
        self, topic: str, values: Iterable[bytes], *, partition: int | None = None, key: bytes | None = None
    ) -> list[tuple[int, int]]:
        """Send each value and wait for it; the ``(partition, offset)`` of each."""
        async with self.producer() as producer:
            placed = []
            for value in values:
                meta = await producer.send_and_wait(topic, value, key=key, partition=partition)
                placed.append((meta.partition, meta.offset))
            return placed

    async def read_all(self, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
        """The first ``expected`` records of ``topic`` (every partition), without a group."""
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        records: list[Any] = []
        try:
            import asyncio

            async with asyncio.timeout(timeout):
                while len(records) < expected:
                    batch = await consumer.getmany(timeout_ms=200)
                    for part in batch.values():
                        records.extend(part)
        finally:
            await consumer.stop()
        return records

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets of ``topic``: ``{partition: offset}``."""
        async with self.admin() as admin:
            offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}

    async def end_offsets(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        finally:
            await consumer.stop()
        return {tp.partition: offset for tp, offset in ends.items()}


@contextlib.contextmanager
def running_kafka() -> Iterator[KafkaBroker]:
    broker = KafkaBroker().start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One broker for the session; tests keep apart by topic and group names. Tests that
    stop or restart the broker start their own with :func:`running_kafka`."""
    with running_kafka() as broker:
        yield broker
