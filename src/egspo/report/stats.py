"""Confidence intervals over seeds: the two-sided Student-t interval mean +- t_{1-a/2, n-1} * s / sqrt(n).

The t quantile comes from the closed form of the Student-t distribution function for integer degrees of freedom
nu (Abramowitz & Stegun 26.7.3 / 26.7.4): with theta = atan(t / sqrt(nu)) and c = cos^2(theta),

    A(t | nu) = P(|T| <= t) = sin(theta) * (1 + 1/2 c + (1*3)/(2*4) c^2 + ... up to c^((nu-2)/2))        nu even
    A(t | nu) = 2/pi * (theta + sin(theta) cos(theta) * (1 + 2/3 c + (2*4)/(3*5) c^2 + ... up to c^((nu-3)/2)))
                                                                                           nu odd (nu = 1: 2 theta/pi)

and the quantile solves A(t | nu) = 2q - 1 by bisection (A is increasing in t).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def t_two_sided_mass(t: float, df: int) -> float:
    """A(t | nu) = P(|T| <= t) for a Student-t variable T with integer ``df`` = nu >= 1 degrees of freedom."""
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t}")
    theta = math.atan(t / math.sqrt(df))
    c = math.cos(theta) ** 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, (df - 2) // 2 + 1):
            term *= (2 * i - 1) / (2 * i) * c
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2.0 * theta / math.pi
    term, total = 1.0, 1.0
    for i in range(1, (df - 3) // 2 + 1):
        term *= (2 * i) / (2 * i + 1) * c
        total += term
    return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom, for 0.5 <= q < 1 (to 1e-12 relative)."""
    if not 0.5 <= q < 1.0:
        raise ValueError(f"q must be in [0.5, 1), got {q}")
    target = 2.0 * q - 1.0
    lo, hi = 0.0, 1.0
    while t_two_sided_mass(hi, df) < target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_mass(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """Mean and two-sided confidence interval of ``n`` values (``low``/``high`` are NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0.0 or self.high < 0.0)


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean +- t_{(1+level)/2, n-1} * s / sqrt(n), s the sample standard deviation (ddof 1)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci needs at least one value, got none")
    if any(math.isnan(x) for x in xs):
        raise ValueError(f"mean_ci got NaN among its values: {xs}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)
