"""Sweep-cache results as flat points and tables: the curves of the Tradeoff page and the report,
as plain dicts (the figures that draw them are ``ui.sweep_figures``)."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ..analysis.metrics import METRIC_LABELS, METRIC_NAMES, causal_entropy_ceiling
from ..analysis.theory import effective_margin, predicted_cross_mass
from ..model.config import ModelConfig, is_finite_number
from .cache import (
    BASELINES_FILE,
    PROGRESS_FILE,
    SweepCacheError,
    cache_files,
    read_baselines_file,
)
from .sweep import PROTOCOL_NAMES, locality_tag, normalized_config

PAPERS = "papers' report"
# The papers' reported figures (REPRODUCTION.md), shown beside ours, never in place of ours.
PAPER = {"entropy_bits_l1": 5.36, "entropy_bits_l0": 7.18, "test_perplexity_l06": 4.65,
         "test_accuracy_l06": 0.847}
LEAK = "LEAK"

# Student-t 0.975 quantiles (two-sided 95%) for df = 1..30, from the NIST/SEMATECH e-Handbook of
# Statistical Methods, §1.3.6.7.2 "Critical values of the Student's t distribution"; beyond 30
# degrees of freedom the normal 1.96 is used (at most 4% narrower than t). The one table of the
# project: every interval of the sweep results comes from ``t975``.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# The numbers a point averages over seeds; each gets ``<key>_sd`` and ``<key>_ci95``.
STAT_KEYS = ("perplexity", "accuracy", "test_perplexity", "test_accuracy", *METRIC_NAMES)


def finite(v) -> float | None:
    """``v`` as a float when it is a finite real number (not a bool, not an integer too large
    for a float), else None."""
    return float(v) if is_finite_number(v) else None


def _cfg(run: dict, part: str) -> dict:
    cfg = run.get("config")
    sub = cfg.get(part) if isinstance(cfg, dict) else None
    return sub if isinstance(sub, dict) else {}


def protocol_of(run: dict) -> str:
    """"attention", "weights" or "dial" (from the run, else from its training config)."""
    if isinstance(run.get("protocol"), str) and run["protocol"] in PROTOCOL_NAMES:
        return run["protocol"]
    train = _cfg(run, "train")
    return "dial" if train.get("protocol") == "dial" else str(train.get("penalty_form", "?"))


def trained_locality(run: dict) -> float:
    """λ of the penalty a run was trained with (0 for the dial protocol)."""
    return finite(run.get("locality")) or finite(_cfg(run, "train").get("locality")) or 0.0


def variant(run: dict) -> str:
    """The model-shape tag of a run id (``attention-l0.4-block_size3`` → ``block_size3``)."""
    proto, rid = protocol_of(run), str(run.get("run_id", ""))
    seed = seed_of(run)
    if seed is not None and rid.endswith(f"-s{seed}"):   # a seed is not a variant
        rid = rid[: -len(f"-s{seed}")]
    base = "dial" if proto == "dial" else f"{proto}-l{locality_tag(trained_locality(run))}"
    return rid[len(base) + 1:] if rid.startswith(base + "-") else ""


def seed_of(run: dict) -> int | None:
    """The training seed in a run's stored config, or None when it names none."""
    seed = _cfg(run, "train").get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def group_key(run: dict) -> str:
    """What a run is apart from its seed: protocol, variant and its whole stored config (every
    default filled in) less ``train.seed``. Runs with equal keys are seeds of one setting."""
    try:
        cfg = normalized_config(run.get("config") if isinstance(run.get("config"), dict) else {})
        cfg = {k: v for k, v in cfg.items()}
        cfg["train"] = {k: v for k, v in (cfg.get("train") or {}).items() if k != "seed"}
        blob = json.dumps(cfg, sort_keys=True, default=str)
    except (TypeError, ValueError, AttributeError):
        blob = str(run.get("run_id"))
    return json.dumps([protocol_of(run), variant(run), trained_locality(run), blob])


