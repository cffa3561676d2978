"""Confidence intervals for cohort means: mean ± t(0.975, n−1) × s / √n."""

import math
from dataclasses import dataclass

# Two-sided 95 % critical values of Student's t, by degrees of freedom.
_T_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}
_Z_975 = 1.960


def t_975(df: int) -> float:
    """t(0.975, df): exact to 3 decimals from the table, interpolated in 1/df between rows."""
    if df < 1:
        raise ValueError("A confidence interval needs at least two values.")
    if df in _T_975:
        return _T_975[df]
    rows = sorted(_T_975)
    if df > rows[-1]:
        lower_df, upper_df, lower_t, upper_t = rows[-1], math.inf, _T_975[rows[-1]], _Z_975
    else:
        lower_df = max(r for r in rows if r < df)
        upper_df = min(r for r in rows if r > df)
        lower_t, upper_t = _T_975[lower_df], _T_975[upper_df]
    weight = (1 / lower_df - 1 / df) / (
        1 / lower_df - (0 if upper_df == math.inf else 1 / upper_df)
    )
    return lower_t + (upper_t - lower_t) * weight


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    median: float | None
    ci_low: float | None
    ci_high: float | None


def summarise(
    *, n: int, mean: float | None, mean_of_squares: float | None, median: float | None
) -> Summary:
    """A cohort summary from the database's aggregates; no interval for fewer than 2 values."""
    if n < 2 or mean is None:
        return Summary(n=n, mean=mean, median=median, ci_low=None, ci_high=None)
    # The sample standard deviation from n, the mean and the mean of squares.
    sd = math.sqrt(max(mean_of_squares - mean * mean, 0.0) * n / (n - 1))
    half_width = t_975(n - 1) * sd / math.sqrt(n)
    return Summary(
        n=n, mean=mean, median=median, ci_low=mean - half_width, ci_high=mean + half_width
    )
