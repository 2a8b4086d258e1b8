"""``herald publish`` with no event named, as an operator runs it against a real gateway:
NDJSON on standard input, sent in batches, one JSON answer per input line in input order,
exit code 1 when some line failed, 2 when the gateway refuses the credentials."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from tests.support.api import Api, ids, unique, until_marker
from tests.support.gateway import GatewayProcess
from tests.support.sse import open_stream

VALID = 1200  # more than two batches of 500


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def answers(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stdout.splitlines()]


async def herald_publish(
    url: str, stdin: bytes, *, secret: str | None, args: tuple[str, ...] = (), timeout: float = 60
) -> Run:
    """``python -m herald publish --url URL`` fed ``stdin``; waited for without blocking the
    loop (a stream the test holds keeps reading meanwhile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    if secret is not None:
        env["HERALD_JWT_SECRET"] = secret
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herald", "publish", "--url", url, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(stdin)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def event(user: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"event": "task.progress-updated", "scope": "user", "key": user, "data": {"n": n}, **extra}


def ndjson_with_mistakes(user: str) -> tuple[bytes, dict[int, str], list[int]]:
    """1,200 valid events (each with an idempotency key) with a blank line, a non-JSON line, a
    JSON array and an invalid event name among them. Returns the input, the line number of each
    mistake with the error code it must answer, and the line numbers of the valid events."""
    lines: list[str] = []
    mistakes: dict[int, str] = {}
    valid: list[int] = []
    for n in range(VALID):
        if n == 300:
            lines.append("   ")  # blank: skipped, answers nothing
        elif n == 550:
            lines.append('{"event": "task.progress-updated", "scope": ')
            mistakes[len(lines)] = "LINE_INVALID"
        elif n == 700:
            lines.append(orjson.dumps([event(user, -1)]).decode())
            mistakes[len(lines)] = "LINE_INVALID"
        elif n == 1000:
            lines.append(orjson.dumps(event(user, -2, event="Not A Name")).decode())
            mistakes[len(lines)] = "EVENT_INVALID"
        lines.append(orjson.dumps(event(user, n, idempotency_key=f"{user}-{n}")).decode())
        valid.append(len(lines))
    return ("\n".join(lines) + "\n").encode(), mistakes, valid


async def test_ndjson_answers_each_line_in_order_and_the_stream_gets_the_valid_events(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("u")
    stdin, mistakes, valid = ndjson_with_mistakes(user)
    answered = sorted([*mistakes, *valid])
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()  # connection.established
        run = await herald_publish(gateway.url, stdin, secret=gateway.secret)
        assert run.code == 1, run.stderr
        answers = run.answers()
        assert [a["line"] for a in answers] == answered, "one answer per non-blank line, in order"
        by_line = {a["line"]: a for a in answers}
        for line, code in mistakes.items():
            assert set(by_line[line]) == {"line", "error"}
            assert by_line[line]["error"]["code"] == code, by_line[line]
            assert by_line[line]["error"]["message"]
        accepted = [by_line[line] for line in valid]
        assert all(set(a) == {"line", "id", "duplicate", "coalesced"} for a in accepted)
        assert not any(a["duplicate"] or a["coalesced"] for a in accepted)
        cursors = [a["id"] for a in accepted]
        assert len(set(cursors)) == VALID
        assert f"{VALID} accepted, {len(mistakes)} failed" in run.stderr

        marker = await api.marker()
        received = await until_marker(stream, marker, timeout=30)
        assert ids(received) == cursors, "exactly the valid events, in input order, with the printed ids"
        assert [e.json()["n"] for e in received] == list(range(VALID))

        # The same file again: every event is a duplicate of its first append, and nothing is sent.
        rerun = await herald_publish(gateway.url, stdin, secret=gateway.secret)
        assert rerun.code == 1, rerun.stderr
        again = rerun.answers()
        assert [a["line"] for a in again] == answered
        again_by_line = {a["line"]: a for a in again}
        assert [again_by_line[line] for line in valid] == [
            {"line": line, "id": cursor, "duplicate": True, "coalesced": False}
            for line, cursor in zip(valid, cursors, strict=True)
        ]
        assert {line: again_by_line[line]["error"]["code"] for line in mistakes} == mistakes
        marker = await api.marker()
        assert await until_marker(stream, marker) == [], "a rerun sends nothing to the stream"


async def test_an_all_valid_input_exits_0(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    stdin = b"".join(orjson.dumps(event(user, n)) + b"\n" for n in range(3))
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        run = await herald_publish(gateway.url, stdin, secret=gateway.secret)
        assert run.code == 0, run.stderr
        answers = run.answers()
        assert [a["line"] for a in answers] == [1, 2, 3]
        assert "3 accepted, 0 failed" in run.stderr
        marker = await api.marker()
        received = await until_marker(stream, marker)
        assert ids(received) == [a["id"] for a in answers]


async def test_a_token_the_gateway_refuses_exits_2_with_a_message_and_sends_nothing(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("u")
    stdin = b"".join(orjson.dumps(event(user, n)) + b"\n" for n in range(3))
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        refused = await herald_publish(gateway.url, stdin, secret=None, args=("--token", "garbage"))
        assert refused.code == 2
        assert refused.stdout == ""
        assert "refused the token" in refused.stderr
        assert "401" in refused.stderr

        # A token that is valid but not a publisher's is refused the same way.
        not_publisher = await herald_publish(
            gateway.url, stdin, secret=None, args=("--token", gateway.token(user))
        )
        assert not_publisher.code == 2
        assert "403" in not_publisher.stderr

        # No token and no secret to mint one: the CLI says so before sending anything.
        no_secret = await herald_publish(gateway.url, stdin, secret=None)
        assert no_secret.code == 2
        assert "HERALD_JWT_SECRET" in no_secret.stderr

        marker = await api.marker()
        assert await until_marker(stream, marker) == [], "nothing was published"
