"""The soak's verdict arithmetic: a series that rises then flattens levels off; one that keeps
rising does not; noise within the tolerance passes."""

from __future__ import annotations

import pytest

from tests.reliability.levels import levelling, slope

XS = [float(x) for x in range(12)]


def test_slope_of_a_line_and_of_too_few_points() -> None:
    assert slope(XS, [3 * x + 1 for x in XS]) == pytest.approx(3.0)
    assert slope([1.0], [5.0]) == 0.0


@pytest.mark.parametrize(
    ("ys", "tolerance", "levels_off"),
    [
        ([10, 20, 30, 40, 45, 48, 49, 50, 50, 50, 50, 50], 1.0, True),  # warms up, then flat
        ([float(10 * x) for x in range(12)], 1.0, False),  # a steady leak
        ([50, 51, 50, 52, 50, 51, 50, 52, 51, 50, 52, 51], 3.0, True),  # flat with noise
        ([50, 50, 50, 50, 50, 50, 50, 50, 60, 70, 80, 90], 3.0, False),  # starts leaking late
    ],
)
def test_levelling(ys: list[float], tolerance: float, levels_off: bool) -> None:
    assert levelling(XS, [float(y) for y in ys], tolerance).levels_off is levels_off
