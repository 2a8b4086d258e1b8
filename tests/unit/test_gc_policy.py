from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from herald.server.gc_policy import GcPolicy


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_freezes_after_a_burst_of_opened_streams_only() -> None:
    opened = [0]
    policy = GcPolicy(lambda: opened[0], after=100)
    policy.freeze_now()
    assert gc.get_freeze_count() > 0
    opened[0] = 99
    assert not policy.tick()
    opened[0] = 100
    assert policy.tick()
    assert not policy.tick(), "nothing new opened since"
    opened[0] = 250
    assert policy.tick()
