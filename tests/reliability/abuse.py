# ruff: noqa: E501 - tables of raw requests read best one per line
"""Hostile clients, run as a process of their own (as an attacker would be) against a node:

    python -m tests.reliability.abuse ATTACK PORT SECONDS [TOKEN]

Each attack runs for at most SECONDS (and a bounded number of connections), then prints
one JSON line of what it saw. Attacks: header-flood, slowloris, connect-flood, smuggling,
oversized, tokens. (Clients that never read are opened by the test itself: it must see
the node close them.) Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from herald.config import Settings
from tests.reliability.tokens import b64, sign_hs256

HOST = "127.0.0.1"
HEALTH = b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\n\r\n"
#: The node's default ``HERALD_KEEPALIVE_TIMEOUT_SECONDS``: an idle keep-alive connection closes then.
KEEPALIVE_SECONDS: float = Settings.model_fields["keepalive_timeout_seconds"].default
#: The address the flood claims (a trusted proxy's X-Forwarded-For); documentation range.
ATTACKER = "192.0.2.66"


async def _answer(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def _statuses(answer: bytes) -> list[int]:
    out = []
    start = 0
    while (i := answer.find(b"HTTP/1.1 ", start)) != -1:
        out.append(int(answer[i + 9 : i + 12]))
        start = i + 12
    return out


async def _for(seconds: float, workers: int, one: Callable[[], Awaitable[None]]) -> None:
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            await one()

    await asyncio.gather(*(worker() for _ in range(workers)))


async def header_flood(port: int, seconds: float, _: str) -> dict[str, Any]:
    """Connections that send header lines without end: each must get 431 and be closed."""
    seen: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\n")
            line = b"x-flood: " + b"a" * 100 + b"\r\n"
            for _ in range(2000):  # 220 KB at most, far past the 16 KiB limit
                if reader.at_eof():
                    break
                writer.write(line * 10)
                await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            seen[str(_statuses(answer)[:1] or ["closed"])] += 1
        except (ConnectionError, TimeoutError):
            seen["reset"] += 1
        finally:
            writer.close()

    await _for(seconds, 20, one)
    return {"outcomes": dict(seen)}


async def slowloris(port: int, seconds: float, _: str) -> dict[str, Any]:
    """Connections that trickle their headers or their body a byte at a time: the node closes
    each within its header timeout (plus as long again for a body)."""
    lifetimes: list[float] = []
    kinds: collections.Counter[str] = collections.Counter()

    async def one(kind: str) -> None:
        start = time.monotonic()
        reader, writer = await asyncio.open_connection(HOST, port)
        if kind == "body":
            writer.write(b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n")
            trickle = b"{"
        else:
            writer.write(b"GET /api/v1/events/health HTTP/1.1\r\n")
            trickle = b"x"
        try:
            while not reader.at_eof() and time.monotonic() - start < 60:
                writer.write(trickle)
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1), 0.5) == b"":
                        break
                except TimeoutError:
                    continue
        except ConnectionError:
            pass
        finally:
            writer.close()
        lifetimes.append(time.monotonic() - start)
        kinds[kind] += 1

    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        while time.monotonic() < deadline:
            await one("body" if n % 2 else "headers")

    await asyncio.gather(*(worker(n) for n in range(200)))
    return {"connections": dict(kinds), "max_lifetime_s": round(max(lifetimes), 3),
            "median_lifetime_s": round(sorted(lifetimes)[len(lifetimes) // 2], 3)}  # fmt: skip


async def connect_flood(port: int, seconds: float, _: str) -> dict[str, Any]:
    """Up to 10,000 stream requests a second from one client address, each on a new
    connection, for ``seconds``: the node refuses by address before any token is checked."""
    statuses: collections.Counter[str] = collections.Counter()
    target = int(10_000 * seconds)
    request = (
        f"GET /api/v1/events/stream HTTP/1.1\r\nhost: x\r\nx-forwarded-for: {ATTACKER}\r\n"
        "authorization: Bearer not-a-token\r\n\r\n"
    ).encode()
    sent = 0
    started = time.monotonic()
    deadline = started + seconds

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError as exc:
            statuses[f"connect:{type(exc).__name__}"] += 1
            return
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readline(), 5)
            statuses[head[9:12].decode() or "closed"] += 1
        except (ConnectionError, TimeoutError) as exc:
            statuses[type(exc).__name__] += 1
        finally:
            writer.close()

    pending: set[asyncio.Task[None]] = set()
    while time.monotonic() < deadline and sent < target:
        # Pace at 10,000/s, at most 500 in flight (the client's own sockets are bounded too).
        due = int((time.monotonic() - started) * 10_000) - sent
        for _ in range(max(0, min(due, 500 - len(pending)))):
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*pending)
    elapsed = time.monotonic() - started
    return {"connects": sent, "seconds": round(elapsed, 3), "rate_per_s": round(sent / elapsed),
            "statuses": dict(statuses)}  # fmt: skip


#: (name, bytes, statuses the node must answer with). No vector may get the inner health
#: request answered on its own: that would be a smuggled request.
SMUGGLING: list[tuple[str, bytes, list[int]]] = [
    ("CL+TE", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n"
              b"0\r\n\r\n" + HEALTH, [400]),
    ("TE+CL", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"
              b"0\r\n\r\n" + HEALTH, [400]),
    ("duplicate Content-Length", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n"
                                 b"content-length: 48\r\n\r\n" + HEALTH, [400]),
    ("Content-Length list", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 0, 48\r\n\r\n" + HEALTH,
     [400]),
    ("obs-fold Transfer-Encoding", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: identity\r\n"
                                   b" chunked\r\ncontent-length: 0\r\n\r\n" + HEALTH, [400]),
    ("obs-fold header", b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\nx-a: a\r\n b\r\n\r\n", [400]),
    ("bare LF", b"GET /api/v1/events/health HTTP/1.1\nhost: x\n\n" + HEALTH, [400]),
    ("bare CR", b"GET /api/v1/events/health HTTP/1.1\rhost: x\r\r\n", [400]),
    ("space before colon", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\n\r\n"
                           b"0\r\n\r\n" + HEALTH, [400]),
    ("Transfer-Encoding xchunked", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: xchunked\r\n\r\n"
                                   b"0\r\n\r\n" + HEALTH, [400]),
    ("chunked, identity", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n"
                          b"0\r\n\r\n" + HEALTH, [400]),
    ("chunk size overflow", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                            b"fffffffffffffffffffff\r\n", [400]),
    ("LF in chunk extension", b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                              b"2;\nxx\r\n0\r\n\r\n", [400]),
    ("NUL in a header", b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\n\r\n", [400]),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [400]),
    ("GET with a body holding a request", b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\ncontent-length: "
                                          + str(len(HEALTH)).encode() + b"\r\n\r\n" + HEALTH, [200]),
    ("stream then a pipelined request", b"GET /api/v1/events/stream HTTP/1.1\r\nhost: x\r\n\r\n" + HEALTH, [401]),
]  # fmt: skip


async def smuggling(port: int, seconds: float, _: str) -> dict[str, Any]:
    results: dict[str, list[int]] = {}
    rounds = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or rounds == 0:
        for name, raw, _expected in SMUGGLING:
            # Read to the end: a request answered 200 keeps its connection until the node's
            # keep-alive timeout, so wait past that; an equal bound raced the close.
            answer = await _answer(port, raw, timeout=KEEPALIVE_SECONDS + 5.0)
            got = _statuses(answer)
            if b'"status":"ok"' in answer and name != "GET with a body holding a request":
                got.append(-1)  # the inner request was answered: smuggled
            results[name] = got
        rounds += 1
    return {"rounds": rounds, "answers": results}


async def oversized(port: int, seconds: float, _: str) -> dict[str, Any]:
    cases = {
        "one 20 KiB header": b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_480 + b"\r\n\r\n",
        "150 headers": b"GET /api/v1/events/health HTTP/1.1\r\nhost: x\r\n" + b"x-h: 1\r\n" * 150 + b"\r\n",
        "20 KiB URL": b"GET /api/v1/events/health?" + b"a" * 20_480 + b" HTTP/1.1\r\nhost: x\r\n\r\n",
        "2 MiB body": b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 2097152\r\n\r\n" + b"a" * 2_097_152,
        "2 MiB chunked body": b"POST /api/v1/events HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"100000\r\n" + b"a" * 0x100000 + b"\r\n" + b"100000\r\n" + b"a" * 0x100000 + b"\r\n0\r\n\r\n",
    }  # fmt: skip
    results: dict[str, list[int]] = {}
    rounds = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or rounds == 0:
        for name, raw in cases.items():
            try:
                results[name] = _statuses(await _answer(port, raw))
            except ConnectionError:  # closed while we were still sending: read what came
                results[name] = results.get(name, [])
        rounds += 1
    return {"rounds": rounds, "answers": results}


def forged_tokens(valid: str) -> dict[str, str]:
    """Every ``alg`` variant and tampered claims; ``valid`` is a real user token."""
    head, claims, signature = valid.split(".")
    exp = int(time.time()) + 600
    body = {"sub": "victim", "exp": exp, "roles": ["publisher"], "resources": ["novel:*"]}
    forged = b64(json.dumps(body).encode())

    def header(fields: dict[str, Any]) -> str:
        return b64(json.dumps(fields).encode())

    out = {
        "alg none": f"{header({'alg': 'none', 'typ': 'JWT'})}.{forged}.",
        "alg None": f"{header({'alg': 'None'})}.{forged}.",
        "alg NONE, signature kept": f"{header({'alg': 'NONE'})}.{claims}.{signature}",
        "alg missing": f"{header({'typ': 'JWT'})}.{claims}.{signature}",
        "alg empty": f"{header({'alg': ''})}.{claims}.{signature}",
        "claims tampered, signature kept": f"{head}.{forged}.{signature}",
        "signature stripped": f"{head}.{claims}.",
        "signature of another token": f"{head}.{forged}.{valid.rsplit('.', 1)[1]}",
        "wrong secret": sign_hs256(body, secret="guessed-secret"),
        "two segments": f"{head}.{claims}",
        "garbage": "not.a.token",
        "expired": sign_hs256({**body, "exp": int(time.time()) - 10}),
        # Key-selection headers must not pick the key: signed with the attacker's own secret.
        "kid path traversal": sign_hs256(body, header={"alg": "HS256", "kid": "../../dev/null"}, secret="x"),
        "jku elsewhere": sign_hs256(body, header={"alg": "HS256", "jku": "http://127.0.0.1:1/k"}, secret="x"),
        "embedded jwk": sign_hs256(
            body, header={"alg": "HS256", "jwk": {"kty": "oct", "k": b64(b"x")}}, secret="x"
        ),
    }
    for alg in ("HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA"):
        # Signed with the shared secret as an HMAC key (key confusion), under an alg not allowed.
        out[f"alg {alg}"] = sign_hs256(body, header={"alg": alg, "typ": "JWT"})
    return out


async def tokens(port: int, seconds: float, valid: str) -> dict[str, Any]:
    forged = forged_tokens(valid)
    answers: dict[str, list[int]] = {}
    rounds = 0
    deadline = time.monotonic() + seconds
    # Each request claims an address of its own (through the trusted proxy), so what answers
    # is the token check, not the per-address connect rate this loop would soon exhaust.
    addresses = itertools.cycle(f"198.51.100.{i}" for i in range(1, 255))
    while time.monotonic() < deadline or rounds == 0:
        for name, token in forged.items():
            got = []
            for raw in (
                f"GET /api/v1/events/stream HTTP/1.1\r\nhost: x\r\nx-forwarded-for: {next(addresses)}\r\n"
                f"authorization: Bearer {token}\r\n\r\n",
                f"GET /api/v1/events/stream?token={token} HTTP/1.1\r\nhost: x\r\n"
                f"x-forwarded-for: {next(addresses)}\r\n\r\n",
                f"POST /api/v1/events HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {token}\r\n"
                'content-type: application/json\r\ncontent-length: 49\r\n\r\n{"event":"a.b-c","scope":"global","data":{"x":1}}',
                f"POST /api/v1/auth/sse-token HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {token}\r\n"
                "content-length: 0\r\n\r\n",
            ):
                got.extend(_statuses(await _answer(port, raw.encode())))
            answers[name] = got
        rounds += 1
    return {"rounds": rounds, "answers": answers}


ATTACKS: dict[str, Callable[[int, float, str], Awaitable[dict[str, Any]]]] = {
    "header-flood": header_flood,
    "slowloris": slowloris,
    "connect-flood": connect_flood,
    "smuggling": smuggling,
    "oversized": oversized,
    "tokens": tokens,
}


def main() -> None:
    name, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    token = sys.argv[4] if len(sys.argv) > 4 else ""
    result = asyncio.run(ATTACKS[name](port, seconds, token))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
