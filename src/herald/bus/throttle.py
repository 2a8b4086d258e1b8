"""The trailing throttle in front of the bus: at most one event per coalesce key per interval.

Every event with a ``coalesce`` key passes through here before the bus
(:mod:`herald.bus.throttle_policy` decides, this module keeps time and
appends). The key is ``(scope, key, coalesce)``: the same coalesce key sent to
different receivers is not the same thing. The first event of a quiet key is
appended at once; later ones within the interval are held, the newest
replacing the held one, and appended when the interval ends. The log holds
exactly what clients see, so cursor order and replay stay exact.

- **Answers.** :meth:`Throttle.offer` returns once the event is in the bus
  (``Offered.result``) or held (``Offered.pending``, a future). The future
  resolves when the event is appended (its cursor) or superseded (the cursor of
  the event carrying newer content, ``coalesced=True``) — never before, so a
  source may commit past it then. A held event's idempotency key is known at
  once: offering it again joins the waiting one.
- **Order with other events.** An event *without* a coalesce key to the same
  ``(scope, key)`` first sends out what that address holds, so a
  ``task.status-changed`` never overtakes the last progress of its task.
- **Failure.** A held event the bus refuses is held again (capped backoff);
  newer events keep replacing it. Its waiters keep waiting; callers that must
  answer in bounded time (HTTP) bound their own wait.
- **Stopping.** :meth:`close` appends everything held now and lets every later
  event straight through.

Per node: a cluster of gateways throttles per node (docs/architecture.md, D21).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from herald.bus.base import AppendResult
from herald.bus.throttle_policy import Candidate, HeldSlot, ThrottlePolicy
from herald.cluster.backoff import reconnect_delay
from herald.errors import HeraldError
from herald.events.message import SSEMessage

log = structlog.get_logger("herald.bus.throttle")

#: ``append(message, data_json, idempotency_key, superseded_keys)``: the gateway's append.
Append = Callable[[SSEMessage, bytes, "str | None", Sequence[str]], Awaitable[AppendResult]]
Address = tuple[str, "str | None"]
ThrottleKey = tuple[str, "str | None", str]
_Item = tuple[SSEMessage, bytes]


@dataclass(frozen=True, slots=True)
class Offered:
    """What became of an offered event: in the bus (``result``), or held (``pending``)."""

    result: AppendResult | None = None
    pending: asyncio.Future[AppendResult] | None = None

    @property
    def settled(self) -> bool:
        """In the bus, or superseded by something in the bus."""
        return self.result is not None or (self.pending is not None and self.pending.done())

    async def wait(self) -> AppendResult:
        if self.result is not None:
            return self.result
        assert self.pending is not None
        return await asyncio.shield(self.pending)


@dataclass(slots=True)
class ThrottleStats:
    #: Events held for the end of their key's interval.
    held: int = 0
    #: Held events replaced by a newer one before they went out.
    superseded: int = 0
    #: Held events appended (at the end of the interval, early, or on close).
    released: int = 0
    #: Appends of held events the bus refused (tried again).
    retries: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "held": self.held,
            "superseded": self.superseded,
            "released": self.released,
            "retries": self.retries,
        }


class Throttle:
    def __init__(self, append: Append, interval: float) -> None:
        """``interval`` 0: every event goes straight to ``append``."""
        self._append = append
        self.interval = interval
        self._policy: ThrottlePolicy[ThrottleKey] | None = ThrottlePolicy(interval) if interval > 0 else None
        self._slots: dict[ThrottleKey, HeldSlot[_Item, asyncio.Future[AppendResult]]] = {}
        #: Held keys by the address they go to, for events that must not overtake them.
        self._by_address: dict[Address, dict[ThrottleKey, None]] = {}
        #: Idempotency keys of held events, so a retry joins the waiting event.
        self._waiting: dict[str, asyncio.Future[AppendResult]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._failures: dict[ThrottleKey, int] = {}
        self._closed = False
        self.stats = ThrottleStats()

    def holding(self) -> int:
        """Keys holding an event now."""
        return len(self._slots)

    # --- offering

    def takes(self, message: SSEMessage) -> bool:
        """Whether ``message`` must go through :meth:`offer` rather than straight to the bus:
        it has a coalesce key the throttle applies, or its address holds an event that it
        must not overtake. (A batch sends the others to the bus together.)"""
        if message.coalesce is None:
            return (message.scope, message.key) in self._by_address
        return self._policy is not None and not self._closed

    async def offer(self, message: SSEMessage, data_json: bytes, idempotency_key: str | None) -> Offered:
        policy = self._policy
        if message.coalesce is None or policy is None or self._closed:
            if self._by_address and message.coalesce is None:
                await self._release_address((message.scope, message.key))
            return Offered(await self._append(message, data_json, idempotency_key, ()))
        if idempotency_key is not None:
            waiting = self._waiting.get(idempotency_key)
            if waiting is not None:
                return Offered(pending=waiting)
        key: ThrottleKey = (message.scope, message.key, message.coalesce)
        slot = self._slots.get(key)
        if slot is None:
            loop = asyncio.get_running_loop()
            due = policy.offer(key, loop.time())
            if due is None:
                return Offered(await self._append(message, data_json, idempotency_key, ()))
            waiter: asyncio.Future[AppendResult] = loop.create_future()
            self._slots[key] = HeldSlot.of(Candidate((message, data_json), idempotency_key, waiter))
            self._by_address.setdefault((message.scope, message.key), {})[key] = None
            self._schedule(due)
        else:
            waiter = asyncio.get_running_loop().create_future()
            before = len(slot.superseded)
            slot.add(Candidate((message, data_json), idempotency_key, waiter))
            self.stats.superseded += len(slot.superseded) - before
        self.stats.held += 1
        if idempotency_key is not None:
            self._waiting[idempotency_key] = waiter
        return Offered(pending=waiter)

    # --- releasing

    def _schedule(self, due: float) -> None:
        if self._timer is not None and self._timer_due is not None and self._timer_due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_due = due
        self._timer = loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_due = None
        policy = self._policy
        assert policy is not None
        for key in policy.release(asyncio.get_running_loop().time()):
            self._spawn(key, self._pop(key))
        due = policy.next_due()
        if due is not None:
            self._schedule(due)

    def _pop(self, key: ThrottleKey) -> HeldSlot[_Item, asyncio.Future[AppendResult]]:
        slot = self._slots.pop(key)
        address = (key[0], key[1])
        keys = self._by_address.get(address)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._by_address[address]
        return slot

    def _spawn(self, key: ThrottleKey, slot: HeldSlot[_Item, asyncio.Future[AppendResult]]) -> None:
        task = asyncio.get_running_loop().create_task(self._release_logged(key, slot))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _release_address(self, address: Address) -> None:
        """Append what ``address`` holds now, before an event that must not overtake it."""
        keys = self._by_address.get(address)
        if not keys:
            return
        policy = self._policy
        assert policy is not None
        now = asyncio.get_running_loop().time()
        for key in list(keys):  # in the order they were held
            policy.take(key, now)
            slot = self._pop(key)
            try:
                await self._release(slot)
            except HeraldError:
                self._hold_again(key, slot)
                raise

    async def _release_logged(
        self, key: ThrottleKey, slot: HeldSlot[_Item, asyncio.Future[AppendResult]]
    ) -> None:
        try:
            await self._release(slot)
        except HeraldError as exc:
            if not exc.retriable or self._closed:
                self._fail(slot, exc)
                return
            attempt = self._failures.get(key, 0)
            self._failures[key] = attempt + 1
            self.stats.retries += 1
            if attempt == 0 or attempt % 20 == 0:
                log.warning("throttle_release_retry", code=exc.code, attempt=attempt)
            self._hold_again(key, slot, delay=reconnect_delay(attempt, base=0.05, cap=2.0))
        except Exception as exc:  # a bug must not leave producers waiting for ever
            log.exception("throttle_release_failed")
            self._fail(slot, exc)
        else:
            self._failures.pop(key, None)

    async def _release(self, slot: HeldSlot[_Item, asyncio.Future[AppendResult]]) -> None:
        """Append the newest held offer; if the bus has it already (a retry of an old
        event), the next newest, and so on. Answers every waiter of the slot."""
        candidates = slot.candidates
        index = len(candidates) - 1
        while True:
            candidate = candidates[index]
            message, data_json = candidate.item
            result = await self._append(message, data_json, candidate.key, slot.keys_before(index))
            self._settle(candidate.key, candidate.waiter, result)
            if result.duplicate and index > 0:
                # Answered; the rest of the slot is the older offers, still to go out.
                del candidates[index]
                index -= 1
                continue
            break
        self.stats.released += 1
        carried = AppendResult(result.cursor, coalesced=True)
        for older in candidates[:index]:
            self._settle(older.key, older.waiter, carried)
        for waiter in slot.superseded:
            if not waiter.done():
                waiter.set_result(carried)
        for alias in slot.aliases:
            self._forget_waiting(alias)

    def _settle(self, key: str | None, waiter: asyncio.Future[AppendResult], result: AppendResult) -> None:
        if not waiter.done():
            waiter.set_result(result)
        if key is not None:
            self._forget_waiting(key)

    def _forget_waiting(self, key: str) -> None:
        waiter = self._waiting.get(key)
        if waiter is not None and waiter.done():
            del self._waiting[key]

    def _hold_again(
        self, key: ThrottleKey, slot: HeldSlot[_Item, asyncio.Future[AppendResult]], delay: float = 0.0
    ) -> None:
        policy = self._policy
        assert policy is not None
        newer = self._slots.get(key)
        if newer is not None:
            newer.absorb_older(slot)
            slot = newer
        else:
            self._slots[key] = slot
            self._by_address.setdefault((key[0], key[1]), {})[key] = None
        if self._closed:
            self._pop(key)
            self._spawn(key, slot)
            return
        due = policy.hold_again(key, asyncio.get_running_loop().time() + delay)
        self._schedule(due)

    def _fail(self, slot: HeldSlot[_Item, asyncio.Future[AppendResult]], exc: BaseException) -> None:
        waiters = [c.waiter for c in slot.candidates] + slot.superseded
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # retrieved: a waiter nobody awaits must not log at exit
        for key in [c.key for c in slot.candidates if c.key is not None] + slot.aliases:
            self._forget_waiting(key)

    # --- stopping

    async def close(self) -> None:
        """Append everything held now, and let later events straight through. Waits for
        the appends (a bus that refuses them keeps this waiting: callers bound it)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_due = None
        for key in list(self._slots):
            self._spawn(key, self._pop(key))
        if self._flushing:
            await asyncio.wait(set(self._flushing))
