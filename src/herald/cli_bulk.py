"""``herald publish`` with no event named: newline-delimited JSON from standard input, sent
through ``POST /api/v1/events/batch`` in batches (up to 500 events, under 1 MiB each).

Every input line answers one output line, in input order, as JSON: ``{"line": 3, "id":
…, "duplicate": …, "coalesced": …}`` or ``{"line": 3, "error": {"code": …, "message":
…}}``. Blank lines are skipped. What the gateway calls retriable (the bus away: 503, or
``BUS_UNAVAILABLE`` items) is sent again after a pause, a bounded number of times; the
failed items of a batch are the tail of it (docs/api.md), so resending them keeps the
order. Give events an ``idempotency_key`` to make a rerun of the whole file safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import orjson

BATCH_PATH = "/api/v1/events/batch"
MAX_EVENTS = 500
#: The gateway's limit is 1 MiB of body; the envelope and commas fit in what is left.
MAX_BODY_BYTES = 1024 * 1024 - 1024


class Refused(Exception):
    """The gateway refused the credentials: nothing more will be accepted."""


@dataclass(slots=True)
class BulkOutcome:
    accepted: int = 0
    failed: int = 0
    retries: int = 0


@dataclass(slots=True)
class _Batch:
    #: Every input line this batch answers, in order; those refused here, with their error.
    order: list[int] = field(default_factory=list)
    refused: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: The lines to send, and their events.
    lines: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    size: int = 0

    def fits(self, body: bytes) -> bool:
        return len(self.bodies) < MAX_EVENTS and self.size + len(body) + 1 <= MAX_BODY_BYTES

    def refuse(self, line: int, code: str, message: str) -> None:
        self.order.append(line)
        self.refused[line] = {"code": code, "message": message}

    def add(self, line: int, body: bytes) -> None:
        self.order.append(line)
        self.lines.append(line)
        self.bodies.append(body)
        self.size += len(body) + 1


class BulkPublisher:
    def __init__(
        self,
        client: httpx.Client,
        token: str,
        out: TextIO,
        *,
        attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        self._out = out
        self._attempts = attempts
        self._sleep = sleep
        self.outcome = BulkOutcome()

    def publish(self, lines: Iterable[str]) -> BulkOutcome:
        batch = _Batch()
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                event = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                batch.refuse(number, "LINE_INVALID", f"not JSON: {exc}")
                continue
            if not isinstance(event, dict):
                batch.refuse(number, "LINE_INVALID", "each line must be a JSON object")
                continue
            body = orjson.dumps(event)
            if len(body) > MAX_BODY_BYTES:
                batch.refuse(number, "EVENT_TOO_LARGE", "the line is over the batch body limit")
                continue
            if not batch.fits(body):
                self._send(batch)
                batch = _Batch()
            batch.add(number, body)
        if batch.order:
            self._send(batch)
        return self.outcome

    def _send(self, batch: _Batch) -> None:
        """Send ``batch``, resending what the gateway calls retriable; then write every line's
        answer, in input order."""
        answers: dict[int, dict[str, Any]] = {line: {"error": e} for line, e in batch.refused.items()}
        lines, bodies = batch.lines, batch.bodies
        for attempt in range(self._attempts if lines else 0):
            last = attempt + 1 == self._attempts
            status, answer, retry_after = self._post(bodies)
            if status in (401, 403):
                raise Refused(f"{status} {answer.get('code')}: {answer.get('message')}")
            if status in (200, 207):
                retry_lines: list[int] = []
                retry_bodies: list[bytes] = []
                for line, body, result in zip(lines, bodies, answer["results"], strict=True):
                    error = result.get("error")
                    if error is not None and error.get("retriable") and not last:
                        retry_lines.append(line)
                        retry_bodies.append(body)
                    else:
                        answers[line] = result
                lines, bodies = retry_lines, retry_bodies
            elif status < 500 or last:
                answers.update({line: {"error": _error_of(answer, status)} for line in lines})
                lines, bodies = [], []
            if not lines:
                break
            self._pause(attempt, retry_after)
        for line in batch.order:
            result = answers[line]
            if "error" in result:
                self._fail(line, result["error"])
            else:
                self._accept(line, result)

    def _post(self, bodies: list[bytes]) -> tuple[int, dict[str, Any], float]:
        payload = b'{"events":[' + b",".join(bodies) + b"]}"
        try:
            response = self._client.post(BATCH_PATH, content=payload, headers=self._headers)
        except httpx.TransportError as exc:
            return 503, {"code": "UNREACHABLE", "message": str(exc) or type(exc).__name__}, 1.0
        try:
            answer = response.json()
        except ValueError:
            answer = {"code": "HTTP_ERROR", "message": response.text[:200]}
        retry_after = float(response.headers.get("retry-after", "1") or 1)
        return response.status_code, answer if isinstance(answer, dict) else {}, retry_after

    def _pause(self, attempt: int, retry_after: float) -> None:
        self.outcome.retries += 1
        self._sleep(min(30.0, max(retry_after, 0.25 * 2**attempt)))

    def _accept(self, line: int, result: dict[str, Any]) -> None:
        self.outcome.accepted += 1
        self._write({"line": line, **result})

    def _fail(self, line: int, error: dict[str, Any]) -> None:
        self.outcome.failed += 1
        self._write({"line": line, "error": error})

    def _write(self, record: dict[str, Any]) -> None:
        self._out.write(orjson.dumps(record).decode() + "\n")


def _error_of(answer: dict[str, Any], status: int) -> dict[str, Any]:
    return {
        "code": str(answer.get("code", f"HTTP_{status}")),
        "message": str(answer.get("message", "")),
        "status": status,
    }
