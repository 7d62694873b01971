"""Markdown tables for REPRODUCTION.md, built only from the sweep cache.

``python -m localist_core report --cache assets/sweep`` prints every table; each number in the
report comes from a run in the cache, which names the command that produced it. The tables read
a run only as ``cache.read_result`` checked it: what that check lets be absent (the protocol,
the attention metrics, the model config, …) is shown as "—" or left out, never a KeyError.
Metric columns take their labels from ``metrics.METRIC_LABELS``.
"""
from __future__ import annotations

from pathlib import Path

from ..analysis.metrics import METRIC_LABELS
from .cache import load_cache
from .comparisons import (
    LIFT,
    control_differences,
    dial_differences,
    formula_rows,
    formula_runs,
    lift_intervals,
    locality_differences,
    with_q_values,
)
from .family import FAMILY_SEEDS, primary_family
from .results import (  # noqa: F401 (PAPER re-exported)
    PAPER,
    curve_points,
    dial_settings,
    find_eval,
    protocol_of,
    read_baselines,
    strategy_points,
    trained_locality,
)
from .stats import finite

ATT_COLUMNS = list(METRIC_LABELS.items())
# The metrics of the narrower tables, in METRIC_LABELS's order; their labels head the columns.
TAU_METRICS = ("entropy_bits", "in_block_mass", "pointer_fidelity_mass")
DIALLED_METRICS = ("in_block_mass", "entropy_bits")
STRATEGY_METRICS = ("entropy_bits", "in_block_mass", "shifted_block_mass",
                    "uniform_in_block_mass", "visible_in_block_keys", "pointer_fidelity_mass",
                    "uniform_pointer_fidelity", "pointer_fidelity_lift")
SEEDS_METRICS = TAU_METRICS
DIGITS = {"visible_in_block_keys": 2}     # a count of keys; every other metric 3 digits


def _labels(keys) -> list[str]:
    return [METRIC_LABELS[k] for k in keys]


def _mean(ev: dict, key: str) -> float | None:
    """An eval's mean of one attention metric; None when the run stored no attention."""
    return ((ev.get("attention") or {}).get(key) or {}).get("mean")


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _lam(v) -> str:
    """A λ as written (0.05 stays 0.05: a fixed one-decimal format printed it as 0.1)."""
    v = finite(v)
    return "—" if v is None else f"{v:g}"