def group_by_seed(runs: list[dict]) -> list[list[dict]]:
    """Runs that differ only by seed, together (first-seen order; each group by seed)."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    return [sorted(g, key=lambda r: (seed_of(r) is None, seed_of(r) or 0)) for g in groups.values()]


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


def aggregate_points(points: list[dict], keys: list[str]) -> list[dict]:
    """Points that differ only by seed (equal ``keys`` values) merged into one: each of
    ``STAT_KEYS`` the mean over seeds, with ``<key>_sd`` and ``<key>_ci95``; ``n`` the number of
    seeds, ``seeds`` their list, ``run_id`` the first run's. A lone point is returned as is."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault(tuple(json.dumps(p.get(k), default=str) for k in keys), []).append(p)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        merged = dict(group[0])
        for k in STAT_KEYS:
            st = summary(p.get(k) for p in group)
            merged[k], merged[f"{k}_sd"], merged[f"{k}_ci95"] = st["mean"], st["sd"], st["ci95"]
        merged["n"] = len(group)
        merged["seeds"] = ",".join(str(p.get("seed")) for p in group)
        out.append(merged)
    return out


def leak_flag(run: dict) -> str | None:
    """Why a run is not a causal result, or None. Leaky runs stay out of the causal curves."""
    if _cfg(run, "model").get("noncausal_diagnostic"):
        return "non-causal diagnostic: attention sees later tokens of its block (a leak)"
    lt = run.get("leak_test")
    if isinstance(lt, dict) and lt.get("passed") is False:
        return "failed the leak test"
    return None


def find_eval(run: dict, locality: float, tau: float = 1.0, split: str = "valid") -> dict | None:
    """The eval of a run at (λ_f, τ), or None when it is missing or malformed."""
    metrics = run.get("metrics")
    evals = metrics.get(split) if isinstance(metrics, dict) else None
    for ev in evals if isinstance(evals, list) else []:
        try:
            lf, t = float(ev["dial"]["locality"]), float(ev["dial"]["attn_temperature"])
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if abs(lf - locality) < 1e-9 and abs(t - tau) < 1e-9 and finite(ev.get("perplexity")):
            return ev
    return None


def dial_settings(run: dict, split: str = "valid") -> list[tuple[float, float]]:
    """The sorted (λ_f, τ) pairs a run holds usable evals for."""
    out = set()
    metrics = run.get("metrics")
    evals = metrics.get(split) if isinstance(metrics, dict) else None
    for ev in evals if isinstance(evals, list) else []:
        try:
            out.add((float(ev["dial"]["locality"]), float(ev["dial"]["attn_temperature"])))
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
    return sorted(out)


def make_point(run: dict, lam: float, dial_locality: float, tau: float = 1.0,
               series: str = "", label: str | None = None, curve: str = "") -> dict | None:
    """One flat point of a run's eval at (λ_f, τ), with its test figures at τ = 1; None if the
    eval is missing. ``lam`` is where the point sits on a λ axis; ``curve`` is how it was made
    (``CURVES``; "" outside the curves). The ``perplexity_rise`` fields are filled by
    ``curve_points``."""
    ev = find_eval(run, dial_locality, tau)
    if ev is None:
        return None
    test = find_eval(run, dial_locality, tau, "test") or {}
    att = ev.get("attention") if isinstance(ev.get("attention"), dict) else {}
    n_ctx = _cfg(run, "model").get("n_ctx")
    ceiling = finite(ev.get("entropy_ceiling_bits"))
    if ceiling is None and isinstance(n_ctx, int) and n_ctx > 0:
        ceiling = causal_entropy_ceiling(n_ctx)
    p = {"series": series, "label": label or f"λ={lam:g}", "curve": curve,
         "run_id": str(run.get("run_id")),
         "protocol": protocol_of(run), "variant": variant(run),
         "trained_locality": trained_locality(run), "locality": lam,
         "dial_locality": dial_locality, "attn_temperature": tau,
         "perplexity": finite(ev.get("perplexity")), "accuracy": finite(ev.get("accuracy")),
         "test_perplexity": finite(test.get("perplexity")),
         "test_accuracy": finite(test.get("accuracy")), "entropy_ceiling_bits": ceiling,
         "leak": leak_flag(run)}
    for k in METRIC_NAMES:
        p[k] = finite(att[k].get("mean")) if isinstance(att.get(k), dict) else None
    seed = seed_of(run)
    p.update({"n": 1, "seed": seed, "seeds": "" if seed is None else str(seed)})
    p.update({f"{k}_{stat}": None for k in STAT_KEYS for stat in ("sd", "ci95")})
    p.update({"perplexity_rise": None, "perplexity_rise_ci95": None, "perplexity_rise_n": 0,
              "perplexity_rise_established": False})
    return p


