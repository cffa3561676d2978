"""The growth forecast against synthetic cultures of known doubling time and noise."""

import math

import numpy as np
import pytest

from pathway.forecast import growth_forecast


def _culture(rng, *, doubling_days, noise, start_cells=2e6, count_days=(3, 6, 9, 12, 15)):
    """Counts of a culture growing exponentially, each off by log-normal counting error."""
    rate = math.log(2) / doubling_days
    return [
        (day, start_cells * math.exp(rate * day) * math.exp(rng.normal(0, noise)))
        for day in count_days
    ]


def test_the_true_day_lies_inside_the_90_percent_interval_in_at_least_85_of_100_cultures():
    rng = np.random.default_rng(2026)
    target, inside = 150e6, 0
    for _ in range(100):
        doubling = rng.uniform(2.5, 4.5)
        true_day = math.log(target / 2e6) / (math.log(2) / doubling)
        forecast = growth_forecast(
            points=_culture(rng, doubling_days=doubling, noise=0.15), target_cells=target
        )
        latest = forecast.latest if forecast.latest is not None else math.inf
        inside += forecast.earliest <= true_day <= latest
    print(f"\nforecast coverage: {inside} of 100 cultures inside the 90 % interval")
    assert inside >= 85, inside


def test_a_clean_culture_is_forecast_to_the_day():
    rng = np.random.default_rng(1)
    forecast = growth_forecast(
        points=_culture(rng, doubling_days=3, noise=0.0), target_cells=2e6 * 2**8
    )
    assert forecast.day == pytest.approx(24, abs=0.01)
    assert forecast.doubling_days == pytest.approx(3)


@pytest.mark.parametrize(
    "points",
    [
        [(3, 1e6), (6, 2e6)],  # too few counts
        [(3, 4e6), (6, 2e6), (9, 1e6)],  # shrinking
        [(3, 1e6), (3, 2e6), (3, 3e6)],  # one day only
    ],
)
def test_no_forecast_without_growth_to_fit(points):
    assert growth_forecast(points=points, target_cells=100e6) is None
