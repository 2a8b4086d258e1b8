from __future__ import annotations

from herald.auth.stream_tokens import MemoryStreamTokenLeases


async def test_a_token_holds_one_stream_until_released() -> None:
    leases = MemoryStreamTokenLeases(clock=lambda: 100.0)
    assert await leases.acquire("u", "t1", 160.0)
    assert not await leases.acquire("u", "t1", 160.0)
    assert await leases.acquire("u", "t2", 160.0)
    await leases.release("u", "t1")
    await leases.release("u", "t1")  # idempotent
    assert await leases.acquire("u", "t1", 160.0)


async def test_leases_of_expired_tokens_are_forgotten() -> None:
    now = [100.0]
    leases = MemoryStreamTokenLeases(clock=lambda: now[0])
    for n in range(1000):
        assert await leases.acquire("u", f"t{n}", 160.0 + n / 1000)
    assert len(leases) == 1000
    now[0] = 170.0
    assert await leases.acquire("u", "fresh", 230.0)
    assert len(leases) == 1, "only the fresh lease is left"