# How a curve's points were made: a penalty model as trained (λ_f = 0), the same model dialled
# at inference to λ_f = λ, or the dial-protocol model at each λ_f.
CURVES = ("trained", "dialled", "dial")


def _series(run: dict, kind: str) -> str:
    if leak_flag(run):
        return f"{LEAK} · {run.get('run_id')}"
    tag = f" · {variant(run)}" if variant(run) else ""
    if protocol_of(run) == "dial":
        return f"dial protocol{tag}"
    how = "as trained" if kind == "trained" else "dialled to λ_f=λ"
    return f"{protocol_of(run)} penalty · {how}{tag}"


_SAME = ["series", "locality", "dial_locality", "attn_temperature", "group"]


def _grouped(run: dict, p: dict | None) -> dict | None:
    return None if p is None else {**p, "group": group_key(run)}


def _ungrouped(points: list[dict]) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "group"} for p in points]


def _with_rise(raw: list[dict], points: list[dict]) -> list[dict]:
    """Each point's valid-perplexity rise over the λ = 0 point of its series, paired by seed
    (``paired_difference`` of the per-seed ``raw`` points): the cost of locality along a curve.
    A series without a λ = 0 point, or a point with no seed in common with it, gets none."""
    by: dict[str, dict[float, dict[int, float]]] = {}
    for p in raw:
        if p.get("seed") is not None and finite(p.get("perplexity")) is not None:
            by.setdefault(p["series"], {}).setdefault(p["locality"], {}).setdefault(
                p["seed"], p["perplexity"])
    for p in points:
        curve = by.get(p["series"], {})
        if 0.0 not in curve:
            continue
        d = paired_difference(curve.get(p["locality"], {}), curve[0.0])
        p.update({"perplexity_rise": d["mean"], "perplexity_rise_ci95": d["ci95"],
                  "perplexity_rise_n": d["n"], "perplexity_rise_established": d["established"]})
    return points


def _collect(runs: list[dict], want_leak: bool, kinds: tuple[str, ...]) -> list[dict]:
    """Points per series and λ; runs that differ only by seed make one point (their mean)."""
    raw = _collect_raw(runs, want_leak, kinds)
    pts = _with_rise(raw, _ungrouped(aggregate_points(raw, _SAME)))
    return sorted(pts, key=lambda p: (p["series"], p["locality"]))


def _collect_raw(runs: list[dict], want_leak: bool, kinds: tuple[str, ...]) -> list[dict]:
    """One point per run and curve setting (seeds not merged), each tagged with its group."""
    pts = []
    for run in runs:
        if bool(leak_flag(run)) != want_leak:
            continue
        if protocol_of(run) == "dial":
            if "dial" in kinds:
                lams = sorted({lf for lf, t in dial_settings(run) if t == 1.0})
                pts += [_grouped(run, make_point(run, lf, lf, series=_series(run, "dial"),
                                                 curve="dial")) for lf in lams]
            continue
        lam = trained_locality(run)
        if "trained" in kinds:
            pts.append(_grouped(run, make_point(run, lam, 0.0, series=_series(run, "trained"),
                                                curve="trained")))
        if "dialled" in kinds and not want_leak and lam > 0:   # at λ=0 it is the trained point
            pts.append(_grouped(run, make_point(run, lam, lam, series=_series(run, "dialled"),
                                                curve="dialled")))
    return [p for p in pts if p]


def partition_of(run: dict) -> str:
    """The partition a run was trained with ("fixed" for runs from before it was recorded)."""
    return str(_cfg(run, "model").get("partition") or "fixed")


DEFAULT_BLOCK_SIZE = ModelConfig.block_size   # fixed runs at another size carry a tag


