"""Sweep-cache results as flat points and tables: the curves of the Tradeoff page and the report,
as plain dicts (the figures that draw them are ``ui.figures``)."""
from __future__ import annotations

from pathlib import Path

from ..analysis.metrics import METRIC_NAMES, causal_entropy_ceiling
from ..model.config import is_finite_number
from .cache import (
    BASELINES_FILE,
    PROGRESS_FILE,
    SweepCacheError,
    cache_files,
    read_baselines_file,
)
from .sweep import PROTOCOL_NAMES

PAPERS = "papers' report"
# The papers' reported figures (REPRODUCTION.md), shown beside ours, never in place of ours.
PAPER = {"entropy_bits_l1": 5.36, "entropy_bits_l0": 7.18, "test_perplexity_l06": 4.65,
         "test_accuracy_l06": 0.847}
LEAK = "LEAK"


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
    base = "dial" if proto == "dial" else f"{proto}-l{trained_locality(run):.1f}"
    return rid[len(base) + 1:] if rid.startswith(base + "-") else ""


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
               series: str = "", label: str | None = None) -> dict | None:
    """One flat point of a run's eval at (λ_f, τ), with its test figures at τ = 1; None if the
    eval is missing. ``lam`` is where the point sits on a λ axis."""
    ev = find_eval(run, dial_locality, tau)
    if ev is None:
        return None
    test = find_eval(run, dial_locality, tau, "test") or {}
    att = ev.get("attention") if isinstance(ev.get("attention"), dict) else {}
    n_ctx = _cfg(run, "model").get("n_ctx")
    ceiling = finite(ev.get("entropy_ceiling_bits"))
    if ceiling is None and isinstance(n_ctx, int) and n_ctx > 0:
        ceiling = causal_entropy_ceiling(n_ctx)
    p = {"series": series, "label": label or f"λ={lam:g}", "run_id": str(run.get("run_id")),
         "protocol": protocol_of(run), "variant": variant(run),
         "trained_locality": trained_locality(run), "locality": lam,
         "dial_locality": dial_locality, "attn_temperature": tau,
         "perplexity": finite(ev.get("perplexity")), "accuracy": finite(ev.get("accuracy")),
         "test_perplexity": finite(test.get("perplexity")),
         "test_accuracy": finite(test.get("accuracy")), "entropy_ceiling_bits": ceiling,
         "leak": leak_flag(run)}
    for k in METRIC_NAMES:
        p[k] = finite(att[k].get("mean")) if isinstance(att.get(k), dict) else None
    return p


def _series(run: dict, kind: str) -> str:
    if leak_flag(run):
        return f"{LEAK} · {run.get('run_id')}"
    tag = f" · {variant(run)}" if variant(run) else ""
    if protocol_of(run) == "dial":
        return f"dial protocol{tag}"
    how = "as trained" if kind == "trained" else "dialled to λ_f=λ"
    return f"{protocol_of(run)} penalty · {how}{tag}"


def _collect(runs: list[dict], want_leak: bool, kinds: tuple[str, ...]) -> list[dict]:
    pts = []
    for run in runs:
        if bool(leak_flag(run)) != want_leak:
            continue
        if protocol_of(run) == "dial":
            if "dial" in kinds:
                lams = sorted({lf for lf, t in dial_settings(run) if t == 1.0})
                pts += [make_point(run, lf, lf, series=_series(run, "dial")) for lf in lams]
            continue
        lam = trained_locality(run)
        if "trained" in kinds:
            pts.append(make_point(run, lam, 0.0, series=_series(run, "trained")))
        if "dialled" in kinds and not want_leak and lam > 0:   # at λ=0 it is the trained point
            pts.append(make_point(run, lam, lam, series=_series(run, "dialled")))
    return sorted((p for p in pts if p), key=lambda p: (p["series"], p["locality"]))


def partition_of(run: dict) -> str:
    """The partition a run was trained with ("fixed" for runs from before it was recorded)."""
    return str(_cfg(run, "model").get("partition") or "fixed")


def strategy_points(runs: list[dict], block_size: int = 5) -> list[dict]:
    """Where blocks fall: causal attention-penalty runs as trained (λ_f = 0, τ = 1), one
    series per partition. Fixed runs count only at the default ``block_size``, and no run with
    another shape change enters, so the series differ in where blocks fall and nothing else."""
    pts = []
    for run in runs:
        if leak_flag(run) or protocol_of(run) != "attention":
            continue
        part = partition_of(run)
        tag = variant(run)
        if part == "fixed" and (tag or _cfg(run, "model").get("block_size") != block_size):
            continue
        if part != "fixed" and tag != f"partition{part}":
            continue
        lam = trained_locality(run)
        name = f"{part} (b={block_size})" if part == "fixed" else part
        pts.append(make_point(run, lam, 0.0, series=name, label=f"λ={lam:g}"))
    order = {"fixed": 0, "punctuation": 1, "recruited": 2}
    return sorted((p for p in pts if p),
                  key=lambda p: (order.get(p["series"].split()[0], 3), p["locality"]))


def _fixed_only(runs: list[dict]) -> list[dict]:
    return [r for r in runs if partition_of(r) == "fixed"]


def curve_points(runs: list[dict]) -> list[dict]:
    """Every causal curve of fixed-block runs at τ = 1, one series each: a penalty form as
    trained (one point per λ, λ_f = 0), the same models dialled at inference to λ_f = λ ("no
    retraining"), and the dial-protocol model at each λ_f. Other partitions have their own
    comparison (``strategy_points``)."""
    return _collect(_fixed_only(runs), False, ("trained", "dialled", "dial"))


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
            "entropy (bits)": p.get("entropy_bits"), "H/H_max": p.get("normalised_entropy"),
            "causal ceiling": p.get("entropy_ceiling_bits"),
            "in-block": p.get("in_block_mass"), "recent-b": p.get("recent_b_mass"),
            "shifted": p.get("shifted_block_mass"), "uniform": p.get("uniform_in_block_mass"),
            "fidelity": p.get("pointer_fidelity_mass"),
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
