"""The statistics of the sweep results: finite values, the Student-t table and its two-sided
p-value, mean ± sd with a 95% interval over seeds, and the paired difference of two settings
matched by seed."""
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


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| ≥ |t|) for Student's t with an integer ``df`` ≥ 1, exactly, from the finite series
    of Abramowitz & Stegun 26.7.3–4 (with θ = atan(|t|/√df), A(t|df) = P(|T| < |t|)). The one
    p-value of the project; no statistics package is needed for integer degrees of freedom.

    >>> round(t_two_sided_p(12.706, 1), 4), round(t_two_sided_p(4.303, 2), 4)
    (0.05, 0.05)
    """
    if df < 1:
        raise ValueError("a t-test needs at least one degree of freedom")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:                     # odd: (2/π)(θ + sinθ cosθ (1 + 2/3 c² + 2·4/(3·5) c⁴ + …))
        term = total = 1.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        a = 2 / math.pi * (theta + (s * math.cos(theta) * total if df > 1 else 0.0))
    else:                          # even: sinθ (1 + 1/2 c² + 1·3/(2·4) c⁴ + …)
        term = total = 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        a = s * total
    return min(max(1.0 - a, 0.0), 1.0)


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
    (``lo``, ``hi``, ``ci95``), the paired t-test's two-sided ``p`` (None below two seeds; 0
    where every difference is the same non-zero value, 1 where all are zero), the control's
    mean over the same seeds (``base_mean``, for a relative effect) and ``established``: True
    only where the uncorrected interval excludes 0."""
    seeds = sorted(k for k in a if k in b and finite(a[k]) is not None
                   and finite(b[k]) is not None)
    s = summary([a[k] - b[k] for k in seeds])
    lo = hi = None
    if s["ci95"] is not None:
        lo, hi = s["mean"] - s["ci95"], s["mean"] + s["ci95"]
    p = None
    if s["n"] > 1:
        if s["sd"] > 0:
            p = t_two_sided_p(s["mean"] / (s["sd"] / math.sqrt(s["n"])), s["n"] - 1)
        else:
            p = 0.0 if s["mean"] != 0 else 1.0
    base = [b[k] for k in seeds]
    return {**s, "seeds": seeds, "lo": lo, "hi": hi, "p": p,
            "base_mean": statistics.fmean(base) if base else None,
            "established": lo is not None and (lo > 0 or hi < 0)}
