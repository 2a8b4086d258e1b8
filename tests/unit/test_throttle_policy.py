"""The trailing throttle's pure policy, with a hand-moved clock: tables of offers in, releases out."""

from __future__ import annotations

import itertools

import pytest

from herald.bus.throttle_policy import MAX_CANDIDATES, Candidate, HeldSlot, ThrottlePolicy


def run(interval: float, offers: list[tuple[float, str, int]], until: float) -> list[tuple[float, str, int]]:
    """Drive the policy as the throttle does: ``offers`` are ``(time, key, value)``; the held
    value of a key is replaced by newer offers. What goes out, as ``(time, key, value)``."""
    policy: ThrottlePolicy[str] = ThrottlePolicy(interval)
    held: dict[str, int] = {}
    out: list[tuple[float, str, int]] = []
    events = sorted(offers)
    now = 0.0
    while events or held:
        due = policy.next_due()
        next_offer = events[0][0] if events else None
        if due is not None and (next_offer is None or due <= next_offer):
            now = due
            for key in policy.release(now):
                out.append((now, key, held.pop(key)))
            continue
        assert next_offer is not None
        now, key, value = events.pop(0)
        if policy.offer(key, now) is None:
            out.append((now, key, value))
        else:
            held[key] = value
    assert now <= until
    return out


@pytest.mark.parametrize(
    ("offers", "expected"),
    [
        pytest.param([(0.0, "a", 1)], [(0.0, "a", 1)], id="a lone offer goes out at once"),
        pytest.param(
            [(0.0, "a", 1), (0.2, "a", 2), (0.5, "a", 3), (0.9, "a", 4), (2.5, "a", 5)],
            [(0.0, "a", 1), (1.0, "a", 4), (2.5, "a", 5)],
            id="a burst: the first at once, the newest when the interval ends, a quiet key at once",
        ),
        pytest.param(
            [(0.0, "a", 1), (0.5, "a", 2), (1.2, "a", 3), (1.4, "a", 4)],
            [(0.0, "a", 1), (1.0, "a", 2), (2.0, "a", 4)],
            id="an offer just after a release waits a whole interval from that release",
        ),
        pytest.param(
            [(0.0, "a", 1), (1.0, "a", 2), (2.0, "a", 3)],
            [(0.0, "a", 1), (1.0, "a", 2), (2.0, "a", 3)],
            id="offers exactly an interval apart are never held",
        ),
        pytest.param(
            [(0.0, "a", 1), (0.1, "b", 1), (0.3, "a", 2), (0.4, "b", 2), (0.6, "b", 3)],
            [(0.0, "a", 1), (0.1, "b", 1), (1.0, "a", 2), (1.1, "b", 3)],
            id="keys are throttled apart",
        ),
        pytest.param(
            [(t / 10, "a", t) for t in range(35)],
            [(0.0, "a", 0), (1.0, "a", 9), (2.0, "a", 19), (3.0, "a", 29), (4.0, "a", 34)],
            id="a steady stream: one per interval, the latest each time, the last one always",
        ),
    ],
)
def test_offers_in_releases_out(
    offers: list[tuple[float, str, int]], expected: list[tuple[float, str, int]]
) -> None:
    out = run(1.0, offers, until=10.0)
    assert [(round(t, 6), k, v) for t, k, v in out] == expected


def test_at_most_one_release_per_interval_per_key_and_the_last_value_always_goes_out() -> None:
    offers = [(t * 0.037, f"k{t % 3}", t) for t in range(400)]
    out = run(0.5, offers, until=20.0)
    for key in ("k0", "k1", "k2"):
        times = [t for t, k, _ in out if k == key]
        assert all(b - a >= 0.5 - 1e-9 for a, b in itertools.pairwise(times))
        last_offered = max(v for _, k, v in offers if k == key)
        assert [v for _, k, v in out if k == key][-1] == last_offered


def test_a_late_release_spaces_the_next_one_from_when_it_really_went_out() -> None:
    policy: ThrottlePolicy[str] = ThrottlePolicy(1.0)
    assert policy.offer("a", 0.0) is None
    assert policy.offer("a", 0.5) == 1.0
    assert policy.release(1.3) == ["a"]  # the timer fired late
    assert policy.offer("a", 1.4) == 2.3


