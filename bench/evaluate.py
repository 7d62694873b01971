"""Evaluation and sweep wall time (bars in BENCHMARKS.md): one full-valid evaluation (perplexity,
accuracy and every attention metric) at one (λ, τ) setting, in fp32 and under bf16 autocast, and the
recorded wall time of every run of the sweep cache.

    python -m bench.evaluate            # the tables recorded in BENCHMARKS.md
    python -m bench.evaluate --quick    # smoke run on a random model and random tokens
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.common import machine, parser, print_table, run
from localist_core import load_model
from localist_core.analysis.evaluate import evaluate_stream
from localist_core.experiments.cache import load_cache
from localist_core.model.config import ModelConfig, preset
from localist_core.model.dial import Dial
from localist_core.model.transformer import LocalistLM

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "assets" / "checkpoints" / "attention-l0.0"
EVAL_BAR_S = 20.0


def _model_and_stream(quick: bool, data_dir: str | None):
    if quick:
        cfg = ModelConfig(**{**preset("cpu-ref").model, "vocab_size": 33_278})
        gen = torch.Generator().manual_seed(0)
        return LocalistLM(cfg).eval(), torch.randint(0, 33_278, (4_097,), generator=gen), "random"
    from localist_core.experiments.data import load_corpus

    model, tok = load_model(CHECKPOINT)
    return model, load_corpus(data_dir, tokenizer=tok).valid, CHECKPOINT.name


def bench_eval(quick: bool, data_dir: str | None, dial: Dial):
    model, stream, name = _model_and_stream(quick, data_dir)
    rows, ppl = [], {}
    for bf16 in (False, True):
        t0 = time.perf_counter()
        r = evaluate_stream(model, stream, dial, bf16=bf16)
        dt = time.perf_counter() - t0
        ppl[bf16] = r["perplexity"]
        rows.append([name, "bf16" if bf16 else "fp32", f"{r['tokens']:,}", f"{dt:.1f}",
                     f"{r['perplexity']:.2f}", f"{r['accuracy']:.4f}",
                     f"{r['attention']['in_block_mass']['mean']:.4f}", EVAL_BAR_S])
    rows.append(["bf16 vs fp32", "", "", "", f"{ppl[True] / ppl[False] - 1:+.2%}", "", "",
                 "within 1%"])
    return rows


def sweep_rows(cache_dir: Path) -> list[list]:
    rows = []
    runs, _ = load_cache(cache_dir)
    for r in sorted(runs, key=lambda r: r["run_id"]):
        run_id = r["run_id"]
        wt = r.get("wall_time_s") or {}
        tr = r.get("training") or {}
        rows.append([run_id, tr.get("steps", "—"), tr.get("stopped", "—"), wt.get("train", "—"),
                     wt.get("eval", "—"), wt.get("total", "—")])
    return rows


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache", default=str(ROOT / "assets" / "sweep"))
    p.add_argument("--locality", type=float, default=0.0)
    p.add_argument("--attn-temperature", type=float, default=1.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    dial = Dial(args.locality, args.attn_temperature)
    print_table(f"One full-valid evaluation at λ_f={dial.locality:g}, τ={dial.attn_temperature:g}"
                " (perplexity + accuracy + attention metrics)",
                ["model", "precision", "targets", "wall s", "perplexity", "accuracy",
                 "in-block mass", "bar s"],
                bench_eval(args.quick, args.data_dir, dial))
    print_table(f"Sweep wall time, from the cache ({args.cache})",
                ["run", "steps", "stopped by", "train s", "eval s", "total s"],
                sweep_rows(Path(args.cache)))


if __name__ == "__main__":
    run(main)
