"""Sweep-cache results as flat points and tables: the curves of the Tradeoff page and the report,
as plain dicts, seeds merged (statistics: ``stats``; settings compared by seed: ``comparisons``;
the figures that draw them: ``ui.sweep_figures``)."""
from __future__ import annotations

import json
from pathlib import Path

from ..analysis.metrics import METRIC_LABELS, METRIC_NAMES, causal_entropy_ceiling
from ..model.config import ModelConfig
from .cache import (
    BASELINES_FILE,
    PROGRESS_FILE,
    SweepCacheError,
    cache_files,
    read_baselines_file,
)
from .stats import finite, paired_difference, summary
from .sweep import PROTOCOL_NAMES, locality_tag, normalized_config

PAPERS = "papers' report"
# The papers' reported figures (REPRODUCTION.md), shown beside ours, never in place of ours.
PAPER = {"entropy_bits_l1": 5.36, "entropy_bits_l0": 7.18, "test_perplexity_l06": 4.65,
         "test_accuracy_l06": 0.847}
LEAK = "LEAK"

# The numbers a point averages over seeds; each gets ``<key>_sd`` and ``<key>_ci95``.
STAT_KEYS = ("perplexity", "accuracy", "test_perplexity", "test_accuracy", "step1000_perplexity",
             *METRIC_NAMES)
HISTORY_STEP = 1000   # the training step whose 32k-prefix validation perplexity a point carries


def history_perplexity(run: dict, step: int = HISTORY_STEP) -> float | None:
    """The validation perplexity training logged at ``step`` (on its 32k-token prefix)."""
    training = run.get("training") if isinstance(run.get("training"), dict) else {}
    for h in training.get("history") or []:
        if isinstance(h, dict) and h.get("step") == step:
            return finite(h.get("valid_ppl"))
    return None


def config_part(run: dict, part: str) -> dict:
    """One part ("model", "train", "eval", …) of a run's stored config; {} when it has none."""
    cfg = run.get("config")
    sub = cfg.get(part) if isinstance(cfg, dict) else None
    return sub if isinstance(sub, dict) else {}


def protocol_of(run: dict) -> str:
    """"attention", "weights" or "dial" (from the run, else from its training config)."""
    if isinstance(run.get("protocol"), str) and run["protocol"] in PROTOCOL_NAMES:
        return run["protocol"]
    train = config_part(run, "train")
    return "dial" if train.get("protocol") == "dial" else str(train.get("penalty_form", "?"))


def trained_locality(run: dict) -> float:
    """λ of the penalty a run was trained with (0 for the dial protocol)."""
    return finite(run.get("locality")) or finite(config_part(run, "train").get("locality")) or 0.0


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
    seed = config_part(run, "train").get("seed")
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
    if config_part(run, "model").get("noncausal_diagnostic"):
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
    n_ctx = config_part(run, "model").get("n_ctx")
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
         "test_accuracy": finite(test.get("accuracy")),
         "step1000_perplexity": history_perplexity(run), "entropy_ceiling_bits": ceiling,
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


def merge_seeds(points: list[dict]) -> list[dict]:
    """Per-run points (``curve_run_points``, ``strategy_run_points``) of one series, λ, λ_f and
    τ that differ only by seed, merged into one (``aggregate_points``); the group tag dropped."""
    return _ungrouped(aggregate_points(points, _SAME))


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
    pts = _with_rise(raw, merge_seeds(raw))
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
    return str(config_part(run, "model").get("partition") or "fixed")


DEFAULT_BLOCK_SIZE = ModelConfig.block_size   # fixed runs at another size carry a tag


def strategy_run_points(runs: list[dict], block_size: int) -> list[dict]:
    """``strategy_points``' per-run points (seeds not merged), each tagged with its group."""
    pts = []
    for run in runs:
        if leak_flag(run) or protocol_of(run) != "attention":
            continue
        part = partition_of(run)
        tag = variant(run)
        size_tag = "" if block_size == DEFAULT_BLOCK_SIZE else f"block_size{block_size}"
        if part == "fixed" and (tag != size_tag
                                or config_part(run, "model").get("block_size") != block_size):
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
    pts = merge_seeds(strategy_run_points(runs, block_size))
    return sorted(pts, key=lambda p: (order.get(p["series"].split()[0], 3), p["locality"]))


def _fixed_only(runs: list[dict]) -> list[dict]:
    return [r for r in runs if partition_of(r) == "fixed"]


def curve_points(runs: list[dict]) -> list[dict]:
    """Every causal curve of fixed-block runs at τ = 1, one series each: a penalty form as
    trained (one point per λ, λ_f = 0), the same models dialled at inference to λ_f = λ ("no
    retraining"), and the dial-protocol model at each λ_f (``curve``: ``CURVES``). Each point
    carries its perplexity rise over its series' λ = 0 point, paired by seed. Other partitions
    have their own comparison (``strategy_points``)."""
    return _collect(_fixed_only(runs), False, CURVES)


def curve_run_points(runs: list[dict]) -> list[dict]:
    """``curve_points``' per-run points (seeds not merged), each tagged with its group."""
    return _collect_raw(_fixed_only(runs), False, CURVES)


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
