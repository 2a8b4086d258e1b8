"""The fault accounting itself, on made-up deliveries: each kind of failure is counted."""

from __future__ import annotations

from dataclasses import asdict

from tests.reliability.client import Connect, Delivery
from tests.reliability.ledger import Ledger, Published, account


def _ledger() -> Ledger:
    ledger = Ledger()
    for n, user in enumerate(["a", None, "a", "b", "a"]):
        uid = f"e{n}"
        ledger.attempt(uid, user)
        ledger.accept(Published(uid, user, "http", started=float(n), acked=float(n) + 0.1))
    ledger.attempt("lost-in-flight", "a")  # never acknowledged
    return ledger


def _d(uid: str, cursor: str, connect: int = 0, at: float = 10.0) -> Delivery:
    return Delivery(uid, cursor, "task.created", at, connect)


RESUMED = Connect("n1", 0.0, "1-0", True, None, "1-0")
TOLD = Connect("n2", 0.0, "1-0", False, "stale", "9-0")
FIRST = Connect("n0", 0.0, None, False, "none", "0-0")


def _account(deliveries: list[Delivery], connects: list[Connect]) -> dict[str, object]:
    ledger = _ledger()
    outcome = account("c", "a", ledger, list(ledger.meant_for), deliveries, connects,
                      first_connect=0, fault_at=2.5, restored_at=3.0)  # fmt: skip
    return asdict(outcome)


def test_everything_once_in_order_is_clean() -> None:
    got = _account([_d("e0", "1-0"), _d("e1", "2-0"), _d("e2", "3-0"), _d("e4", "5-0")], [FIRST])
    assert got["expected"] == 4
    assert (got["lost_silent"], got["lost_told"], got["duplicated"], got["out_of_order"], got["foreign"]) == (
        0, 0, 0, 0, 0,
    )  # fmt: skip
    assert got["live_after_fault"] == 10.0 - 2.5  # e4 was published after the fault


def test_a_missing_event_is_silent_loss_unless_the_client_was_told() -> None:
    deliveries = [_d("e0", "1-0"), _d("e1", "2-0"), _d("e4", "5-0", connect=1)]
    assert _account(deliveries, [FIRST, RESUMED])["lost_silent"] == 1
    told = _account(deliveries, [FIRST, TOLD])
    assert (told["lost_silent"], told["lost_told"], told["lost_acked_before_fault"]) == (0, 1, 1)


def test_a_repeat_is_a_duplicate_unless_a_reset_came_between() -> None:
    deliveries = [
        _d("e0", "1-0"),
        _d("e1", "2-0"),
        _d("e2", "3-0"),
        _d("e4", "5-0"),
        _d("e2", "6-0", connect=1),
    ]
    assert _account(deliveries, [FIRST, RESUMED])["duplicated"] == 1
    across = _account(deliveries, [FIRST, TOLD])
    assert (across["duplicated"], across["duplicated_across_reset"]) == (0, 1)


def test_a_cursor_going_back_is_out_of_order() -> None:
    got = _account([_d("e0", "1-0"), _d("e2", "3-0"), _d("e1", "2-0"), _d("e4", "5-0")], [FIRST])
    assert got["out_of_order"] == 1


def test_another_users_event_is_foreign_and_an_unacknowledged_one_is_noted() -> None:
    deliveries = [_d("e0", "1-0"), _d("e1", "2-0"), _d("e2", "3-0"), _d("e3", "4-0"), _d("e4", "5-0"),
                  _d("lost-in-flight", "6-0")]  # fmt: skip
    got = _account(deliveries, [FIRST])
    assert (got["foreign"], got["unacknowledged"]) == (1, 1)
