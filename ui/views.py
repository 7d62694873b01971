"""What the pages show, computed by the core and reached through the one error guard
(``ui.notices.guarded``): views of one analysis (Explorer, Compare, Rules), a rule, the papers'
threshold (Theory), and the points and tables of sweep results (Tradeoff, Sweeps, Compare).
A failure is a notice; the page gets None (or an empty list), never a traceback."""
from __future__ import annotations

import json
import math

import pandas as pd
import streamlit as st

from localist_core.analysis import inspection, rules, theory
from localist_core.analysis.rules import RULE_STRENGTH_MAX  # noqa: F401 (for the Rules page)
from localist_core.experiments import comparisons, results
from localist_core.experiments.sweep import PROTOCOL_NAMES  # noqa: F401 (for the Sweeps page)
from localist_core.model.config import PARTITIONS  # noqa: F401 (for the Sweeps page)
from ui import figures
from ui.loaders import load_checkpoint
from ui.names import number, series_name
from ui.notices import guarded, plain

# The metrics the Compare page sets side by side.
COMPARED = ("entropy_bits", "in_block_mass", "recent_b_mass", "shifted_block_mass",
            "pointer_fidelity_mass", "pointer_fidelity_lift", "mean_attention_distance")


def metric_mean(metrics: dict, name: str, fmt: str = ".3f") -> str:
    """A metric's mean formatted for a caption, or "—" when an older analysis lacks it."""
    m = metrics.get(name)
    return format(m["mean"], fmt) if isinstance(m, dict) and "mean" in m else "—"

# -- the figures of one analysis, built once and shared ---------------------------------------
# A slider move that lands on a setting some session has seen before costs no plotly build: each
# builder is cached on its arguments and every session gets the same figure, which
# st.plotly_chart only reads (it draws from a copy, ``Figure.to_dict``); a hit costs the hashing
# of the arguments (BENCHMARKS.md, "Serving a class"). The largest array argument is a [T, T]
# view, at most 256² = 65,536 values, under the 500,000 above which Streamlit hashes a sample,
# so the key is exact. Limits (README "Limits"): one heatmap holds 0.28 MiB at T = 128 and
# 0.83 MiB at T = 256, an entropy strip 48–65 KiB, a top-5 bar 29 KiB (tracemalloc, ten of
# each), so each cache holds at most FIGURES_KEPT of them: ≤ 36 MiB of heatmaps at T = 128
# (≤ 106 MiB at T = 256), ≤ 8.1 MiB of strips, ≤ 3.6 MiB of bars.
FIGURES_KEPT = 128
_shared = st.cache_resource(show_spinner=False, max_entries=FIGURES_KEPT)
attention_heatmap = _shared(figures.attention_heatmap)
entropy_strip = _shared(figures.entropy_strip)
top_tokens_bar = _shared(figures.top_tokens_bar)

# -- one analysis --------------------------------------------------------------------------------

_view = guarded("draw this view of the attention")
reduce_heads = _view(inspection.reduce_heads)
cross_share = _view(inspection.cross_block_share)
difference = _view(inspection.difference)


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


# -- the Explorer's downloads, built once per view and shared like the figures ---------------
# A download button's callable runs on every click, and a forged click costs one websocket
# message: the attention CSV took ~217 ms of CPU at T = 128 each time. Each file is cached on the
# view it shows (``view_key``: checkpoint, text, dial, blocks), so a view's file is built once
# for every session and every click; a hit costs under a millisecond. Held as bytes (what
# Streamlit stores): the attention CSV is 1.8–2.2 MiB at T = 128 for the shipped models, so
# DOWNLOADS_KEPT of each kind hold ≤ 18 MiB (~35 MiB a file for 4 layers × 8 heads at
# T = 256); a metrics file is a few KiB (README "Limits").
DOWNLOADS_KEPT = 8


def view_key(s) -> tuple:
    """What identifies the sidebar's analysis (``ui.Settings``), as plain values to cache on."""
    return s.checkpoint_path, s.text, s.dial, s.block_size, s.partition


@st.cache_resource(show_spinner=False, max_entries=DOWNLOADS_KEPT)
def _attention_csv(view: tuple, _a) -> bytes:
    """``_a`` is the analysis ``view`` names; it is not hashed (the leading underscore)."""
    return csv_text(inspection.attention_table(_a)).encode()


@st.cache_resource(show_spinner=False, max_entries=DOWNLOADS_KEPT)
def _metrics_file(view: tuple, checkpoint: str, _a) -> bytes:
    return json_download(inspection.metrics_json(_a, checkpoint))


