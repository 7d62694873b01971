"""Settings compared by a paired difference matched by seed (partitions against fixed blocks,
blocks against their context-matched control, each λ against λ = 0), the pre-registered primary
family's corrections (Holm for the family in ``family.py``, Benjamini–Hochberg for the
exploratory rest), and the threshold formula set against a sweep's measured in-block mass."""
from __future__ import annotations

from ..analysis.theory import effective_margin, predicted_cross_mass
from ..model.config import ModelConfig
from .results import (
    DEFAULT_BLOCK_SIZE,
    config_part,
    curve_run_points,
    dial_settings,
    find_eval,
    leak_flag,
    merge_seeds,
    partition_of,
    protocol_of,
    strategy_run_points,
)
from .stats import finite, paired_difference

DIFF_METRICS = ("perplexity", "entropy_bits", "in_block_mass", "pointer_fidelity_mass",
                "pointer_fidelity_lift")


def by_seed(points: list[dict]) -> dict[tuple[str, float], dict[int, dict]]:
    """Per-run points with a seed, as {(series, λ): {seed: point}} (the first point of each)."""
    by: dict[tuple[str, float], dict[int, dict]] = {}
    for p in points:
        if p.get("seed") is not None:
            by.setdefault((p["series"], p["locality"]), {}).setdefault(p["seed"], p)
    return by


def _paired(pts: dict[int, dict], base: dict[int, dict], metrics, **tags) -> list[dict]:
    """One row per metric: ``tags``, the metric and ``paired_difference`` of ``pts`` minus
    ``base`` over their common seeds; no row where they share none."""
    rows = []
    for m in metrics:
        d = paired_difference({k: p.get(m) for k, p in pts.items()},
                              {k: p.get(m) for k, p in base.items()})
        if d["n"]:
            rows.append({**tags, "metric": m, **d})
    return rows


def partition_differences(runs: list[dict], metrics=DIFF_METRICS,
                          block_size: int = DEFAULT_BLOCK_SIZE) -> list[dict]:
    """Each partition minus fixed at each λ (``results.strategy_points``' runs), paired by
    seed: one row per (partition, λ, metric) with ``paired_difference``'s figures (a λ or
    partition with no seed in common with fixed has no row)."""
    by = by_seed(strategy_run_points(runs, block_size))
    fixed = {lam: pts for (series, lam), pts in by.items() if series.startswith("fixed")}
    rows = []
    for (series, lam), pts in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if not series.startswith("fixed") and lam in fixed:
            rows += _paired(pts, fixed[lam], metrics, partition=series,
                            control=f"fixed (b={block_size})", locality=lam)
    return rows


# -- multiple comparisons ----------------------------------------------------------------------

def holm(pvalues: list[float | None], alpha: float = 0.05) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of the m
    p-values becomes max over j ≤ k of min(1, (m − j + 1)·p₍ⱼ₎). A None (a comparison with no
    test yet) counts in m as p = 1 and stays None, so a family's size is fixed in advance."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: 1.0 if pvalues[i] is None else pvalues[i])
    adjusted: list[float | None] = [None] * m
    running = 0.0
    for rank, i in enumerate(order):
        p = 1.0 if pvalues[i] is None else pvalues[i]
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = None if pvalues[i] is None else running
    return adjusted


def benjamini_hochberg(pvalues: list[float | None]) -> list[float | None]:
    """Benjamini–Hochberg q-values, in the order given: the k-th smallest of the m p-values
    becomes min over j ≥ k of min(1, m·p₍ⱼ₎/j). Nones are left out of m and stay None."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    q: list[float | None] = [None] * len(pvalues)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = idx[rank]
        running = min(running, m * pvalues[i] / (rank + 1))
        q[i] = running
    return q


def with_q_values(rows: list[dict]) -> list[dict]:
    """The exploratory rows with each one's Benjamini–Hochberg ``q`` over all of them."""
    return [{**r, "q": q} for r, q in zip(rows, benjamini_hochberg([r.get("p") for r in rows]))]


def verdict(row: dict) -> str:
    """A paired difference's verdict: "established" only where its 95% interval excludes zero,
    else "not established", with "(n = 1)" where one seed leaves no interval."""
    return "established" if row["established"] else (
        "not established" + (" (n = 1)" if row["n"] < 2 else ""))


def fixed_sizes(runs: list[dict]) -> list[int]:
    """The block sizes of fixed-partition attention-penalty runs, the default first."""
    sizes = {config_part(r, "model").get("block_size") for r in runs
             if protocol_of(r) == "attention" and partition_of(r) == "fixed"}
    sizes = {s for s in sizes if isinstance(s, int) and not isinstance(s, bool)}
    return sorted(sizes, key=lambda s: (s != DEFAULT_BLOCK_SIZE, s))


