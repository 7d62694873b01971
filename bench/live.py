"""Live path on ``cpu-ref`` (bars in BENCHMARKS.md): forward + all patterns + metrics for one
sequence, the heatmap figure build, and a full app rerun after a slider move (AppTest).

    python -m bench.live            # the table recorded in BENCHMARKS.md
    python -m bench.live --quick    # smoke run (tests): a few iterations, numbers meaningless

``--threads`` sets torch's threads for the core and figure tables; the app rerun runs as the
server does, on ``ui.SCRIPT_TORCH_THREADS`` (``ui.run_page`` sets it on every run).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from bench.common import machine, parser, print_table, run, summary, time_calls
from localist_core import load_model
from localist_core.analysis.inspection import analyze, reduce_heads
from localist_core.model.config import ModelConfig, preset
from localist_core.model.dial import Dial
from localist_core.model.transformer import LocalistLM
from ui.figures import attention_heatmap, entropy_strip

ROOT = Path(__file__).resolve().parents[1]
DIAL = ROOT / "assets" / "checkpoints" / "dial"
BARS = {"core": 20.0, "figure": 30.0, "rerun": 300.0}   # the bars in BENCHMARKS.md, ms at T = 128


def _text(tokenizer, n_tokens: int, seed: int = 0) -> str:
    """A text of exactly ``n_tokens`` in-vocabulary words drawn from the frequent ones."""
    rng = random.Random(seed)
    words = [w for w in tokenizer.words[:3000] if "<" not in w and "@" not in w]
    ids = tokenizer.encode(" ".join(rng.choice(words) for _ in range(n_tokens * 2)))
    return tokenizer.decode(ids[:n_tokens])


def _model_for(n_ctx: int):
    """The shipped dial model when its context suffices, else a same-shape model with a longer
    context (random weights: the timing does not depend on them)."""
    model, tok = load_model(DIAL)
    if n_ctx <= model.cfg.n_ctx:
        return model, tok, "shipped dial"
    cfg = ModelConfig(**{**preset("cpu-ref").model, "vocab_size": model.cfg.vocab_size,
                         "n_ctx": n_ctx})
    return LocalistLM(cfg, model.local_entropy).eval(), tok, f"cpu-ref shape, n_ctx {n_ctx}"


def _core_row(n: int, repeat: int):
    """Time ``analyze`` on one T-token text; return the row and the last analysis."""
    model, tok, what = _model_for(n)
    text = _text(tok, n)
    lams = iter([0.1 + 0.8 * random.random() for _ in range(repeat + 10)])
    s = summary(time_calls(lambda: analyze(model, tok, text, Dial(next(lams))), repeat))
    row = [n, what, s["p50"], s["p95"], BARS["core"] if n == 128 else "—"]
    return row, analyze(model, tok, text, Dial(locality=0.5))


def _figure_rows(a, repeat: int):
    """Time the Explorer's heatmap (head mean, all layers) and entropy strip for ``a``."""
    n = len(a.labels)
    fs = summary(time_calls(lambda: attention_heatmap(
        reduce_heads(a.patterns, None, None), a.labels, a.block_ids, a.anchor_mask, a.block_anchors,
        title="bench"), repeat))
    ss = summary(time_calls(lambda: entropy_strip(a.entropy.mean((0, 1)), a.labels), repeat))
    return [[f"heatmap (T={n})", fs["p50"], fs["p95"], BARS["figure"]],
            [f"entropy strip (T={n})", ss["p50"], ss["p95"], "—"]]


def bench_core(lengths, repeat):
    rows, figs = [], []
    for n in lengths:
        row, a = _core_row(n, repeat)
        rows.append(row)
        if n == 128:
            figs = _figure_rows(a, repeat)
    return rows, figs


def bench_rerun(repeat: int, n_tokens: int = 128):
    """A full Explorer rerun after the λ slider moves, on the shipped dial model and a text of
    ``n_tokens`` words (given as a deep link). Each move goes to a new λ, so the forward pass is
    never a cache hit."""
    from streamlit.testing.v1 import AppTest

    _, tok = load_model(DIAL)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["text"] = _text(tok, n_tokens)
    at.run()
    heatmap = next(c for c in at.get("plotly_chart") if c.key == "heatmap")
    tokens = len(json.loads(heatmap.proto.spec)["data"][0]["x"])    # one column per token
    if tokens != n_tokens:
        raise SystemExit(f"the app shows {tokens} tokens, expected {n_tokens}")
    if at.exception:
        raise SystemExit(f"the app failed: {[e.value for e in at.exception]}")
    values = [round(0.01 * (i % 97 + 1), 2) for i in range(repeat + 3)]
    it = iter(values)
    ms = time_calls(lambda: at.sidebar.slider(key="lam").set_value(next(it)).run(), repeat,
                    warmup=3)
    if at.exception:
        raise SystemExit(f"the app failed: {[e.value for e in at.exception]}")
    return summary(ms)


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(args.threads)
    lengths = [32, 128] if args.quick else [32, 128, 256]
    repeat = 3 if args.quick else 100
    print(f"machine: {machine()}")
    rows, figs = bench_core(lengths, repeat)
    print_table("Live core: forward + all patterns + metrics (ms)",
                ["T", "model", "p50", "p95", "bar p95"], rows)
    print_table("Figure build (ms)", ["figure", "p50", "p95", "bar"], figs)
    r = bench_rerun(3 if args.quick else 40)
    print_table("App rerun after a λ slider move, Explorer, shipped dial, T=128 (ms)",
                ["n", "p50", "p95", "bar p95"], [[r["n"], r["p50"], r["p95"], BARS["rerun"]]])


if __name__ == "__main__":
    run(main)