def json_download(data: dict) -> bytes:
    """``data`` as indented JSON that every parser reads: a non-finite number (an infinite
    perplexity) becomes null, and a ``notes`` entry names each such field.

    >>> json.loads(json_download({"perplexity": float("inf"), "m": [1.0, float("nan")]}))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'perplexity': None, 'm': [1.0, None],
     'notes': ['perplexity was inf, written as null', 'm[1] was nan, written as null']}
    """
    notes = []

    def clean(v, where: str):
        if isinstance(v, float) and not math.isfinite(v):
            notes.append(f"{where} was {v}, written as null")
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{where}.{k}" if where else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{where}[{i}]") for i, x in enumerate(v)]
        return v

    out = clean(data, "")
    if notes:
        out["notes"] = [*out.get("notes", []), *notes[:100]] if isinstance(
            out.get("notes"), list) else notes[:100]
    return json.dumps(out, indent=1, allow_nan=False).encode()


@guarded("write the attention table", b"")
def attention_csv(a, view: tuple) -> bytes:
    """Every visible weight of the analysis ``a`` of ``view`` (``view_key``) as CSV (one row
    per layer, head, query and key), built once per view."""
    return _attention_csv(view, a)


@guarded("write the metrics", b"{}")
def metrics_file(a, checkpoint: str, view: tuple) -> bytes:
    """The live metrics of the analysis ``a`` of ``view`` as indented JSON, built once per
    view."""
    return _metrics_file(view, checkpoint, a)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(rows: list[dict]) -> str:
    """Rows of plain values as CSV text, one column per key. A text cell that a spreadsheet
    would run as a formula (it starts with = + - @, a tab or a carriage return) gets a leading
    ``'``; numbers are left alone.

    >>> csv_text([{"token": "=HYPERLINK(1)", "w": -0.5}, {"token": "@-@", "w": 1}]).split()
    ['token,w', "'=HYPERLINK(1),-0.5", "'@-@,1.0"]
    """
    def cell(v):
        return "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v
    return pd.DataFrame([{k: cell(v) for k, v in r.items()} for r in rows]).to_csv(index=False)


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


@guarded("weigh the rule against the barrier")
def rule_reach(a, strength: float, checkpoint_path: str) -> rules.RuleReach | None:
    """The analysis's rule pairs split by block, with the barrier of its checkpoint at its λ
    (``rules.rule_reach``); None when the analysis has no rule pairs."""
    if a.rule_pairs is None:
        return None
    sharpness = load_checkpoint(checkpoint_path)[0].cfg.barrier_sharpness
    return rules.rule_reach(a.patterns, a.rule_pairs, a.block_ids, strength,
                            a.dial.locality, sharpness)


@guarded("split the rule's pairs by block")
def rule_split(reach: rules.RuleReach | None) -> str | None:
    """One sentence: how many of the rule's pairs lie inside their query's block and how many
    cross a boundary, with the attention mass on each; None without pairs."""
    if reach is None or reach.in_block_mass is None:
        return None
    n = reach.in_block_pairs + reach.cross_block_pairs
    return (f"Of the rule's {n:,} pairs, {reach.in_block_pairs:,} have their target in the "
            f"query's own block and {reach.cross_block_pairs:,} in another block; the rule's "
            f"queries put {reach.in_block_mass:.3f} of their attention on the first and "
            f"{reach.cross_block_mass:.3f} on the second.")


@guarded("weigh the rule against the barrier")
def barrier_note(reach: rules.RuleReach | None) -> str | None:
    """What the Rules page says when the cross-block barrier outweighs the rule, with the
    barrier, the strength and the pairs on each side; None when it does not."""
    if reach is None or not reach.barrier_outweighs:
        return None
    n = reach.in_block_pairs + reach.cross_block_pairs
    across = f"{reach.cross_block_pairs:,} of the rule's {n:,} pairs have their target in " \
             "another block"
    if math.isinf(reach.barrier):
        head = (f"At λ = 1 cross-block keys are masked, so the rule (+{reach.strength:g}) "
                f"cannot reach them: {across}.")
    else:
        head = (f"The barrier outweighs the rule: at λ = {reach.locality:g} every cross-block "
                f"score gets β·log(1−λ) = {reach.sharpness:g}·log({1 - reach.locality:g}) = "
                f"{reach.barrier:.1f}, and the rule adds only +{reach.strength:g} (net "
                f"{reach.net_cross:.1f}). {across}, where the rule cannot make up the "
                "barrier.")
    if reach.in_block_pairs:
        return head + (f" It acts on the {reach.in_block_pairs:,} pairs whose target shares "
                       "the query's block.")
    return head + (" No pair has its target in the query's block, so the rule cannot show: "
                   "lower λ, or choose targets that share a block with their queries.")


