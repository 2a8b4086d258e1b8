from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.wire.cursor import Cursor, next_cursor, parse_cursor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1767225600000-0", Cursor(1767225600000, 0)),
        ("1-2", Cursor(1, 2)),
        (" 5-6 ", Cursor(5, 6)),
        ("", None),
        (None, None),
        ("abc", None),
        ("1767225600000", None),
        ("-1-0", None),
        ("1-0-0", None),
        ("1_0", None),
        ("1" * 16 + "-0", None),
        ("1-" + "9" * 40, None),
        ("٣-0", None),  # non-ASCII digits are not cursor digits
        ("kafka:domain-events:3:1200", None),
    ],
)
def test_parse_cursor(text: str | None, expected: Cursor | None) -> None:
    assert parse_cursor(text) == expected


@given(st.text(max_size=100))
def test_parse_cursor_never_raises(text: str) -> None:
    result = parse_cursor(text)
    assert result is None or parse_cursor(str(result)) == result


def test_next_cursor_is_monotonic_even_when_the_clock_steps_back() -> None:
    first = next_cursor(Cursor(100, 0), 200)
    assert first == Cursor(200, 0)
    assert next_cursor(first, 200) == Cursor(200, 1)
    assert next_cursor(Cursor(200, 1), 150) == Cursor(200, 2)
    assert next_cursor(Cursor(200, 2), 201) == Cursor(201, 0)


@given(st.lists(st.integers(min_value=0, max_value=10**13), min_size=1, max_size=50))
def test_cursors_strictly_increase_for_any_clock(clock: list[int]) -> None:
    cursor = Cursor(0, 0)
    for now in clock:
        nxt = next_cursor(cursor, now)
        assert nxt > cursor
        cursor = nxt
