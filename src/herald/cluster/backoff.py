"""How long a Redis client waits before trying to reconnect: pure arithmetic."""

from __future__ import annotations

import random


def reconnect_delay(
    attempt: int, *, base: float = 0.05, cap: float = 1.0, rand: random.Random | None = None
) -> float:
    """Seconds before reconnect ``attempt`` (0 for the first): exponential, capped,
    with "equal jitter" so the nodes of a cluster do not reconnect in lockstep
    while never retrying sooner than half the computed delay."""
    step = min(cap, base * (2 ** min(attempt, 30)))
    uniform = rand.uniform if rand is not None else random.uniform
    jitter = uniform(0, step / 2)
    return float(step / 2 + jitter)