@guarded("list the block boundaries", [])
def boundary_rows(trace) -> list[dict]:
    """The recruited block starts of a ``RecruitTrace``: position, word and bits saved; a
    bigram trace adds the word before, each term of its test and why the block ended (its
    gain, or a full block, whose bits saved are left blank: +∞)."""
    rows = []
    for i, w, b in trace.boundaries():
        row = {"position": i, "word": w, "bits saved": b if math.isfinite(b) else None}
        if trace.terms:
            row = {"position": i, "after": trace.labels[i - 1], "word": w,
                   "bits saved": row["bits saved"],
                   "PMI (bits)": float(trace.terms["pmi"][i]),
                   "L_continue": float(trace.terms["l_continue"][i]),
                   "L_new": float(trace.terms["l_new"][i]),
                   "why": (f"block full ({trace.max_block_size} words)" if math.isinf(b)
                           else "gain > 0")}
        rows.append(row)
    return rows


@guarded("explain the missing trace")
def missing_trace_note(trace) -> str | None:
    """Why a bigram trace could not be drawn (no Kneser–Ney table fits the checkpoint), as
    plain text with server paths cut out; None when it was drawn."""
    if trace is None or not trace.missing:
        return None
    return plain(f"No word-reading trace for this checkpoint: {trace.missing}. It is drawn for "
                 "checkpoints trained with partition=bigram, which carry their own table, and "
                 "for any checkpoint with the shipped WikiText-2 vocabulary.")


def trace_title(trace) -> str:
    """The recruitment chart's title: the test and its settings."""
    if trace.partition == "bigram":
        return (f"bigram split test per position · α={trace.alpha:g}, "
                f"C={trace.boundary_bits:g} bits, at most {trace.max_block_size} words")
    return f"split test per position · α={trace.alpha:g}, C={trace.boundary_bits:g} bits"


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
            "rho_max": min(est["rho_max"], theory.RHO_MAX_CAP), "margin": round(margin, 4)}


# -- sweep results (Tradeoff, Sweeps, Compare) ---------------------------------------------------

_points = guarded("read the sweep results", [])
curve_points = _points(results.curve_points)
leak_points = _points(results.leak_points)
paper_points = _points(results.paper_points)
strategy_points = _points(results.strategy_points)
block_control_points = _points(comparisons.block_control_points)
block_control_localities = _points(comparisons.block_control_localities)
block_control_differences = _points(comparisons.block_control_differences)
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
BLOCK_CONTROL_LOCALITY = comparisons.BLOCK_CONTROL_LOCALITY

# How the table of block differences names each metric.
DIFFERENCE_LABELS = {"perplexity": "valid perplexity", "in_block_mass": "in-block mass",
                     "entropy_bits": "entropy (bits)", "pointer_fidelity_mass": "pointer fidelity",
                     "pointer_fidelity_lift": "fidelity lift over uniform"}


THEORY_COLUMNS = {"attn_temperature": "τ", "measured_cross_mass": "measured share leaving",
                  "bound_cross_mass": "bound", "estimate_cross_mass": "estimate",
                  "bound_holds": "bound holds", "exactly_local": "exactly local"}


def theory_table(rows: list[dict]) -> list[dict]:
    """The Theory page's rows (``theory.formula_rows`` via the inspection report) with column
    names and numbers a person reads (``names.number``; yes/no for the checks)."""
    def cell(v):
        return ("yes" if v else "no") if isinstance(v, bool) else number(v)
    return [{THEORY_COLUMNS.get(k, k.replace("_", " ")): cell(v) for k, v in r.items()}
            for r in rows]


@guarded("read the sweep results", [])
def differences_rows(rows: list[dict]) -> list[dict]:
    """Paired differences (``comparisons.block_control_differences``) as the Tradeoff page's
    table: partition, control, metric, n, mean difference, 95% interval and the uncorrected
    p-value. Exploratory: the findings are the pre-registered family's (REPRODUCTION.md), so
    no row carries a verdict."""
    return [{"partition": series_name(r["partition"]), "control": series_name(r["control"]),
             "metric": DIFFERENCE_LABELS.get(r["metric"], r["metric"]), "n": r["n"],
             "mean difference": None if r["mean"] is None else round(r["mean"], 3) + 0.0,
             "95% interval": "—" if r["lo"] is None else f"{r['lo']:.3f} to {r['hi']:.3f}",
             "p (uncorrected)": "—" if r.get("p") is None else
             ("< 0.001" if r["p"] < 0.001 else f"{r['p']:.3f}")} for r in rows]


# -- the papers' threshold, continued: the formulas, their words, and the sweep against them -----
# The Theory page's formulas as KaTeX source (st.latex); the page's prose holds no LaTeX.
THRESHOLD_LATEX = (r"\lambda_i^{(h)}(\tau,\delta) = \frac{2\,L_\ell\,R_x\,\sigma_X\,\sqrt{|X_i|}}"
                   r"{\tau\,(1-\rho_{\max})}\;e^{-\delta/\tau}")