# -- blocks against their context-matched control ---------------------------------------------
# A block-local query sees only the earlier keys of its own block, so a partition with longer
# blocks gives its queries more context. Fixed blocks of every size trace what more context alone
# does (mean ``visible_in_block_keys``); a partition is compared with the fixed size whose queries
# see about as many keys (fixed-7 for punctuation), so the difference left is where blocks fall.

BLOCK_CONTROL_LOCALITY = 0.6   # the study's λ for the comparison of arrangements
_PARTITION_ORDER = {"punctuation": 0, "recruited": 1}


def _arrangements_raw(runs: list[dict]) -> list[dict]:
    """``strategy_run_points`` for every arrangement at every λ: the fixed runs of each size
    (``label`` "b=<size>") and the adaptive partitions (``label`` their name), each tagged with
    ``arrangement`` ("fixed" or the partition) and ``block_size`` (None: adaptive)."""
    pts = []
    for b in fixed_sizes(runs):
        pts += [{**p, "arrangement": "fixed", "block_size": b, "label": f"b={b}"}
                for p in strategy_run_points(runs, b) if p["series"] == f"fixed (b={b})"]
    return pts + [{**p, "arrangement": p["series"], "block_size": None, "label": p["series"]}
                  for p in strategy_run_points(runs, DEFAULT_BLOCK_SIZE)
                  if not p["series"].startswith("fixed (b=")]


def _at(p: dict, locality: float) -> bool:
    return abs(p["locality"] - locality) < 1e-9


def block_control_points(runs: list[dict],
                         locality: float = BLOCK_CONTROL_LOCALITY) -> list[dict]:
    """One point per arrangement at trained λ = ``locality``: causal attention-penalty runs as
    trained (λ_f = 0, τ = 1), every fixed block size present (series "fixed (b=<size>)", by
    size) and each adaptive partition (series its name). Each carries the mean number of
    in-block keys its queries see (``visible_in_block_keys``); runs that differ only by seed
    make one point (their mean, ``<key>_sd``, ``n`` seeds). Leaks and other shape changes stay
    out, as in ``results.strategy_points``."""
    pts = merge_seeds([p for p in _arrangements_raw(runs) if _at(p, locality)])
    return sorted(pts, key=lambda p: (p["block_size"] is None, p["block_size"] or 0,
                                      _PARTITION_ORDER.get(p["series"], 2), p["series"]))


def block_control_localities(runs: list[dict]) -> list[float]:
    """The trained λ values, ascending, at which ``block_control_points`` has at least two
    arrangements to compare."""
    by: dict[float, set[str]] = {}
    for p in _arrangements_raw(runs):
        by.setdefault(p["locality"], set()).add(p["series"])
    return sorted(lam for lam, names in by.items() if len(names) >= 2)


def adaptive_differences(runs: list[dict], metrics=DIFF_METRICS) -> list[dict]:
    """Each adaptive partition minus each one before it (punctuation, recruited, then the rest
    by name) at each λ, paired by seed: one row per (partition, control partition, λ, metric).
    ``bigram`` − ``punctuation`` asks whether boundaries read from the words do better than the
    text's punctuation at about the same visible in-block keys."""
    by = {key: pts for key, pts in by_seed(strategy_run_points(runs, DEFAULT_BLOCK_SIZE)).items()
          if not key[0].startswith("fixed")}
    rows = []
    for lam in sorted({lam for _, lam in by}):
        names = sorted((s for s, x in by if x == lam),
                       key=lambda s: (_PARTITION_ORDER.get(s, 2), s))
        for i, name in enumerate(names):
            for control in names[:i]:
                rows += _paired(by[(name, lam)], by[(control, lam)], metrics, partition=name,
                                control=control, locality=lam)
    return rows


def control_differences(runs: list[dict], metrics=DIFF_METRICS) -> list[dict]:
    """``partition_differences`` against every fixed block size present as a control (the
    default size first), then ``adaptive_differences``: the rows the report prints."""
    return ([r for b in fixed_sizes(runs) for r in partition_differences(runs, metrics, b)]
            + adaptive_differences(runs, metrics))


def block_control_differences(runs: list[dict], locality: float = BLOCK_CONTROL_LOCALITY,
                              metrics=DIFF_METRICS) -> list[dict]:
    """``control_differences`` at trained λ = ``locality``, grouped by partition and then by
    control."""
    rows = [r for r in control_differences(runs, metrics) if _at(r, locality)]
    return sorted(rows, key=lambda r: (_PARTITION_ORDER.get(r["partition"], 2), r["partition"]))


