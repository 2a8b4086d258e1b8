"""Baseline (a): the gateway a Python team would typically write.

FastAPI + sse-starlette's ``EventSourceResponse`` on uvicorn (uvloop,
httptools), one ``asyncio.Queue`` per connection, an async generator
yielding dicts as the sse-starlette README shows, ``ping=15`` for
heartbeats. Same endpoints and semantics as Herald: a JWT checked on
connect, ``POST /api/v1/events`` (publisher role) that broadcasts a
``global`` event or targets a ``user``, the same ``id:``/``event:``/``data:``
frames (``sep="\\n"`` so the bytes match Herald's). No replay: a
``Last-Event-ID`` is accepted and ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse

SECRET = os.environ.get("BENCH_SECRET", "")
app = FastAPI()
queues: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
everyone: set[asyncio.Queue[dict[str, Any]]] = set()
_last = [0, 0]


class PublishRequest(BaseModel):
    event: str
    scope: str
    key: str | None = None
    data: dict[str, Any]


def _claims(authorization: str | None) -> dict[str, Any]:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing bearer token")
    try:
        claims: dict[str, Any] = jwt.decode(
            authorization[7:], SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError as exc:
        raise HTTPException(401, str(exc)) from None
    return claims


def _next_id() -> str:
    now = int(time.time() * 1000)
    if now > _last[0]:
        _last[0], _last[1] = now, 0
    else:
        _last[1] += 1
    return f"{_last[0]}-{_last[1]}"


@app.get("/api/v1/events/stream")
async def stream(request: Request, authorization: str | None = Header(None)) -> EventSourceResponse:
    user = str(_claims(authorization)["sub"])
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def events() -> AsyncIterator[dict[str, Any]]:
        everyone.add(queue)
        queues.setdefault(user, set()).add(queue)
        try:
            yield {
                "retry": 3000,
                "id": f"{_last[0]}-{_last[1]}",
                "event": "connection.established",
                "data": orjson.dumps({"user": user, "_scope": "connection", "_version": "1.0"}).decode(),
            }
            while True:
                yield await queue.get()
        finally:
            everyone.discard(queue)
            mine = queues.get(user)
            if mine is not None:
                mine.discard(queue)
                if not mine:
                    del queues[user]

    return EventSourceResponse(events(), ping=15, sep="\n")


@app.post("/api/v1/events", status_code=202)
async def publish(body: PublishRequest, authorization: str | None = Header(None)) -> dict[str, Any]:
    if "publisher" not in _claims(authorization).get("roles", []):
        raise HTTPException(403, "publishing needs the publisher role")
    event_id = _next_id()
    message = {
        "id": event_id,
        "event": body.event,
        "data": orjson.dumps({**body.data, "_scope": body.scope, "_version": "1.0"}).decode(),
    }
    targets = everyone if body.scope == "global" else queues.get(body.key or "", set())
    for queue in targets:
        queue.put_nowait(message)
    return {"id": event_id, "duplicate": False}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", log_level="warning", access_log=False, backlog=4096
    )
    server = uvicorn.Server(config)
    print(orjson.dumps({"event": "herald_listening", "host": host, "port": port}).decode(), flush=True)
    server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