BOUND_LATEX = (r"m_{\mathrm{cross}} \le \frac{n_x\,e^{-\delta/\tau}}"
               r"{n_{\mathrm{in}} + n_x\,e^{-\delta/\tau}}")
DIAL_LATEX = r"\delta(\lambda_f) = \delta_0 - \beta\,\log(1-\lambda_f)"

# Each input's plain line (what it is, where it was measured), keyed like ``threshold_inputs``.
INPUT_MEANINGS = theory.INPUT_MEANINGS
RHO_MAX_CAP = theory.RHO_MAX_CAP

# What the page says instead of the threshold, by ``theory.threshold_problems``' reason.
THRESHOLD_WORDS = {
    "no_margin": "The margin δ is {margin:.3g}, not above 0: on a typical query here, keys in "
                 "earlier blocks score as high as keys in the query's own block, or higher. "
                 "The formula assumes the opposite (own-block keys ahead by δ > 0), so at "
                 "these inputs its threshold means nothing, and no number is shown.",
    "overflow": "The formula overflows: e^(−δ/τ), or the product of the inputs, is larger "
                "than the largest number a float can hold, so the threshold is unbounded.",
    "astronomical": "The formula's threshold is above a million: no locality anyone sets comes "
                    "near it, so at these inputs the formula says no penalty confines "
                    "attention to its block. The figure itself means nothing and is not shown.",
}


@guarded("read the threshold", [])
def threshold_words(threshold: float, margin: float) -> list[str]:
    """The sentences the Theory page shows in place of the threshold (``THRESHOLD_WORDS``);
    empty when the number means what the formula says."""
    return [THRESHOLD_WORDS[k].format(margin=margin)
            for k in theory.threshold_problems(threshold, margin)]


def threshold_reading(threshold: float, margin: float, attn_temperature: float) -> str:
    """One plain line under a threshold that means what the formula says."""
    if threshold < 1e-3:
        return (f"Practically zero: with a margin this large against the temperature "
                f"(δ = {margin:.3g}, τ = {attn_temperature:g}), the formula says any locality "
                f"at all keeps this head's attention inside its block.")
    return (f"By the formula, a locality above {threshold:.3g} (on the papers' scale) keeps "
            f"this head's attention inside its block; below it, attention may leave.")


@guarded("set the sweep against the formula", [])
def formula_against_sweep(run: dict) -> list[dict]:
    """``comparisons.formula_rows`` behind the error guard."""
    return comparisons.formula_rows(run)


@guarded("set the sweep against the formula", [])
def formula_runs(runs: list[dict]) -> list[str]:
    """``comparisons.formula_runs`` behind the error guard."""
    return comparisons.formula_runs(runs)


def _worst(rows: list[dict]) -> dict | None:
    return max(rows, key=lambda r: abs(r["predicted_in_block"] - r["measured_in_block"]),
               default=None)


def _gap(row: dict) -> float:
    return abs(row["predicted_in_block"] - row["measured_in_block"])


def formula_caption(rows: list[dict]) -> str:
    """One sentence: where the formula and the sweep agree, and where they do not, along λ_f
    (at τ = 1) and along τ (at λ_f = 0); in-block masses within 0.02 count as agreeing."""
    if not rows:
        return "This run has no evaluation the formula can be set against."
    agree = [f"at λ_f = 0, τ = 1, where the one margin δ₀ = {rows[0]['margin']:.2f} is read off"]
    if any(r["locality"] == 1.0 for r in rows):
        agree.append("at λ_f = 1, where the barrier masks every cross-block key")
    off = []
    for along, key, fixed, where in (("λ_f", "locality", "τ = 1", ("attn_temperature", 1.0)),
                                     ("τ", "attn_temperature", "λ_f = 0", ("locality", 0.0))):
        part = [r for r in rows if r[where[0]] == where[1] and not r["calibration"]
                and r["locality"] < 1.0]
        worst = max(part, key=_gap, default=None)
        if worst is None:
            continue
        if _gap(worst) < 0.02:
            agree.append(f"within 0.02 along {along} at {fixed}")
        else:
            off.append(f"by {_gap(worst):.2f} along {along} at {fixed} ({along} = "
                       f"{worst[key]:g}: predicted {worst['predicted_in_block']:.2f}, measured "
                       f"{worst['measured_in_block']:.2f})")
    said = "They agree " + (", ".join(agree[:-1]) + " and " if len(agree) > 1 else "") + agree[-1]
    if not off:
        return said + "."
    return (f"{said}; elsewhere the in-block mass the formula predicts is off "
            f"{' and '.join(off)}; it gives every query the one margin δ₀.")
