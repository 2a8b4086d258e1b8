"""The trailing throttle's policy, pure: no clock, no loop, no I/O; times are passed in.

Per key (a coalesce key and the address it goes to), over ``interval`` seconds:

- an offer when the key has nothing held and went out ``interval`` or more ago
  (or never) goes out **now**;
- any other offer is **held**; whatever is held for the key when its time
  comes (the newest offer: the caller replaces the held item, the policy keeps
  only times) goes out at ``last + interval``;
- a key is forgotten once nothing is held and its last release is
  ``interval`` old, so memory follows the keys active within one interval.

So a key goes out at most once per ``interval`` (measured from the moment the
caller releases it, so a late timer never shortens the gap), the first offer
of a quiet key costs no delay, and the last offer of a burst always goes out,
at most ``interval`` after the previous release.

Example, interval 1.0: offers at 0.0, 0.2, 0.5, 0.9, 2.5 → out at 0.0 (the
first), 1.0 (the 0.9 offer, which replaced 0.2 and 0.5), 2.5 (quiet since
1.0 for more than the interval: out at once).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Keys are swept for forgetting at most once per this many offers.
_SWEEP_EVERY = 1024


@dataclass(slots=True)
class _KeyTimes:
    #: When the key last went out.
    last: float
    #: When what is held goes out; ``None``: nothing held.
    due: float | None = None


class ThrottlePolicy(Generic[K]):
    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("a throttle needs a positive interval")
        self.interval = interval
        self._keys: dict[K, _KeyTimes] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._offers = 0

    def __len__(self) -> int:
        """Keys remembered (held, or released within the last interval)."""
        return len(self._keys)

    def offer(self, key: K, now: float) -> float | None:
        """``None``: the offer goes out now (the key's last release becomes ``now``).
        Otherwise it is held, and this is when the key's held item goes out."""
        self._offers += 1
        if self._offers % _SWEEP_EVERY == 0:
            self.forget(now)
        times = self._keys.get(key)
        if times is None:
            self._keys[key] = _KeyTimes(now)
            return None
        if times.due is not None:
            return times.due
        if now - times.last >= self.interval:
            times.last = now
            return None
        times.due = times.last + self.interval
        heapq.heappush(self._heap, (times.due, next(self._order), key))
        return times.due

    def release(self, now: float) -> list[K]:
        """The keys whose held item goes out now, earliest due first; each key's last
        release becomes ``now``."""
        out: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, key = heapq.heappop(heap)
            times = self._keys.get(key)
            if times is None or times.due != due:
                continue  # taken early, or held again later: a stale entry
            times.due = None
            times.last = now
            out.append(key)
        return out

    def take(self, key: K, now: float) -> bool:
        """Release ``key``'s held item now, ahead of its time (an event to the same
        receivers must not overtake it); whether anything was held."""
        times = self._keys.get(key)
        if times is None or times.due is None:
            return False
        times.due = None
        times.last = now
        return True

    def hold_again(self, key: K, due: float) -> float:
        """A released item could not go out (the bus refused it): hold it again until
        ``due``, or until the key's newer hold is due if that comes first. When it goes out."""
        times = self._keys.get(key)
        if times is None:
            times = self._keys[key] = _KeyTimes(due - self.interval)
        if times.due is not None and times.due <= due:
            return times.due
        times.due = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        return due

    def next_due(self) -> float | None:
        """When the earliest held item goes out; ``None`` when nothing is held."""
        heap = self._heap
        while heap:
            due, _, key = heap[0]
            times = self._keys.get(key)
            if times is not None and times.due == due:
                return due
            heapq.heappop(heap)
        return None

    def held(self) -> Iterator[K]:
        """The keys holding an item now."""
        return (key for key, times in self._keys.items() if times.due is not None)

    def forget(self, now: float) -> None:
        """Drop the keys with nothing held whose last release is an interval old."""
        interval = self.interval
        stale = [k for k, t in self._keys.items() if t.due is None and now - t.last >= interval]
        for key in stale:
            del self._keys[key]


T = TypeVar("T")
W = TypeVar("W")

#: Held offers kept per key as fall-backs (below): past it the oldest becomes superseded.
MAX_CANDIDATES = 16


@dataclass(slots=True)
class Candidate(Generic[T, W]):
    """One held offer: what to append, its idempotency key, and who waits for its answer."""

    item: T
    key: str | None
    waiter: W


@dataclass(slots=True)
class HeldSlot(Generic[T, W]):
    """What a key holds: the newest offer, and older ones that may still have to go out.

    The newest offer wins. But an offer with an idempotency key may be a retry of
    an event already in the log (a producer retrying an old value after a newer
    one): the bus then answers "duplicate", and the held value that the retry
    replaced must go out instead. So offers with a key keep the ones before them
    as fall-backs, newest first; an offer without a key is certainly new content,
    and supersedes everything before it. The idempotency keys of superseded offers
    are recorded with the cursor that carries the newer content (``aliases``), so a
    retry of one of them answers that cursor rather than append a stale value.
    """

    candidates: list[Candidate[T, W]]
    #: Waiters of superseded offers: answered with the cursor that goes out.
    superseded: list[W]
    #: Idempotency keys of superseded offers.
    aliases: list[str]

    @classmethod
    def of(cls, first: Candidate[T, W]) -> HeldSlot[T, W]:
        return cls([first], [], [])

    def add(self, candidate: Candidate[T, W]) -> None:
        if candidate.key is None:
            for older in self.candidates:
                self._supersede(older)
            self.candidates = []
        self.candidates.append(candidate)
        while len(self.candidates) > MAX_CANDIDATES:
            self._supersede(self.candidates.pop(0))

    def absorb_older(self, older: HeldSlot[T, W]) -> None:
        """``older`` could not go out and this slot was held meanwhile: ``older``'s offers
        come before this slot's, as if they had been held here all along."""
        mine = self.candidates
        self.candidates = list(older.candidates)
        self.superseded = older.superseded + self.superseded
        self.aliases = older.aliases + self.aliases
        for candidate in mine:
            self.add(candidate)

    def keys_before(self, index: int) -> list[str]:
        """Idempotency keys that the candidate at ``index`` supersedes if it goes out."""
        return self.aliases + [c.key for c in self.candidates[:index] if c.key is not None]

    def _supersede(self, candidate: Candidate[T, W]) -> None:
        self.superseded.append(candidate.waiter)
        if candidate.key is not None:
            self.aliases.append(candidate.key)
