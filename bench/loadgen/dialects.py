"""How a load-generator client opens (and resumes) a stream on each kind of server.

A spec is ``(user id, token, resource)``: the resource is the one the stream
follows (``doc:r7``) or empty. Herald and the Python baselines take the token
as a bearer header, the resource as ``?subscribe=`` and the position as
``Last-Event-ID``; Centrifugo takes a connect request as JSON in the
``cf_connect`` query parameter (what a browser's EventSource sends), with its
subscriptions in the token's ``channels`` claim and each channel's position
in ``subs``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from bench.common import STREAM_PATH
from bench.loadgen.client import CentrifugoClient, SSEClient, stream_request

#: Centrifugo's unidirectional SSE endpoint (its default ``uni_sse.handler_prefix``).
CENTRIFUGO_STREAM_PATH = "/connection/uni_sse"


class HeraldStreams:
    client = SSEClient

    def __init__(self, path: str = STREAM_PATH) -> None:
        self.path = path

    def request(self, host: str, port: int, spec: tuple[str, ...], resume: Any) -> bytes:
        resource = spec[2] if len(spec) > 2 else ""
        path = f"{self.path}?subscribe={resource}" if resource else self.path
        return stream_request(host, port, path, spec[1], resume)


class CentrifugoStreams:
    client = CentrifugoClient

    def request(self, host: str, port: int, spec: tuple[str, ...], resume: Any) -> bytes:
        connect: dict[str, Any] = {"token": spec[1]}
        if resume:
            connect["subs"] = {
                channel: {"recover": True, "epoch": epoch, "offset": offset}
                for channel, (epoch, offset) in resume.items()
            }
        query = quote(json.dumps(connect, separators=(",", ":")), safe="")
        return stream_request(host, port, f"{CENTRIFUGO_STREAM_PATH}?cf_connect={query}", None, None)


def streams(dialect: str, path: str = STREAM_PATH) -> HeraldStreams | CentrifugoStreams:
    if dialect == "centrifugo":
        return CentrifugoStreams()
    return HeraldStreams(path)
