"""The statistics of the sweep results: finite values, the Student-t table, mean ± sd with a 95%
interval over seeds, and the paired difference of two settings matched by seed."""
from __future__ import annotations

import math
import statistics

from ..model.config import is_finite_number

# Student-t 0.975 quantiles (two-sided 95%) for df = 1..30, from the NIST/SEMATECH e-Handbook of
# Statistical Methods, §1.3.6.7.2 "Critical values of the Student's t distribution"; beyond 30
# degrees of freedom the normal 1.96 is used (at most 4% narrower than t). The one table of the
# project: every interval of the sweep results comes from ``t975``.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def finite(v) -> float | None:
    """``v`` as a float when it is a finite real number (not a bool, not an integer too large
    for a float), else None."""
    return float(v) if is_finite_number(v) else None


def t975(df: int) -> float:
    """The Student-t 0.975 quantile at ``df`` degrees of freedom (``T975``; 1.96 beyond 30)."""
    if df < 1:
        raise ValueError("a t-interval needs at least one degree of freedom")
    return T975[df - 1] if df <= len(T975) else 1.96


def summary(values) -> dict:
    """Mean, sample sd, n and the 95% t-interval half-width of the mean of the finite values;
    one value: sd and ci95 None; none: every figure None and n 0."""
    vals = [float(v) for v in values if finite(v) is not None]
    n = len(vals)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "ci95": None}
    if n == 1:
        return {"mean": vals[0], "sd": None, "n": 1, "ci95": None}
    sd = statistics.stdev(vals)
    return {"mean": statistics.fmean(vals), "sd": sd, "n": n,
            "ci95": t975(n - 1) * sd / math.sqrt(n)}


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict:
    """a − b over the seeds both hold (matched by seed): mean, sd, n, the 95% t-interval
    (``lo``, ``hi``, ``ci95``) and ``established``: True only where the interval excludes 0."""
    seeds = sorted(k for k in a if k in b and finite(a[k]) is not None
                   and finite(b[k]) is not None)
    s = summary([a[k] - b[k] for k in seeds])
    lo = hi = None
    if s["ci95"] is not None:
        lo, hi = s["mean"] - s["ci95"], s["mean"] + s["ci95"]
    return {**s, "seeds": seeds, "lo": lo, "hi": hi,
            "established": lo is not None and (lo > 0 or hi < 0)}
