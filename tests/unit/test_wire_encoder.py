"""The SSE encoder against the WHATWG parsing rules, as tables and as a property."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import EventSource
from hypothesis import given
from hypothesis import strategies as st

from herald.wire.encoder import HEARTBEAT, encode, event_frame, retry_frame


def parse_with_httpx_sse(payload: bytes) -> list[tuple[str, str, str]]:
    """(event, data, id) as an independent parser (httpx-sse) reads them."""
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=payload)
    return [(sse.event, sse.data, sse.id) for sse in EventSource(response).iter_sse()]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"data": "x"}, b"data: x\n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": " lead"}, b"data:  lead\n\n"),
        ({"event": "task.created", "data": "{}"}, b"event: task.created\ndata: {}\n\n"),
        ({"event": "a\r\nb", "data": "x"}, b"event: ab\ndata: x\n\n"),
        ({"id": "1-0\n\rid: 2", "data": "x"}, b"id: 1-0id: 2\ndata: x\n\n"),
        ({"id": "1\x00-0", "data": "x"}, b"id: 1-0\ndata: x\n\n"),
        ({"retry": 2500}, b"retry: 2500\n\n"),
        ({"retry": -5}, b"retry: 0\n\n"),
        ({"comment": "ping"}, b": ping\n\n"),
        ({"comment": "a\nb"}, b": a\n: b\n\n"),
    ],
)
def test_encode_table(fields: dict[str, object], expected: bytes) -> None:
    assert encode(**fields) == expected  # type: ignore[arg-type]


def test_event_frame_is_one_block_with_id_event_and_data() -> None:
    frame = event_frame("17-3", "task.created", b'{"a":1}')
    assert frame == b'id: 17-3\nevent: task.created\ndata: {"a":1}\n\n'
    assert parse_with_httpx_sse(frame) == [("task.created", '{"a":1}', "17-3")]


def test_retry_and_heartbeat_frames_carry_no_event() -> None:
    assert retry_frame(3000) == b"retry: 3000\n\n"
    assert parse_with_httpx_sse(HEARTBEAT) == []


# Text the format can carry: it normalises CR and CRLF to LF in data, so the
# property compares against that normalisation; names and ids lose CR/LF/NUL.
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


def _normalised(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


@given(data=_text, event=_text, id_=_text)
def test_any_strings_round_trip_through_an_independent_parser(data: str, event: str, id_: str) -> None:
    payload = encode(data=data, event=event or None, id=id_)
    parsed = parse_with_httpx_sse(payload)
    assert len(parsed) == 1
    got_event, got_data, got_id = parsed[0]
    assert got_data == _normalised(data)
    expected_event = event.replace("\r", "").replace("\n", "")
    assert got_event == (expected_event or "message")
    assert got_id == id_.replace("\r", "").replace("\n", "").replace("\x00", "")


@given(st.lists(st.tuples(_text, st.from_regex(r"[a-z]+\.[a-z]+(-[a-z]+)?", fullmatch=True)), max_size=10))
def test_a_sequence_of_frames_parses_back_in_order(items: list[tuple[str, str]]) -> None:
    payload = b"".join(encode(data=data, event=name, id=f"{i}-0") for i, (data, name) in enumerate(items))
    parsed = parse_with_httpx_sse(payload)
    assert parsed == [(name, _normalised(data), f"{i}-0") for i, (data, name) in enumerate(items)]
