"""When will the cells be ready? A forecast from the lab's in-process cell counts.

The model: a batch in culture grows exponentially, N(t) = N0 · e^(r·t), with t the day of
expansion, so ln N is a straight line in t. It is fitted by ordinary least squares to the
logarithms of the viable-cell counts, ln(total × viability). The day the batch holds
`target` viable cells is where the fitted line reaches ln(target). Its 90 % prediction
interval comes from the prediction interval of a new log count at each day,

    ŷ(t) ± t(0.95, n−2) · s · √(1 + 1/n + (t − t̄)² / Σ(tᵢ − t̄)²),

as the earliest day the interval's upper edge reaches ln(target) and the latest day its lower
edge does.

Assumptions: growth is exponential over the days counted and the days forecast (no lag phase
still to come, no plateau before the target); the counting error is independent between
counts and of the same size on the log scale (counts of the same relative precision); at
least three counts. A batch that is not growing gives no forecast.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_COUNTS = 3


@dataclass(frozen=True)
class GrowthForecast:
    target_cells: int
    day: float  # the expansion day the fitted growth reaches the target
    earliest: float  # the 90 % prediction interval of that day
    latest: float | None  # None: the slow edge does not reach the target within the horizon
    doubling_days: float
    counts: int


def forecast_interval_words(forecast: GrowthForecast) -> str:
    """ "day 15 to 19", or "day 15 to beyond" when the slow edge never reaches the target."""
    slow_edge = f"{forecast.latest:.0f}" if forecast.latest is not None else "beyond"
    return f"day {forecast.earliest:.0f} to {slow_edge}"


def growth_forecast(
    *,
    points: list[tuple[float, float]],
    target_cells: float,
    level: float = 0.90,
    horizon_days: float = 120,
) -> GrowthForecast | None:
    """`points` are (expansion day, viable cells). None when there are too few counts, or
    the cells are not growing."""
    if len(points) < MIN_COUNTS or target_cells <= 0:
        return None
    days = np.array([day for day, _ in points], dtype=float)
    cells = np.array([count for _, count in points], dtype=float)
    if np.any(cells <= 0) or np.ptp(days) == 0:
        return None
    logs = np.log(cells)
    n = len(days)
    slope, intercept = np.polyfit(days, logs, 1)
    if slope <= 0:
        return None
    residuals = logs - (intercept + slope * days)
    s = math.sqrt(float(residuals @ residuals) / (n - 2))  # n ≥ MIN_COUNTS = 3
    t_crit = float(stats.t.ppf(0.5 + level / 2, n - 2))
    mean_day, sxx = days.mean(), float(((days - days.mean()) ** 2).sum())
    goal = math.log(target_cells)

    def half_width(day):
        return t_crit * s * np.sqrt(1 + 1 / n + (day - mean_day) ** 2 / sxx)

    grid = np.arange(0, horizon_days + 0.01, 0.05)
    fitted = intercept + slope * grid
    upper_reached = grid[fitted + half_width(grid) >= goal]
    lower_reached = grid[fitted - half_width(grid) >= goal]
    return GrowthForecast(
        target_cells=int(target_cells),
        day=(goal - intercept) / slope,
        earliest=float(upper_reached[0]) if len(upper_reached) else horizon_days,
        latest=float(lower_reached[0]) if len(lower_reached) else None,
        doubling_days=math.log(2) / slope,
        counts=n,
    )
