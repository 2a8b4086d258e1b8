"""What was published and what each client received: the accounting of a fault phase.

Pure: :func:`account` compares one client's deliveries with the events it was
entitled to and says what was lost (and whether the client was told), duplicated,
out of order, or never meant for it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.reliability.client import Connect, Delivery


@dataclass(frozen=True, slots=True)
class Published:
    uid: str
    #: The user it is for, or ``None`` for a global event.
    user: str | None
    source: str
    started: float
    acked: float


@dataclass
class Ledger:
    """Every event the harness published (acknowledged by the gateway, broker or database)."""

    accepted: dict[str, Published] = field(default_factory=dict)
    #: Every uid the harness tried to publish and for whom, acknowledged or not.
    meant_for: dict[str, str | None] = field(default_factory=dict)

    def attempt(self, uid: str, user: str | None) -> None:
        self.meant_for[uid] = user

    def accept(self, event: Published) -> None:
        self.accepted.setdefault(event.uid, event)

    def entitled(self, user: str, uids: Iterable[str]) -> list[Published]:
        found = (self.accepted[u] for u in uids if u in self.accepted)
        return [p for p in found if p.user in (None, user)]


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True)
class ClientOutcome:
    client: str
    expected: int
    received: int
    lost_silent: int
    lost_told: int
    #: Of the lost: acknowledged before the fault (the log that went away held them).
    lost_acked_before_fault: int
    duplicated: int
    duplicated_across_reset: int
    out_of_order: int
    foreign: int
    unacknowledged: int
    live_after_fault: float | None
    live_after_restore: float | None
    connects_recovered: int
    connects_not_recovered: int
    replay_misses: tuple[str, ...]


def account(
    client: str,
    user: str,
    ledger: Ledger,
    phase_uids: Sequence[str],
    deliveries: Sequence[Delivery],
    connects: Sequence[Connect],
    *,
    first_connect: int,
    fault_at: float,
    restored_at: float,
    ignore: frozenset[str] = frozenset(),
) -> ClientOutcome:
    """One client's phase: ``phase_uids`` are the uids the harness published in the phase
    (accepted or not), ``deliveries`` what the client received in it, ``connects`` all its
    connects, of which those from ``first_connect`` on happened in the phase."""
    expected = {p.uid for p in ledger.entitled(user, phase_uids)} - ignore
    got = [d for d in deliveries if d.uid not in ignore]
    counts = Counter(d.uid for d in got)
    in_phase = connects[first_connect:]
    told = any(not c.recovered and c.sent_cursor is not None for c in in_phase)
    lost = expected - counts.keys()
    duplicated = across = 0
    first_connect: dict[str, int] = {}
    for d in got:
        if d.uid in first_connect:
            if _reset_between(first_connect[d.uid], d.connect, connects):
                across += 1
            else:
                duplicated += 1
        else:
            first_connect[d.uid] = d.connect
    out_of_order = sum(1 for a, b in itertools.pairwise(got) if cursor_key(b.cursor) <= cursor_key(a.cursor))
    foreign = sum(1 for uid in counts if ledger.meant_for.get(uid, user) not in (None, user))
    unacknowledged = sum(1 for uid in counts if uid in ledger.meant_for and uid not in ledger.accepted)
    live = next(
        (d.at for d in got if d.uid in ledger.accepted and ledger.accepted[d.uid].started >= fault_at), None
    )
    return ClientOutcome(
        client=client,
        expected=len(expected),
        received=len(got),
        lost_silent=0 if told else len(lost),
        lost_told=len(lost) if told else 0,
        lost_acked_before_fault=sum(1 for uid in lost if ledger.accepted[uid].acked < fault_at),
        duplicated=duplicated,
        duplicated_across_reset=across,
        out_of_order=out_of_order,
        foreign=foreign,
        unacknowledged=unacknowledged,
        live_after_fault=None if live is None else live - fault_at,
        live_after_restore=None if live is None else max(0.0, live - restored_at),
        connects_recovered=sum(1 for c in in_phase if c.recovered),
        connects_not_recovered=sum(1 for c in in_phase if not c.recovered),
        replay_misses=tuple(c.replay_miss or "none" for c in in_phase if not c.recovered),
    )


def _reset_between(first: int, later: int, connects: Sequence[Connect]) -> bool:
    """Whether a connect after ``first`` and up to ``later`` told the client it could not
    resume."""
    return any(
        not c.recovered and c.sent_cursor is not None for i, c in enumerate(connects) if first < i <= later
    )