def test_take_releases_early_and_a_stale_due_is_ignored() -> None:
    policy: ThrottlePolicy[str] = ThrottlePolicy(1.0)
    policy.offer("a", 0.0)
    assert policy.offer("a", 0.2) == 1.0
    assert policy.take("a", 0.4) is True
    assert policy.take("a", 0.4) is False
    assert policy.next_due() is None
    assert policy.release(1.0) == []
    assert policy.offer("a", 0.6) == 1.4  # an interval after the early release


def test_hold_again_after_a_refused_release_keeps_the_earlier_due() -> None:
    policy: ThrottlePolicy[str] = ThrottlePolicy(1.0)
    policy.offer("a", 0.0)
    policy.offer("a", 0.5)
    assert policy.release(1.0) == ["a"]
    assert policy.hold_again("a", 1.2) == 1.2
    assert policy.release(1.2) == ["a"]
    # A newer hold was made meanwhile (due 2.2): the refused item comes back sooner.
    assert policy.offer("a", 1.3) == 2.2
    assert policy.hold_again("a", 1.5) == 1.5
    assert policy.hold_again("a", 3.0) == 1.5
    assert policy.release(1.5) == ["a"]
    assert policy.release(5.0) == []


def test_quiet_keys_are_forgotten() -> None:
    policy: ThrottlePolicy[str] = ThrottlePolicy(1.0)
    for n in range(100):
        policy.offer(f"k{n}", 0.0)
    policy.offer("busy", 0.0)
    policy.offer("busy", 0.5)
    policy.forget(0.9)
    assert len(policy) == 101
    policy.forget(1.0)
    assert len(policy) == 1
    assert list(policy.held()) == ["busy"]


def test_a_zero_interval_is_no_throttle() -> None:
    with pytest.raises(ValueError, match="positive"):
        ThrottlePolicy(0.0)


# --- what a key holds


def cand(value: str, key: str | None) -> Candidate[str, str]:
    return Candidate(value, key, f"w-{value}")


@pytest.mark.parametrize(
    ("offers", "candidates", "superseded", "aliases"),
    [
        pytest.param(
            [("a", None), ("b", None), ("c", None)], ["c"], ["w-a", "w-b"], [], id="no keys: the newest only"
        ),
        pytest.param(
            [("a", "k1"), ("b", "k2"), ("c", "k3")],
            ["a", "b", "c"],
            [],
            [],
            id="keyed offers keep the older ones as fall-backs",
        ),
        pytest.param(
            [("a", "k1"), ("b", "k2"), ("c", None), ("d", "k4")],
            ["c", "d"],
            ["w-a", "w-b"],
            ["k1", "k2"],
            id="an offer without a key supersedes everything before it",
        ),
    ],
)
def test_held_slot(
    offers: list[tuple[str, str | None]], candidates: list[str], superseded: list[str], aliases: list[str]
) -> None:
    slot: HeldSlot[str, str] = HeldSlot.of(cand(*offers[0]))
    for offer in offers[1:]:
        slot.add(cand(*offer))
    assert [c.item for c in slot.candidates] == candidates
    assert slot.superseded == superseded
    assert slot.aliases == aliases


def test_held_slot_keeps_a_bounded_number_of_fall_backs() -> None:
    slot: HeldSlot[str, str] = HeldSlot.of(cand("0", "k0"))
    for n in range(1, 40):
        slot.add(cand(str(n), f"k{n}"))
    assert len(slot.candidates) == MAX_CANDIDATES
    assert slot.candidates[-1].item == "39"
    assert slot.aliases == [f"k{n}" for n in range(40 - MAX_CANDIDATES)]
    # The newest supersedes every key before it, the fall-backs' and the aliases'.
    assert slot.keys_before(MAX_CANDIDATES - 1) == [f"k{n}" for n in range(39)]


def test_a_refused_slot_goes_before_the_one_held_meanwhile() -> None:
    refused: HeldSlot[str, str] = HeldSlot.of(cand("a", "k1"))
    refused.add(cand("b", "k2"))
    newer: HeldSlot[str, str] = HeldSlot.of(cand("c", "k3"))
    newer.absorb_older(refused)
    assert [c.item for c in newer.candidates] == ["a", "b", "c"]
    unkeyed: HeldSlot[str, str] = HeldSlot.of(cand("d", None))
    unkeyed.absorb_older(newer)
    assert [c.item for c in unkeyed.candidates] == ["d"]
    assert unkeyed.aliases == ["k1", "k2", "k3"]
