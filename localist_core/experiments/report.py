"""Markdown tables for REPRODUCTION.md, built only from the sweep cache.

``python -m localist_core report --cache assets/sweep`` prints every table; each number in the
report comes from a run in the cache, which names the command that produced it.
"""
from __future__ import annotations

from pathlib import Path

from ..analysis.metrics import METRIC_LABELS
from .cache import load_cache
from .results import PAPER, find_eval, read_baselines, strategy_points  # noqa: F401 (PAPER re-exported)

ATT_COLUMNS = list(METRIC_LABELS.items())


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(v, digits=3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def run_table(runs: list[dict], dial_at: str = "trained") -> str:
    """One row per run at τ = 1: perplexity, accuracy and every attention metric with controls.

    ``dial_at="trained"`` reads penalty runs at λ_f = 0 (as trained) and the dial run at each λ.
    """
    head = ["run", "λ", "λ_f", "valid ppl", "test ppl", "test acc"] + [c for _, c in ATT_COLUMNS]
    lines = [_row(head), _row(["---"] * len(head))]
    for run in runs:
        lams = sorted({ev["dial"]["locality"] for ev in run["metrics"]["valid"]})
        points = lams if run["protocol"] == "dial" else [0.0]
        for lf in points:
            ev = find_eval(run, lf)
            if ev is None:
                continue
            test = find_eval(run, lf, split="test") or {}
            att = ev.get("attention", {})
            lines.append(_row([run["run_id"], _fmt(run["locality"], 1), _fmt(lf, 1),
                               _fmt(ev["perplexity"], 1), _fmt(test.get("perplexity"), 1),
                               _fmt(test.get("accuracy"), 3)]
                              + [_fmt(att.get(k, {}).get("mean")) for k, _ in ATT_COLUMNS]))
    return "\n".join(lines)


def dialled_table(runs: list[dict]) -> str:
    """Penalty runs dialled to λ_f = λ at inference (the "no retraining" question), τ = 1."""
    head = ["run", "λ", "ppl at λ_f=0", "ppl at λ_f=λ", "in-block at λ_f=0", "in-block at λ_f=λ",
            "H at λ_f=0", "H at λ_f=λ"]
    lines = [_row(head), _row(["---"] * len(head))]
    for run in runs:
        if run["protocol"] == "dial" or run["locality"] == 0:
            continue
        a, b = find_eval(run, 0.0), find_eval(run, run["locality"])
        if a is None or b is None:
            continue
        lines.append(_row([run["run_id"], _fmt(run["locality"], 1), _fmt(a["perplexity"], 1),
                           _fmt(b["perplexity"], 1),
                           _fmt(a["attention"]["in_block_mass"]["mean"]),
                           _fmt(b["attention"]["in_block_mass"]["mean"]),
                           _fmt(a["attention"]["entropy_bits"]["mean"]),
                           _fmt(b["attention"]["entropy_bits"]["mean"])]))
    return "\n".join(lines)


def tau_table(run: dict) -> str:
    """The τ family of one run: entropy, in-block mass and perplexity per (λ_f, τ)."""
    head = ["λ_f", "τ", "valid ppl", "H (bits)", "in-block", "fidelity"]
    lines = [_row(head), _row(["---"] * len(head))]
    for ev in run["metrics"]["valid"]:
        att = ev["attention"]
        lines.append(_row([_fmt(ev["dial"]["locality"], 1), _fmt(ev["dial"]["attn_temperature"], 2),
                           _fmt(ev["perplexity"], 1), _fmt(att["entropy_bits"]["mean"]),
                           _fmt(att["in_block_mass"]["mean"]),
                           _fmt(att["pointer_fidelity_mass"]["mean"])]))
    return "\n".join(lines)


def position_table(run: dict, locality: float = 0.0) -> str:
    """Test perplexity and accuracy by position in block (where a leak shows)."""
    ev = find_eval(run, locality, split="test")
    if ev is None or "by_position_in_block" not in ev:
        return "(no per-position results in this run)"
    lines = [_row(["position in block", "tokens", "test ppl", "test acc"]), _row(["---"] * 4)]
    for pos, r in ev["by_position_in_block"].items():
        lines.append(_row([pos, r["tokens"], _fmt(r["perplexity"], 2), _fmt(r["accuracy"], 3)]))
    return "\n".join(lines)


def _history_ppl(run: dict, step: int) -> float | None:
    for h in (run.get("training") or {}).get("history") or []:
        if h.get("step") == step:
            return h.get("valid_ppl")
    return None


def strategy_table(runs: list[dict]) -> str:
    """Fixed, punctuation and recruited partitions per λ (attention penalty, λ_f = 0,
    τ = 1), with the step-1000 validation perplexity from training (32k-token prefix)."""
    by_id = {r["run_id"]: r for r in runs}
    head = ["partition", "λ", "steps", "valid ppl", "test ppl", "test acc", "H (bits)",
            "in-block", "shifted", "uniform", "fidelity", "step-1000 ppl (32k prefix)"]
    lines = [_row(head), _row(["---"] * len(head))]
    for p in strategy_points(runs):
        run = by_id[p["run_id"]]
        lines.append(_row([p["series"], _fmt(p["locality"], 1),
                           f"{(run.get('training') or {}).get('steps', 0):,}",
                           _fmt(p["perplexity"], 1), _fmt(p["test_perplexity"], 1),
                           _fmt(p["test_accuracy"], 3), _fmt(p["entropy_bits"]),
                           _fmt(p["in_block_mass"]), _fmt(p["shifted_block_mass"]),
                           _fmt(p["uniform_in_block_mass"]), _fmt(p["pointer_fidelity_mass"]),
                           _fmt(_history_ppl(run, 1000), 1)]))
    return "\n".join(lines)


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


def full_report(cache_dir: str | Path) -> str:
    runs, problems = load_cache(cache_dir)
    parts = ["## Baselines", baselines_table(cache_dir), "", "## Runs (τ = 1)", run_table(runs), "",
             "## Penalty models dialled at inference", dialled_table(runs), "",
             "## Partitions: fixed, punctuation, recruited", strategy_table(runs), ""]
    for run in runs:
        if run["protocol"] == "dial":
            parts += ["## τ family of the dial model", tau_table(run), ""]
        causal_l0 = run["protocol"] == "attention" and run["locality"] == 0
        if run["config"]["model"].get("noncausal_diagnostic") or causal_l0:
            parts += [f"## {run['run_id']}: by position in block (test)", position_table(run), ""]
    leak = [_row(["run", "leak test", "max abs diff"]), _row(["---"] * 3)]
    for run in runs:
        lt = run.get("leak_test", {})
        leak.append(_row([run["run_id"], "pass" if lt.get("passed") else "FAIL",
                          f"{lt.get('max_abs_diff', float('nan')):.1e}"]))
    parts += ["## Leak test", "\n".join(leak)]
    if problems:
        parts += ["", "Refused cache files:"] + [f"- {p}" for p in problems]
    return "\n".join(parts)