def locality_differences(runs: list[dict], metrics=DIFF_METRICS) -> list[dict]:
    """Along each causal curve of ``results.curve_points``, each λ minus the curve's λ = 0,
    paired by seed: one row per (series, λ, metric) with ``paired_difference``'s figures. It
    asks how far a little locality moves each metric ("nearly a switch" is a large in-block
    change at a small λ with no established perplexity cost)."""
    by = by_seed(curve_run_points(runs))
    rows = []
    for (series, lam), pts in sorted(by.items()):
        zero = by.get((series, 0.0))
        if lam != 0.0 and zero is not None:
            rows += _paired(pts, zero, metrics, series=series, locality=lam)
    return rows


LIFT = "pointer_fidelity_lift"   # fidelity − in-block mass × uniform fidelity (metrics.py)


def lift_intervals(runs: list[dict]) -> list[dict]:
    """Each setting's pointer-fidelity lift against zero, its uniform-attention baseline: one
    row per (series, λ) of ``results.curve_points``' curves and each adaptive partition, with
    ``paired_difference``'s figures for lift − 0 over its seeds (a one-sample t-interval). A
    positive interval is anchors drawing more attention than uniform attention in the block
    would give them."""
    pts = curve_run_points(runs) + [p for p in strategy_run_points(runs, DEFAULT_BLOCK_SIZE)
                                    if not p["series"].startswith("fixed")]
    rows = []
    for (series, lam), seeds in by_seed(pts).items():
        zero = {seed: {LIFT: 0.0} for seed in seeds}
        rows += _paired(seeds, zero, (LIFT,), series=series, locality=lam)
    return rows


PENALTY_AS_TRAINED = "attention penalty · as trained"   # results._series of a fixed-5 run


def dial_differences(runs: list[dict], metrics=DIFF_METRICS) -> list[dict]:
    """Each dial curve (the trained β, and each β it was evaluated again at) at λ_f = λ minus
    the attention-penalty model trained at λ and used as trained, paired by seed: one row per
    (dial series, λ, metric) where both exist. It asks what serving every λ from one checkpoint
    costs against a model trained for that λ."""
    points = curve_run_points(runs)
    by = by_seed(points)
    dials = {p["series"] for p in points if p.get("curve") == "dial"}
    rows = []
    for (series, lam), pts in sorted(by.items()):
        control = by.get((PENALTY_AS_TRAINED, lam))
        if series in dials and control is not None:
            rows += _paired(pts, control, metrics, series=series, control=PENALTY_AS_TRAINED,
                            locality=lam)
    return rows


# -- the threshold formula against a sweep (analysis/theory.py) --------------------------------

def _barrier_sharpness(run: dict) -> float:
    """β of a run's evaluations: its eval override, else its model's, else the default."""
    cfg = run.get("config") if isinstance(run.get("config"), dict) else {}
    for part in ("eval", "model"):
        beta = finite((cfg.get(part) or {}).get("barrier_sharpness"))
        if beta is not None and beta > 0:
            return beta
    return ModelConfig.barrier_sharpness


def _in_block(run: dict, locality: float, tau: float, key: str = "in_block_mass") -> float | None:
    ev = find_eval(run, locality, tau) or {}
    m = (ev.get("attention") or {}).get(key)
    return finite(m.get("mean")) if isinstance(m, dict) else None


def formula_rows(run: dict) -> list[dict]:
    """Every (λ_f, τ) a causal run was evaluated at: its measured in-block mass and the
    formula's (``predicted_cross_mass``), from one effective margin read at λ_f = 0,
    τ = 1 and the uniform baseline there. Empty when the run leaks or lacks that evaluation."""
    base, uniform = _in_block(run, 0.0, 1.0), _in_block(run, 0.0, 1.0, "uniform_in_block_mass")
    if leak_flag(run) or base is None or uniform is None or not 0 < uniform < 1:
        return []
    cross0, u_x = min(max(1.0 - base, 0.0), 1.0), 1.0 - uniform
    margin, beta = effective_margin(cross0, u_x), _barrier_sharpness(run)
    rows = []
    for lf, tau in dial_settings(run):
        measured = _in_block(run, lf, tau)
        if measured is None or not 0.0 <= lf <= 1.0:
            continue
        rows.append({"run_id": str(run.get("run_id")), "locality": lf, "attn_temperature": tau,
                     "measured_in_block": measured,
                     "predicted_in_block": 1.0 - predicted_cross_mass(margin, u_x, lf,
                                                                             tau, beta),
                     "calibration": lf == 0.0 and tau == 1.0, "margin": margin,
                     "barrier_sharpness": beta})
    return rows


def formula_runs(runs: list[dict]) -> list[str]:
    """The runs ``formula_rows`` can use, those evaluated at the most λ_f values (the
    dial's) first, then the sharper barrier."""
    scored = []
    for run in runs:
        rows = formula_rows(run)
        if rows:
            n_lf = len({r["locality"] for r in rows})
            scored.append((-n_lf, -rows[0]["barrier_sharpness"], rows[0]["run_id"]))
    return [rid for *_, rid in sorted(scored)]