def _strategy_raw(runs: list[dict], block_size: int) -> list[dict]:
    pts = []
    for run in runs:
        if leak_flag(run) or protocol_of(run) != "attention":
            continue
        part = partition_of(run)
        tag = variant(run)
        size_tag = "" if block_size == DEFAULT_BLOCK_SIZE else f"block_size{block_size}"
        if part == "fixed" and (tag != size_tag
                                or _cfg(run, "model").get("block_size") != block_size):
            continue
        if part != "fixed" and tag != f"partition{part}":
            continue
        lam = trained_locality(run)
        name = f"{part} (b={block_size})" if part == "fixed" else part
        pts.append(_grouped(run, make_point(run, lam, 0.0, series=name, label=f"λ={lam:g}")))
    return [p for p in pts if p]


def strategy_points(runs: list[dict], block_size: int = DEFAULT_BLOCK_SIZE) -> list[dict]:
    """Where blocks fall: causal attention-penalty runs as trained (λ_f = 0, τ = 1), one
    series per partition. Fixed runs count only at the default ``block_size``, and no run with
    another shape change enters, so the series differ in where blocks fall and nothing else.
    Runs that differ only by seed make one point (their mean, ``n`` seeds)."""
    order = {"fixed": 0, "punctuation": 1, "recruited": 2}
    pts = _ungrouped(aggregate_points(_strategy_raw(runs, block_size), _SAME))
    return sorted(pts, key=lambda p: (order.get(p["series"].split()[0], 3), p["locality"]))


DIFF_METRICS = ("perplexity", "entropy_bits", "in_block_mass", "pointer_fidelity_mass")


def partition_differences(runs: list[dict], metrics=DIFF_METRICS,
                          block_size: int = DEFAULT_BLOCK_SIZE) -> list[dict]:
    """Each partition minus fixed at each λ (``strategy_points``' runs), paired by seed: one row
    per (partition, λ, metric) with ``paired_difference``'s figures (a λ or partition with no
    seed in common with fixed has no row)."""
    by: dict[tuple[str, float], dict[int, dict]] = {}
    for p in _strategy_raw(runs, block_size):
        if p.get("seed") is not None:
            by.setdefault((p["series"], p["locality"]), {}).setdefault(p["seed"], p)
    fixed = {lam: pts for (series, lam), pts in by.items() if series.startswith("fixed")}
    rows = []
    for (series, lam), pts in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if series.startswith("fixed") or lam not in fixed:
            continue
        for m in metrics:
            d = paired_difference({k: p.get(m) for k, p in pts.items()},
                                  {k: p.get(m) for k, p in fixed[lam].items()})
            if d["n"]:
                rows.append({"partition": series, "control": f"fixed (b={block_size})",
                             "locality": lam, "metric": m, **d})
    return rows


def verdict(row: dict) -> str:
    """A paired difference's verdict: "established" only where its 95% interval excludes zero,
    else "not established", with "(n = 1)" where one seed leaves no interval."""
    return "established" if row["established"] else (
        "not established" + (" (n = 1)" if row["n"] < 2 else ""))


