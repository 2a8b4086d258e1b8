"""Fuzz targets shared by the hypothesis properties (tests/reliability/test_fuzz.py) and
the coverage-guided atheris runs (tests/reliability/atheris_fuzz.py).

Each target takes raw bytes or text from the fuzzer and either returns normally or
raises one of the errors that part documents; anything else is a finding.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from herald.adapter import Adapter, default_mapping
from herald.adapter.adapter import PoisonRecord
from herald.adapter.loading import MappingInvalid, parse_mapping
from herald.auth.stream_tokens import StreamTokens, stream_key
from herald.auth.tokens import TokenVerifier, bearer_token
from herald.config import Settings
from herald.errors import AuthError, EventTooLarge, InvalidEvent
from herald.events.message import encode_data
from herald.sources.incoming import parse_event_json
from herald.wire.cursor import MAX_CURSOR_CHARS, parse_cursor
from herald.wire.encoder import encode
from tests.support.gateway import SECRET
from tests.support.sse import SSEParser

ADAPTER = Adapter(default_mapping())
SETTINGS = Settings(jwt_secret=SECRET)
VERIFIER = TokenVerifier(SETTINGS)
STREAM_TOKENS = StreamTokens(stream_key(None, SECRET), leases=None)  # type: ignore[arg-type]
MAX_EVENT_BYTES = 65536


def sse_roundtrip(data: str, event: str, id: str, retry: int, comment: str) -> None:
    """Encode every field, parse it back as a browser would: the same event, no smuggled field."""
    try:
        frame = encode(data=data, event=event, id=id, retry=retry, comment=comment)
    except UnicodeEncodeError:
        # Lone surrogates have no UTF-8 form; nothing outside reaches the encoder with one
        # (routing keys refuse them, data goes through orjson, headers are latin-1).
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in data + event + id + comment)
        return
    parser = SSEParser()
    blocks = parser.feed(frame.decode())
    assert len(blocks) == 1, frame
    names = [name for name, _ in blocks[0].fields]
    assert names == ["id", "event", *(["data"] * names.count("data")), "retry"], names
    parsed = parser.to_event(blocks[0])
    assert parsed is not None
    assert parsed.event == event.replace("\r", "").replace("\n", "")
    assert parsed.id == id.translate(str.maketrans("", "", "\r\n\0"))
    assert parsed.data == data.replace("\r\n", "\n").replace("\r", "\n")
    assert parsed.retry == max(0, retry)


def cursor_text(text: str) -> None:
    cursor = parse_cursor(text)
    if cursor is not None:
        assert len(text) <= MAX_CURSOR_CHARS
        assert parse_cursor(str(cursor)) == cursor
        assert cursor.ms >= 0
        assert cursor.seq >= 0


def bearer_header(header: str) -> None:
    try:
        token = bearer_token(header)
    except AuthError:
        return
    assert token is None or token == token.strip()


def app_token(token: str) -> None:
    """Any text as a bearer JWT: refused with an AuthError (a Principal needs our key)."""
    try:
        asyncio.run(VERIFIER.verify(token))
    except AuthError:
        return
    raise AssertionError(f"an unsigned token was accepted: {token[:80]!r}")


def signed_claims(claims: Any, header: dict[str, Any] | None = None) -> None:
    """Claims of any shape, correctly signed: a Principal with valid ids, or an AuthError."""
    from tests.reliability.tokens import sign_hs256

    try:
        principal = asyncio.run(VERIFIER.verify(sign_hs256(claims, header=header)))
    except AuthError:
        return
    from herald.events.names import ROUTING_KEY

    assert ROUTING_KEY.fullmatch(principal.user_id)
    assert principal.session_id is None or ROUTING_KEY.fullmatch(principal.session_id)
    assert all(isinstance(r, str) for r in principal.resources)


def stream_token(token: str) -> None:
    try:
        STREAM_TOKENS.verify(token)
    except AuthError:
        return
    raise AssertionError(f"an unsigned stream token was accepted: {token[:80]!r}")


def domain_record(raw: bytes) -> None:
    """Bytes as a Kafka record value or an outbox payload."""
    try:
        message = ADAPTER.map_raw(raw, source="fuzz")
    except PoisonRecord:
        return
    if message is not None:
        _encoded(message)


def domain_record_object(record: dict[str, Any]) -> None:
    try:
        message = ADAPTER.map(record, source="fuzz")
    except PoisonRecord:
        return
    if message is not None:
        _encoded(message)


def publish_body(raw: bytes | str) -> None:
    """A publish body as the Redis sources take it (the HTTP one goes through schemathesis)."""
    try:
        incoming = parse_event_json(raw, source="fuzz")
    except InvalidEvent:
        return
    _encoded(incoming.message)


def mapping_text(text: str) -> None:
    try:
        parse_mapping(text)
    except MappingInvalid:
        return


def _encoded(message: Any) -> None:
    try:
        body = encode_data(message, MAX_EVENT_BYTES)
    except (InvalidEvent, EventTooLarge):
        return
    decoded = json.loads(body)
    assert decoded["_scope"] == message.scope
    assert b"\n" not in body
    assert b"\r" not in body
