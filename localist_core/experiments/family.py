"""The pre-registered primary family (REPRODUCTION.md, "The primary family"): ten paired
comparisons fixed before seeds 4 and 5 were run, tested together under Holm's correction. Every
other comparison the report prints is exploratory."""
from __future__ import annotations

from dataclasses import dataclass

from .comparisons import (
    BLOCK_CONTROL_LOCALITY,
    PENALTY_AS_TRAINED,
    by_seed,
    fixed_sizes,
    holm,
)
from .results import DEFAULT_BLOCK_SIZE, curve_run_points, strategy_run_points
from .stats import paired_difference

FAMILY_ALPHA = 0.05
FAMILY_SEEDS = 5            # a family row has a verdict only with this many common seeds


@dataclass(frozen=True)
class Comparison:
    """One pre-registered question: ``setting`` − ``control``, each a (kind, series, λ) where
    kind is "curve" (``results.curve_run_points``) or "blocks" (``strategy_run_points`` with the
    block size in the series), on ``metric``; ``smallest`` is the smallest effect that matters,
    relative to the control's mean unless ``absolute``."""

    key: str
    question: str
    setting: tuple[str, str, float]
    control: tuple[str, str, float]
    metric: str
    smallest: float
    absolute: bool = False


def _penalty(lam: float) -> tuple[str, str, float]:
    return ("curve", PENALTY_AS_TRAINED, lam)


def _blocks(series: str, block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[str, str, float]:
    return ("blocks", f"{series}@{block_size}", BLOCK_CONTROL_LOCALITY)


PRIMARY_FAMILY = (
    Comparison("F1", "does a small penalty localise?", _penalty(0.05), _penalty(0.0),
               "in_block_mass", 0.05, absolute=True),
    *(Comparison(f"F{i}", f"the cost of locality at λ = {lam:g}", _penalty(lam), _penalty(0.0),
                 "perplexity", 0.02) for i, lam in ((2, 0.05), (3, 0.2), (4, 0.6), (5, 1.0))),
    Comparison("F6", "the dial's price, distributed end", ("curve", "dial protocol · beta64", 0.0),
               _penalty(0.0), "perplexity", 0.02),
    Comparison("F7", "the dial's price, local end", ("curve", "dial protocol · beta64", 1.0),
               _penalty(1.0), "perplexity", 0.02),
    Comparison("F8", "does where punctuation puts boundaries matter?", _blocks("punctuation"),
               _blocks("random"), "perplexity", 0.02),
    Comparison("F9", "do blocks that read the words beat fixed ones?", _blocks("bigram"),
               _blocks("fixed (b=7)", 7), "perplexity", 0.02),
    Comparison("F10", "do blocks priced by what the model loses beat fixed ones?",
               _blocks("priced"), _blocks("fixed (b=7)", 7), "perplexity", 0.02),
)


def _family_points(runs: list[dict]) -> dict[tuple[str, str, float], dict[int, dict]]:
    """The per-seed points every family row may name, keyed like ``Comparison.setting``."""
    out = {("curve", s, lam): pts for (s, lam), pts in by_seed(curve_run_points(runs)).items()}
    for b in {DEFAULT_BLOCK_SIZE, *fixed_sizes(runs)}:
        for (s, lam), pts in by_seed(strategy_run_points(runs, b)).items():
            out.setdefault(("blocks", f"{s}@{b}", lam), pts)
    return out


def _family_verdict(row: dict) -> str:
    if row["n"] < FAMILY_SEEDS:
        return f"no verdict yet ({row['n']} of {FAMILY_SEEDS} seeds)"
    if row["p_holm"] is None or row["p_holm"] >= FAMILY_ALPHA:
        return "not established"
    size = abs(row["mean"] if row["absolute"] else (row["relative"] or 0.0))
    return "established" if size >= row["smallest"] else \
        "established, below the size that matters"


def primary_family(runs: list[dict]) -> list[dict]:
    """Every ``PRIMARY_FAMILY`` row, in order, with ``paired_difference``'s figures over the
    common seeds, the relative effect (mean difference over the control's mean), the
    Holm-adjusted p-value over all ten (a row with no test counts as p = 1) and its verdict."""
    by = _family_points(runs)
    rows = []
    for c in PRIMARY_FAMILY:
        pts, base = by.get(c.setting, {}), by.get(c.control, {})
        d = paired_difference({k: p.get(c.metric) for k, p in pts.items()},
                              {k: p.get(c.metric) for k, p in base.items()})
        rel = (d["mean"] / d["base_mean"] if d["mean"] is not None and d["base_mean"]
               else None)
        rows.append({**d, "key": c.key, "question": c.question, "metric": c.metric,
                     "smallest": c.smallest, "absolute": c.absolute, "relative": rel})
    for r, adj in zip(rows, holm([r["p"] for r in rows], FAMILY_ALPHA)):
        r["p_holm"] = adj
        r["verdict"] = _family_verdict(r)
    return rows