def fixed_sizes(runs: list[dict]) -> list[int]:
    """The block sizes of fixed-partition attention-penalty runs, the default first."""
    sizes = {_cfg(r, "model").get("block_size") for r in runs
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
    """``_strategy_raw``'s per-run points for every arrangement at every λ: the fixed runs of
    each size (``label`` "b=<size>") and the adaptive partitions (``label`` their name), each
    tagged with ``arrangement`` ("fixed" or the partition) and ``block_size`` (None: adaptive)."""
    pts = []
    for b in fixed_sizes(runs):
        pts += [{**p, "arrangement": "fixed", "block_size": b, "label": f"b={b}"}
                for p in _strategy_raw(runs, b) if p["series"] == f"fixed (b={b})"]
    return pts + [{**p, "arrangement": p["series"], "block_size": None, "label": p["series"]}
                  for p in _strategy_raw(runs, DEFAULT_BLOCK_SIZE)
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
    out, as in ``strategy_points``."""
    raw = [p for p in _arrangements_raw(runs) if _at(p, locality)]
    pts = _ungrouped(aggregate_points(raw, _SAME))
    return sorted(pts, key=lambda p: (p["block_size"] is None, p["block_size"] or 0,
                                      _PARTITION_ORDER.get(p["series"], 2), p["series"]))


def block_control_localities(runs: list[dict]) -> list[float]:
    """The trained λ values, ascending, at which ``block_control_points`` has at least two
    arrangements to compare."""
    by: dict[float, set[str]] = {}
    for p in _arrangements_raw(runs):
        by.setdefault(p["locality"], set()).add(p["series"])
    return sorted(lam for lam, names in by.items() if len(names) >= 2)


def block_control_differences(runs: list[dict], locality: float = BLOCK_CONTROL_LOCALITY,
                              metrics=DIFF_METRICS) -> list[dict]:
    """``partition_differences`` at trained λ = ``locality`` against every fixed size present
    (the rows the report prints at that λ), grouped by partition and then by control."""
    rows = [r for b in fixed_sizes(runs) for r in partition_differences(runs, metrics, b)
            if _at(r, locality)]
    return sorted(rows, key=lambda r: (_PARTITION_ORDER.get(r["partition"], 2), r["partition"]))


def _fixed_only(runs: list[dict]) -> list[dict]:
    return [r for r in runs if partition_of(r) == "fixed"]


def curve_points(runs: list[dict]) -> list[dict]:
    """Every causal curve of fixed-block runs at τ = 1, one series each: a penalty form as
    trained (one point per λ, λ_f = 0), the same models dialled at inference to λ_f = λ ("no
    retraining"), and the dial-protocol model at each λ_f (``curve``: ``CURVES``). Each point
    carries its perplexity rise over its series' λ = 0 point, paired by seed. Other partitions
    have their own comparison (``strategy_points``)."""
    return _collect(_fixed_only(runs), False, CURVES)


def locality_differences(runs: list[dict], metrics=DIFF_METRICS) -> list[dict]:
    """Along each causal curve of ``curve_points``, each λ minus the curve's λ = 0, paired by
    seed: one row per (series, λ, metric) with ``paired_difference``'s figures. It asks how far
    a little locality moves each metric ("nearly a switch" is a large in-block change at a small
    λ with no established perplexity cost)."""
    by: dict[tuple[str, float], dict[int, dict]] = {}
    for p in _collect_raw(_fixed_only(runs), False, CURVES):
        if p.get("seed") is not None:
            by.setdefault((p["series"], p["locality"]), {}).setdefault(p["seed"], p)
    rows = []
    for (series, lam), pts in sorted(by.items()):
        zero = by.get((series, 0.0))
        if lam == 0.0 or zero is None:
            continue
        for m in metrics:
            d = paired_difference({k: p.get(m) for k, p in pts.items()},
                                  {k: p.get(m) for k, p in zero.items()})
            if d["n"]:
                rows.append({"series": series, "locality": lam, "metric": m, **d})
    return rows


def leak_points(runs: list[dict]) -> list[dict]:
    """Runs that leak (non-causal diagnostic or a failed leak test), flagged, apart."""
    return _collect(runs, True, ("trained", "dial"))


def tau_family(runs: list[dict], run_id: str) -> list[dict]:
    """A run at every τ it was evaluated at, one series per λ_f; x is ``attn_temperature``."""
    pts = []
    for run in runs:
        if run.get("run_id") != run_id:
            continue
        for lf, tau in dial_settings(run):
            pts.append(make_point(run, lf, lf, tau, series=f"λ_f={lf:g}", label=f"τ={tau:g}"))
    return sorted((p for p in pts if p), key=lambda p: (p["dial_locality"], p["attn_temperature"]))


def paper_points() -> list[dict]:
    """The papers' reported figures (REPRODUCTION.md), each labelled as the papers' report."""
    tag = {"series": PAPERS, "source": PAPERS}
    ppl, acc = PAPER["test_perplexity_l06"], PAPER["test_accuracy_l06"]
    return [{**tag, "locality": lam, "entropy_bits": PAPER[key],
             "label": f"{PAPERS}: {PAPER[key]} bits at λ={lam:.1f}"}
            for lam, key in ((1.0, "entropy_bits_l1"), (0.0, "entropy_bits_l0"))] + [
        {**tag, "locality": 0.6, "test_perplexity": ppl, "test_accuracy": acc,
         "label": f"{PAPERS}: test ppl {ppl}, acc {acc:.1%} at λ=0.6"}]


def entropy_references(points: list[dict]) -> list[dict]:
    """Horizontal lines for an entropy axis: each causal ceiling and the papers' entropies."""
    ceilings = {round(p["entropy_ceiling_bits"], 6): p["entropy_ceiling_bits"] for p in points
                if finite(p.get("entropy_ceiling_bits"))}
    refs = [{"value": c, "label": f"causal ceiling {c:.2f} bits (mean log₂ t)", "kind": "ceiling"}
            for c in sorted(ceilings.values())]
    return refs + [{"value": p["entropy_bits"], "label": p["label"], "kind": "paper"}
                   for p in paper_points() if "entropy_bits" in p]


def perplexity_references(baselines: dict | None, split: str = "valid") -> list[dict]:
    """Vertical lines for a perplexity axis: the baselines and the papers' test perplexity."""
    b = (baselines or {}).get(split) or {}
    refs = [{"value": v, "label": f"{name} baseline ({split}) {v:.0f}", "kind": "baseline"}
            for name, v in (("unigram", finite(b.get("unigram_perplexity"))),
                            ("Kneser-Ney bigram", finite(b.get("bigram_kn_perplexity")))) if v]
    return refs + [{"value": PAPER["test_perplexity_l06"], "kind": "paper",
                    "label": f"{PAPERS}: test ppl {PAPER['test_perplexity_l06']} at λ=0.6"}]


def read_baselines(folder: str | Path) -> dict | None:
    """A cache's baselines.json, checked (size cap, types: ``cache.read_baselines_file``), or
    None when it is absent or refused (``load_cache`` names why)."""
    try:
        return read_baselines_file(Path(folder) / BASELINES_FILE)
    except SweepCacheError:
        return None


def cache_stamp(folder: str | Path) -> tuple:
    """Names, sizes and times of the JSON files ``load_cache`` reads: a cache key that changes
    with them (progress.json, rewritten every few seconds by a running sweep, is not read)."""
    files, more = cache_files(folder)
    stamp = []
    for p in files:
        if p.name == PROGRESS_FILE:
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        stamp.append((p.name, st.st_mtime_ns, st.st_size))
    return (*stamp, more)


def runs_table(runs: list[dict]) -> list[dict]:
    """One row per run for browsing: headline figures at λ_f = 0, τ = 1, with the controls."""
    rows = []
    for run in runs:
        p = make_point(run, trained_locality(run), 0.0) or {}
        lt = run.get("leak_test") if isinstance(run.get("leak_test"), dict) else {}
        wall = run.get("wall_time_s") if isinstance(run.get("wall_time_s"), dict) else {}
        train = run.get("training") if isinstance(run.get("training"), dict) else {}
        passed = lt.get("passed")
        steps, stopped = train.get("steps"), train.get("stopped")
        rows.append({
            "run": str(run.get("run_id")), "protocol": protocol_of(run),
            "λ (trained)": trained_locality(run), "variant": variant(run),
            "flag": leak_flag(run) or "", "valid ppl": p.get("perplexity"),
            "valid acc": p.get("accuracy"), "test ppl": p.get("test_perplexity"),
            "causal ceiling": p.get("entropy_ceiling_bits"),
            **{label: p.get(name) for name, label in METRIC_LABELS.items()},
            "leak test": "pass" if passed is True else "FAIL" if passed is False else "—",
            "evals": len(dial_settings(run)),
            "steps": steps if isinstance(steps, int) and not isinstance(steps, bool) else None,
            "stopped": stopped if isinstance(stopped, str) else None,
            "train s": finite(wall.get("train")),
            "total s": finite(wall.get("total")),
            "git commit": str(run.get("git_commit") or "")[:10]})
    return rows


def position_rows(run: dict) -> list[dict]:
    """Test perplexity and accuracy per position in block (where a leak shows)."""
    metrics = run.get("metrics")
    evals = metrics.get("test") if isinstance(metrics, dict) else None
    for ev in evals if isinstance(evals, list) else []:
        pos = ev.get("by_position_in_block") if isinstance(ev, dict) else None
        if isinstance(pos, dict):
            return [{"position in block": k,
                     "tokens": r.get("tokens") if isinstance(r.get("tokens"), int) else None,
                     "test ppl": finite(r.get("perplexity")), "test acc": finite(r.get("accuracy"))}
                    for k, r in pos.items() if isinstance(r, dict)]
    return []


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
