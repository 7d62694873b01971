"""What the pages show, computed by the core and reached through the one error guard
(``ui.notices.guarded``): views of one analysis (Explorer, Compare, Rules), a rule, the papers'
threshold (Theory), and the points and tables of sweep results (Tradeoff, Sweeps, Compare).
A failure is a notice; the page gets None (or an empty list), never a traceback."""
from __future__ import annotations

import json
import math

import pandas as pd

from localist_core.analysis import inspection, rules, theory
from localist_core.analysis.rules import RULE_STRENGTH_MAX  # noqa: F401 (for the Rules page)
from localist_core.experiments import results
from localist_core.experiments.sweep import PROTOCOL_NAMES  # noqa: F401 (for the Sweeps page)
from localist_core.model.config import PARTITIONS  # noqa: F401 (for the Sweeps page)
from ui.notices import guarded

# The metrics the Compare page sets side by side.
COMPARED = ("entropy_bits", "in_block_mass", "recent_b_mass", "shifted_block_mass",
            "pointer_fidelity_mass", "pointer_fidelity_lift", "mean_attention_distance")


def metric_mean(metrics: dict, name: str, fmt: str = ".3f") -> str:
    """A metric's mean formatted for a caption, or "—" when an older analysis lacks it."""
    m = metrics.get(name)
    return format(m["mean"], fmt) if isinstance(m, dict) and "mean" in m else "—"

# -- one analysis --------------------------------------------------------------------------------

_view = guarded("draw this view of the attention")
pattern_view = _view(inspection.pattern_view)
reduce_pattern = _view(inspection.reduce_pattern)
difference = _view(inspection.difference)
entropy_view = _view(inspection.entropy_view)


@guarded("compare with λ = 0")
def change(a, base, name: str) -> float | None:
    """How far metric ``name`` (its mean) of analysis ``a`` lies above ``base``'s; None without
    a base."""
    if base is None or not base.metrics:
        return None
    return a.metrics[name]["mean"] - base.metrics[name]["mean"]


@guarded("compare the metrics", {})
def metric_table(a_metrics: dict, b_metrics: dict) -> dict[str, dict[str, float]]:
    """Metric → {"A": mean, "B": mean} for the Compare page's table."""
    return {name: {"A": a_metrics[name]["mean"], "B": b_metrics[name]["mean"]}
            for name in COMPARED}


@guarded("write the attention table", "")
def attention_csv(a) -> str:
    """Every visible weight of an analysis as CSV (one row per layer, head, query and key)."""
    return csv_text(inspection.attention_table(a))


@guarded("write the metrics", "{}")
def metrics_file(a, checkpoint: str) -> str:
    """The live metrics of an analysis as indented JSON."""
    return json.dumps(inspection.metrics_json(a, checkpoint), indent=1)


def csv_text(rows: list[dict]) -> str:
    """Rows of plain values as CSV text, one column per key."""
    return pd.DataFrame(rows).to_csv(index=False)


# -- rules and recruited blocks (Rules & blocks) -------------------------------------------------

@guarded("read this rule")
def rule_key(source_kind: str, source: str, target_kind: str, target: str,
             strength: float) -> tuple | None:
    """A checked rule as the plain values ``ui.get_analysis`` caches on (source kind and spec,
    target kind and spec, strength); None after a notice when ``rules.make_rule`` refuses it."""
    r = rules.make_rule(source_kind, source, target_kind, target, strength)
    return r.source.kind, r.source.spec, r.target.kind, r.target.spec, r.strength


@guarded("count the rule's pairs", 0)
def pair_count(a) -> int:
    """How many (query, key) pairs the analysis's rule biases."""
    return int(a.rule_pairs.sum()) if a.rule_pairs is not None else 0


@guarded("list the block boundaries", [])
def boundary_rows(trace) -> list[dict]:
    """The recruited block starts of a ``RecruitTrace``: position, word and bits saved."""
    return [{"position": i, "word": w, "bits saved": b} for i, w, b in trace.boundaries()]


# -- the papers' threshold (Theory) --------------------------------------------------------------

threshold_locality = guarded("compute the threshold", math.nan)(theory.threshold_locality)


# What the Theory page says, in place of a number, when λ = 1 masks every cross-block key.
EXACTLY_LOCAL = ("At λ = 1 cross-block keys are masked: attention is exactly block-local "
                 "(threshold 0).")


@guarded("read the estimated inputs", False)
def exactly_local(report: dict) -> bool:
    """Whether ``theory_report`` found no query that sees a cross-block key (λ = 1): the
    cross-block mass is exactly 0 and the threshold 0, so the page prints no formula value."""
    return bool(report.get("exactly_local", False))


@guarded("read the estimated inputs", {})
def threshold_inputs(report: dict) -> dict[str, float]:
    """The estimated formula inputs as the Theory page's fields start: rounded, ρ_max below 1
    and a margin that is finite and not absurd (else 0; an exactly local report's +∞ margin
    is shown as ``EXACTLY_LOCAL`` by the page, not through this field)."""
    est = report["inputs"]
    margin = est["margin"]
    margin = margin if math.isfinite(margin) and abs(margin) < 1e6 else 0.0
    return {"lipschitz": round(est["lipschitz"], 4), "r_x": round(est["r_x"], 4),
            "sigma_x": round(est["sigma_x"], 4), "block_len": round(est["block_len"], 2),
            "rho_max": min(est["rho_max"], 0.999), "margin": round(margin, 4)}


# -- sweep results (Tradeoff, Sweeps, Compare) ---------------------------------------------------

_points = guarded("read the sweep results", [])
curve_points = _points(results.curve_points)
leak_points = _points(results.leak_points)
paper_points = _points(results.paper_points)
strategy_points = _points(results.strategy_points)
tau_family = _points(results.tau_family)
entropy_references = _points(results.entropy_references)
perplexity_references = _points(results.perplexity_references)
runs_table = _points(results.runs_table)
position_rows = _points(results.position_rows)
dial_settings = _points(results.dial_settings)
_one = guarded("read the sweep results")
make_point = _one(results.make_point)
leak_flag = _one(results.leak_flag)
protocol_of = _one(results.protocol_of)