def _fmt(v, digits=3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _pm(p: dict, key: str, digits=3) -> str:
    """A point's figure, as "mean ± sd (n)" where it averages n > 1 seeds."""
    sd = p.get(f"{key}_sd")
    if (p.get("n") or 1) > 1 and sd is not None and p.get(key) is not None:
        return f"{p[key]:.{digits}f} ± {sd:.{digits}f} ({p['n']})"
    return _fmt(p.get(key), digits)


def run_table(runs: list[dict], dial_at: str = "trained") -> str:
    """One row per run at τ = 1: perplexity, accuracy and every attention metric with controls.

    ``dial_at="trained"`` reads penalty runs at λ_f = 0 (as trained) and the dial run at each λ.
    """
    head = ["run", "λ", "λ_f", "valid ppl", "test ppl", "test acc"] + [c for _, c in ATT_COLUMNS]
    lines = [_row(head), _row(["---"] * len(head))]
    for run in runs:
        lams = sorted({lf for lf, _ in dial_settings(run)})
        points = lams if protocol_of(run) == "dial" else [0.0]
        for lf in points:
            ev = find_eval(run, lf)
            if ev is None:
                continue
            test = find_eval(run, lf, split="test") or {}
            lines.append(_row([run["run_id"], _lam(trained_locality(run)), _lam(lf),
                               _fmt(ev["perplexity"], 1), _fmt(test.get("perplexity"), 1),
                               _fmt(test.get("accuracy"), 3)]
                              + [_fmt(_mean(ev, k)) for k, _ in ATT_COLUMNS]))
    return "\n".join(lines)


def dialled_table(runs: list[dict]) -> str:
    """Penalty runs dialled to λ_f = λ at inference (the "no retraining" question), τ = 1."""
    head = ["run", "λ", "ppl at λ_f=0", "ppl at λ_f=λ"] + [
        f"{label} at λ_f={at}" for label in _labels(DIALLED_METRICS) for at in ("0", "λ")]
    lines = [_row(head), _row(["---"] * len(head))]
    for run in runs:
        lam = trained_locality(run)
        if protocol_of(run) == "dial" or lam == 0:
            continue
        a, b = find_eval(run, 0.0), find_eval(run, lam)
        if a is None or b is None:
            continue
        lines.append(_row([run["run_id"], _lam(lam), _fmt(a["perplexity"], 1),
                           _fmt(b["perplexity"], 1)]
                          + [_fmt(_mean(ev, k)) for k in DIALLED_METRICS for ev in (a, b)]))
    return "\n".join(lines)


def tau_table(run: dict) -> str:
    """The τ family of one run: entropy, in-block mass and perplexity per (λ_f, τ)."""
    head = ["λ_f", "τ", "valid ppl"] + _labels(TAU_METRICS)
    lines = [_row(head), _row(["---"] * len(head))]
    for ev in run["metrics"]["valid"]:
        lines.append(_row([_lam(ev["dial"]["locality"]), _fmt(ev["dial"]["attn_temperature"], 2),
                           _fmt(ev["perplexity"], 1)]
                          + [_fmt(_mean(ev, k)) for k in TAU_METRICS]))
    return "\n".join(lines)


def position_table(run: dict, locality: float = 0.0) -> str:
    """Test perplexity and accuracy by position in block (where a leak shows)."""
    ev = find_eval(run, locality, split="test")
    if ev is None or "by_position_in_block" not in ev:
        return "(no per-position results in this run)"
    lines = [_row(["position in block", "tokens", "test ppl", "test acc"]), _row(["---"] * 4)]
    for pos, r in ev["by_position_in_block"].items():
        lines.append(_row([pos, r.get("tokens", "—"), _fmt(r.get("perplexity"), 2),
                           _fmt(r.get("accuracy"), 3)]))
    return "\n".join(lines)


def strategy_table(runs: list[dict]) -> str:
    """Fixed, punctuation and recruited partitions per λ (attention penalty, λ_f = 0,
    τ = 1), with the step-1000 validation perplexity from training (32k-token prefix), as
    mean ± sd over seeds like every other column."""
    by_id = {r["run_id"]: r for r in runs}
    head = (["partition", "λ", "steps", "valid ppl", "test ppl", "test acc"]
            + _labels(STRATEGY_METRICS) + ["step-1000 ppl (32k prefix)"])
    lines = [_row(head), _row(["---"] * len(head))]
    for p in strategy_points(runs):
        run = by_id[p["run_id"]]
        lines.append(_row([p["series"], _lam(p["locality"]),
                           f"{(run.get('training') or {}).get('steps') or 0:,}",
                           _pm(p, "perplexity", 1), _pm(p, "test_perplexity", 1),
                           _pm(p, "test_accuracy", 3)]
                          + [_pm(p, k, DIGITS.get(k, 3)) for k in STRATEGY_METRICS]
                          + [_pm(p, "step1000_perplexity", 1)]))
    return "\n".join(lines)


def seeds_table(runs: list[dict]) -> str | None:
    """The curves' points that average several seeds, as mean ± sd (n) with the 95% t-interval
    half-width of the perplexity; None when every point is a single seed."""
    pts = [p for p in curve_points(runs) if (p.get("n") or 1) > 1]
    if not pts:
        return None
    head = ["series", "λ", "seeds", "valid ppl", "± 95% CI (ppl)"] + _labels(SEEDS_METRICS)
    lines = [_row(head), _row(["---"] * len(head))]
    for p in pts:
        lines.append(_row([p["series"], _lam(p["locality"]), p["seeds"],
                           _pm(p, "perplexity", 1), _fmt(p.get("perplexity_ci95"), 1)]
                          + [_pm(p, k) for k in SEEDS_METRICS]))
    return "\n".join(lines)


def _ci(r: dict) -> str:
    return "—" if r["lo"] is None else f"[{r['lo']:.3f}, {r['hi']:.3f}]"


def _p(p) -> str:
    """A p- or q-value to three significant figures, "< 0.001" below that."""
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _relative(r: dict) -> str:
    """The mean difference over the control's mean, as a signed percentage; none for the
    fidelity lift, whose control sits at its own baseline, about zero."""
    base = r.get("base_mean")
    if r["mean"] is None or not base or r.get("metric") == LIFT:
        return "—"
    return f"{100 * r['mean'] / base:+.1f}%"


def _interval_table(rows: list[dict], lead: list[str], key, mean: str = "mean diff") -> str | None:
    """Exploratory rows of ``stats.paired_difference`` figures as a table: the columns ``lead``
    (each row's ``key(row)``), then n, the mean, the relative change, sd, the 95% interval, the
    uncorrected p and the Benjamini–Hochberg q (the rows' own ``q``, else over this table);
    no verdict: only the primary family's rows carry one. None when no row has two seeds."""
    if not any(r["n"] > 1 for r in rows):
        return None
    if any("q" not in r for r in rows):
        rows = with_q_values(rows)
    head = lead + ["n", mean, "relative", "sd", "95% CI", "p", "BH q"]
    lines = [_row(head), _row(["---"] * len(head))]
    for r in rows:
        lines.append(_row(key(r) + [r["n"], _fmt(r["mean"]), _relative(r), _fmt(r["sd"]),
                                    _ci(r), _p(r["p"]), _p(r["q"])]))
    return "\n".join(lines)


def family_table(runs: list[dict]) -> str:
    """The pre-registered primary family (``family.primary_family``): each question's paired
    difference, relative effect, 95% interval, p-value, Holm-adjusted p-value over all ten and
    verdict."""
    head = ["#", "question", "metric", "seeds", "mean diff", "relative", "95% CI", "p",
            "Holm p", "verdict"]
    lines = [_row(head), _row(["---"] * len(head))]
    for r in primary_family(runs):
        lines.append(_row([r["key"], r["question"], r["metric"], r["n"], _fmt(r["mean"]),
                           _relative(r), _ci(r), _p(r["p"]), _p(r["p_holm"]), r["verdict"]]))
    return "\n".join(lines)


def differences_table(runs: list[dict], rows: list[dict] | None = None) -> str | None:
    """Each partition minus fixed blocks at each λ, paired by seed: mean difference, relative
    change, sd, n, the 95% t-interval, p and q (exploratory). Every fixed block size in the
    cache is a control (fixed-5, the default; fixed-7, matched to punctuation in visible
    in-block keys), and so is each adaptive partition for the ones after it (bigram −
    punctuation). None when no pair of settings shares two seeds."""
    return _interval_table(control_differences(runs) if rows is None else rows,
                           ["partition", "− control", "λ", "metric"],
                           lambda r: [r["partition"], r["control"], _lam(r["locality"]),
                                      r["metric"]])


def locality_table(runs: list[dict], rows: list[dict] | None = None) -> str | None:
    """Along each curve, each λ minus λ = 0, paired by seed (``comparisons.locality_differences``),
    exploratory like the rest; None when no pair shares two seeds."""
    return _interval_table(locality_differences(runs) if rows is None else rows,
                           ["series", "λ − 0", "metric"],
                           lambda r: [r["series"], _lam(r["locality"]), r["metric"]])


def dial_table(runs: list[dict], rows: list[dict] | None = None) -> str | None:
    """Each dial curve at λ_f = λ minus the penalty model trained at λ, paired by seed
    (``comparisons.dial_differences``), exploratory; None when no pair shares two seeds."""
    return _interval_table(dial_differences(runs) if rows is None else rows,
                           ["dial series", "− control", "λ_f = λ", "metric"],
                           lambda r: [r["series"], r["control"], _lam(r["locality"]),
                                      r["metric"]])


def lift_table(runs: list[dict], rows: list[dict] | None = None) -> str | None:
    """Each setting's pointer-fidelity lift against zero, the fidelity uniform attention over
    the query's visible in-block keys would give (``comparisons.lift_intervals``), exploratory;
    None when no setting has two seeds."""
    return _interval_table(lift_intervals(runs) if rows is None else rows, ["series", "λ"],
                           lambda r: [r["series"], _lam(r["locality"])], mean="mean lift")


def exploratory_rows(runs: list[dict]) -> dict[str, list[dict]]:
    """The rows of the four exploratory tables, each with its Benjamini–Hochberg q-value taken
    over all of them together (one exploratory family for the whole report)."""
    parts = {"differences": control_differences(runs), "locality": locality_differences(runs),
             "dial": dial_differences(runs), "lift": lift_intervals(runs)}
    flat = with_q_values([r for rows in parts.values() for r in rows])
    out, i = {}, 0
    for name, rows in parts.items():
        out[name], i = flat[i:i + len(rows)], i + len(rows)
    return out


AGREE = 0.05   # |predicted − measured| in-block mass the formula table counts as agreement


def formula_table(runs: list[dict]) -> str | None:
    """The threshold formula against each usable run (``comparisons.formula_rows``): its one margin
    δ₀ read at λ_f = 0, τ = 1, how many other settings the prediction meets within ``AGREE``,
    and the worst miss. None when no run can be used."""
    lines = []
    for run_id in formula_runs(runs):
        rows = [r for r in formula_rows(next(x for x in runs if x.get("run_id") == run_id))
                if not r["calibration"]]
        if not rows:
            continue
        gap = lambda r: abs(r["predicted_in_block"] - r["measured_in_block"])  # noqa: E731
        worst = max(rows, key=gap)
        lines.append(_row([run_id, _fmt(rows[0]["barrier_sharpness"], 0),
                           _fmt(rows[0]["margin"], 2),
                           f"{sum(gap(r) <= AGREE for r in rows)} of {len(rows)}",
                           f"λ_f={worst['locality']:g}, τ={worst['attn_temperature']:g}: "
                           f"{worst['measured_in_block']:.3f} vs "
                           f"{worst['predicted_in_block']:.3f}"]))
    if not lines:
        return None
    head = ["run", "β", "δ₀", f"within {AGREE:g}", "worst: measured vs predicted in-block mass"]
    return "\n".join([_row(head), _row(["---"] * len(head))] + lines)


def baselines_table(cache_dir: str | Path) -> str:
    data = read_baselines(cache_dir)
    if not data:
        return "(no baselines.json in this cache)"
    lines = [_row(["split", "unigram ppl", "Kneser-Ney bigram ppl"]), _row(["---"] * 3)]
    for split in ("valid", "test"):
        b = data[split]
        lines.append(_row([split, _fmt(b["unigram_perplexity"], 1),
                           _fmt(b["bigram_kn_perplexity"], 1)]))
    return "\n".join(lines)


def full_report(cache_dir: str | Path, runs: list[dict] | None = None) -> str:
    """Every table of a sweep cache. ``runs``: the cache's runs when the caller has already
    read them (``load_cache``, which checks each); otherwise they are read here and any file
    it refused is listed at the end."""
    problems: list[str] = []
    if runs is None:
        runs, problems = load_cache(cache_dir)
    explore = exploratory_rows(runs)
    parts = ["## The primary family (pre-registered; Holm-adjusted over its ten rows, verdicts "
             f"need {FAMILY_SEEDS} seeds)", family_table(runs), "",
             "## Baselines", baselines_table(cache_dir), "", "## Runs (τ = 1)", run_table(runs), "",
             "## Penalty models dialled at inference", dialled_table(runs), "",
             "## Partitions: fixed, punctuation, recruited", strategy_table(runs), ""]
    seeds, diffs = seeds_table(runs), differences_table(runs, explore["differences"])
    if seeds:
        parts += ["## Across seeds (τ = 1): mean ± sd (n)", seeds, ""]
    if diffs:
        parts += ["## Exploratory: partitions minus their controls, paired by seed (95% "
                  "t-interval, BH q over every exploratory row)", diffs, ""]
    along = locality_table(runs, explore["locality"])
    if along:
        parts += ["## Exploratory: each λ minus λ = 0, paired by seed (95% t-interval, BH q)",
                  along, ""]
    dial = dial_table(runs, explore["dial"])
    if dial:
        parts += ["## Exploratory: the dial at λ_f = λ minus the penalty model trained at λ, "
                  "paired by seed (95% t-interval, BH q)", dial, ""]
    lift = lift_table(runs, explore["lift"])
    if lift:
        parts += ["## Exploratory: pointer fidelity lift over its uniform-attention baseline, "
                  "against zero (95% t-interval, BH q)", lift, ""]
    formula = formula_table(runs)
    if formula:
        parts += ["## The threshold formula against the sweep (one margin per run)", formula, ""]
    for run in runs:
        if protocol_of(run) == "dial":
            parts += [f"## τ family of {run['run_id']}", tau_table(run), ""]
        causal_l0 = protocol_of(run) == "attention" and trained_locality(run) == 0
        if (run["config"].get("model") or {}).get("noncausal_diagnostic") or causal_l0:
            parts += [f"## {run['run_id']}: by position in block (test)", position_table(run), ""]
    leak = [_row(["run", "leak test", "max abs diff"]), _row(["---"] * 3)]
    for run in runs:
        lt = run.get("leak_test") or {}
        diff = finite(lt.get("max_abs_diff"))
        verdict = {True: "pass", False: "FAIL"}.get(lt.get("passed"), "—")   # "—": not run
        leak.append(_row([run["run_id"], verdict, "—" if diff is None else f"{diff:.1e}"]))
    parts += ["## Leak test", "\n".join(leak)]
    if problems:
        parts += ["", "Refused cache files:"] + [f"- {p}" for p in problems]
    return "\n".join(parts)

