"""Whether a series sampled over a soak levels off: pure arithmetic, table-tested."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 for fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx = sum(xs) / n
    my = sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


@dataclass(frozen=True)
class Levelling:
    first_third_growth: float
    last_third_growth: float
    tolerance: float

    @property
    def levels_off(self) -> bool:
        """The last third grows by at most half what the first grew, or by no more than
        ``tolerance`` (noise) over its span."""
        return self.last_third_growth <= max(0.5 * self.first_third_growth, self.tolerance)


def levelling(xs: Sequence[float], ys: Sequence[float], tolerance: float) -> Levelling:
    """Growth (slope × span) of the first and last thirds of the series."""
    third = max(2, len(xs) // 3)
    first_x, first_y = xs[:third], ys[:third]
    last_x, last_y = xs[-third:], ys[-third:]
    return Levelling(
        first_third_growth=slope(first_x, first_y) * (first_x[-1] - first_x[0]),
        last_third_growth=slope(last_x, last_y) * (last_x[-1] - last_x[0]),
        tolerance=tolerance,
    )
