""":class:`herald.cluster.control.NodeControl` over Redis pub/sub.

Every node subscribes, on one connection of its own, to the cluster's
control channel and to a channel of its own for answers. ``ask`` publishes
the command with a request id; ``PUBLISH`` says how many subscribers got it,
so the asker knows how many answers to expect (every node answers, ``null``
when the command is not about it) and returns as soon as the owner answers
or everyone said no, never waiting out the timeout in the common cases.
``gather`` counts the same way and returns once every node answered.

Pub/sub keeps nothing for absent subscribers: a node reconnecting to Redis
misses what was sent meanwhile. The commands are chosen so that this is
safe: an eviction missed is repeated by the next admission over the limit,
and a subscription change that gets no answer is reported to its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis

from herald.cluster.control import Answer, Command, Handler
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections, is_unavailable, stop_reader, subscribe_forever

log = structlog.get_logger("herald.cluster.control")

_PING_SECONDS = 5.0


class _Question:
    __slots__ = ("answered", "answers", "expected", "future")

    def __init__(self, future: asyncio.Future[Answer | None], *, gather: bool = False) -> None:
        self.future = future
        self.expected: int | None = None
        self.answered = 0
        #: A gather's answers so far (``None``: an ask, done at the first answer).
        self.answers: list[Answer] | None = [] if gather else None

    def settle(self) -> None:
        if self.expected is not None and self.answered >= self.expected and not self.future.done():
            self.future.set_result(None)


class RedisNodeControl:
    def __init__(self, redis: RedisConnections, keys: Keyspace, node: str) -> None:
        self._connections = redis
        self._commands = redis.commands
        self._channel = keys.control
        self._inbox = keys.control_node(node)
        self.node = node
        self._handler: Handler | None = None
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._questions: dict[str, _Question] = {}
        self._work: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.subscribed = asyncio.Event()

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self._client = self._connections.subscriber()
        self._task = asyncio.create_task(self._run(self._client), name="herald-node-control")
        # Commands sent before the subscription took would be lost: wait for it, bounded.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), self._connections.timeout)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None and self._client is not None:
            await stop_reader(self._task, self._client)
        self._task = None
        for task in list(self._work):
            task.cancel()
        for question in self._questions.values():
            if not question.future.done():
                question.future.set_result(None)

    def healthy(self) -> bool:
        return self.subscribed.is_set()

    async def tell(self, command: Command) -> None:
        await self._publish(self._channel, {"from": self.node, "cmd": command})

    async def ask(self, command: Command, timeout: float) -> Answer | None:  # noqa: ASYNC109
        return await self._question(command, timeout, _Question(asyncio.get_running_loop().create_future()))

    async def gather(self, command: Command, timeout: float) -> list[Answer]:  # noqa: ASYNC109
        question = _Question(asyncio.get_running_loop().create_future(), gather=True)
        await self._question(command, timeout, question)
        assert question.answers is not None
        if question.expected is None or question.answered < question.expected:
            log.warning(
                "node_control_gather_incomplete",
                op=command.get("op"),
                answered=question.answered,
                expected=question.expected,
            )
        return list(question.answers)

    async def _question(
        self,
        command: Command,
        timeout: float,  # noqa: ASYNC109
        question: _Question,
    ) -> Answer | None:
        request = secrets.token_hex(8)
        self._questions[request] = question
        try:
            receivers = await self._publish(
                self._channel, {"from": self.node, "ask": request, "cmd": command}
            )
            question.expected = max(0, receivers - (1 if self.subscribed.is_set() else 0))
            question.settle()
            try:
                return await asyncio.wait_for(question.future, timeout)
            except TimeoutError:
                return None
        finally:
            del self._questions[request]

    async def _publish(self, channel: str, message: dict[str, Any]) -> int:
        try:
            return int(await self._commands.publish(channel, orjson.dumps(message)))
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("node_control_publish_failed", error=repr(exc))
                return 0
            raise

    # --- the subscriber

    async def _run(self, client: Redis) -> None:
        await subscribe_forever(
            client,
            [self._channel, self._inbox],
            self._on_message,
            subscribed=self.subscribed,
            stopping=lambda: self._stopping,
            ping_seconds=_PING_SECONDS,
            lost="node_control_disconnected",
        )

    async def _on_message(self, data: bytes, channel: str) -> None:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        if channel == self._inbox:
            self._on_answer(body)
        elif body.get("from") != self.node and isinstance(body.get("cmd"), dict):
            task = asyncio.create_task(self._handle(body))
            self._work.add(task)
            task.add_done_callback(self._work.discard)

    def _on_answer(self, body: dict[str, Any]) -> None:
        question = self._questions.get(str(body.get("ask")))
        if question is None or question.future.done():
            return
        answer = body.get("answer")
        if question.answers is not None:
            if isinstance(answer, dict):
                question.answers.append(answer)
        elif isinstance(answer, dict):
            question.future.set_result(answer)
            return
        question.answered += 1
        question.settle()

    async def _handle(self, body: dict[str, Any]) -> None:
        assert self._handler is not None
        try:
            answer = await self._handler(body["cmd"])
        except Exception:
            log.exception("node_control_command_failed", op=body["cmd"].get("op"))
            answer = None
        asker = body.get("from")
        request = body.get("ask")
        if request is not None and isinstance(asker, str):
            await self._publish(self._inbox_of(asker), {"ask": request, "from": self.node, "answer": answer})

    def _inbox_of(self, node: str) -> str:
        return f"{self._channel}:{node}"  # Keyspace.control_node
