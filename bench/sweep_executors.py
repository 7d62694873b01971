"""Sweep wall time, the local executor against Ray on the same machine, side by side in one run:
the same small sweep into two fresh caches, one run after another in this process (``run_sweep``)
and as Ray tasks on a local Ray of this machine's CPUs (``ray_sweep``, as many runs at once as
cores ÷ ``--threads``), then the ratio. Ray's start-up is counted in its wall time (a user pays
it) and shown apart; both caches must hold the same perplexities.

    python -m bench.sweep_executors --threads 1   # 4 cpu-ref runs of 200 steps on WikiText-2
    python -m bench.sweep_executors --quick       # 2 tiny runs, random tokens: numbers meaningless

The full mode keeps every core busy for minutes: not while another job trains.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from bench.common import count, machine, parser, print_table, run
from localist_core.experiments.data import Corpus
from localist_core.experiments.executors import RayNotInstalled, import_ray, local_cpus, ray_sweep
from localist_core.experiments.sweep import plan_runs, run_sweep
from localist_core.model.config import ModelConfig, TrainConfig, preset
from localist_core.model.tokenizer import Tokenizer


def random_corpus(words: int = 200, sizes=(40_000, 4_000, 4_000)) -> Corpus:
    """Random tokens over a made-up vocabulary: enough to train and evaluate a tiny model."""
    tok = Tokenizer.from_counts(Counter({f"w{i}": words - i for i in range(words)}))
    gen = torch.Generator().manual_seed(0)
    train, valid, test = (torch.randint(0, len(tok), (n,), generator=gen) for n in sizes)
    return Corpus(tok, train, valid, test, "random")


def sweep(args):
    """(runs, corpus, eval tokens) of the benchmark's sweep."""
    if args.quick:
        corpus, name, steps, n_runs, eval_tokens = random_corpus(), "tiny", 5, 2, 2_048
    else:
        from localist_core.experiments.data import load_corpus
        corpus, name, steps, n_runs = load_corpus(args.data_dir), "cpu-ref", args.steps, args.runs
        eval_tokens = args.eval_tokens
    p = preset(name)
    mcfg = ModelConfig(**{**p.model, "vocab_size": len(corpus.tokenizer)})
    tcfg = TrainConfig(**{**p.train, "max_steps": steps, "eval_interval": steps,
                          "ckpt_interval": steps, "threads": args.threads,
                          "time_budget_s": 10.0 ** 6, "device": "cpu"})
    lambdas = [round(i / max(1, n_runs - 1), 3) for i in range(n_runs)]
    return plan_runs(mcfg, tcfg, ["attention"], lambdas, [1.0]), corpus, eval_tokens


def valid_perplexities(results: list[dict]) -> list[float]:
    return [r["metrics"]["valid"][0]["perplexity"] for r in results]


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="WikiText-2 folder (default: the usual search)")
    p.add_argument("--runs", type=count(1), default=4, help="runs in the sweep (default 4)")
    p.add_argument("--steps", type=count(1), default=200, help="training steps per run")
    p.add_argument("--eval-tokens", type=count(1), default=16_384,
                   help="valid and test tokens each run is evaluated on")
    args = p.parse_args(argv)
    if args.quick:
        args.threads = 1
    try:
        ray = import_ray()
    except RayNotInstalled as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    torch.set_num_threads(args.threads)
    runs, corpus, eval_tokens = sweep(args)
    cpus = local_cpus()
    print(f"machine: {machine()}")
    print(f"sweep: {len(runs)} runs of {runs[0].train.max_steps} steps, threads={args.threads} "
          f"each, {eval_tokens:,} eval tokens; Ray {ray.__version__} on {cpus} CPUs runs "
          f"{max(1, cpus // args.threads)} at once")
    rows, ppl = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        t0 = time.perf_counter()
        local = run_sweep(runs, corpus, Path(tmp, "local", "cache"), Path(tmp, "local", "runs"),
                          eval_tokens=eval_tokens, progress=False)
        wall = {"local": time.perf_counter() - t0}
        rows.append(["local", 1, wall["local"], wall["local"] / len(runs), "–"])
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
        started = time.perf_counter() - t0
        try:
            remote = ray_sweep(runs, corpus, Path(tmp, "ray", "cache"), Path(tmp, "ray", "runs"),
                               eval_tokens=eval_tokens, progress=False)
        finally:
            ray.shutdown()
        wall["ray"] = time.perf_counter() - t0
        rows.append(["ray", max(1, cpus // args.threads), wall["ray"], wall["ray"] / len(runs),
                     started])
        ppl = dict(zip(("local", "ray"), map(valid_perplexities, (local, remote))))
    diff = max(abs(a / b - 1) for a, b in zip(ppl["local"], ppl["ray"]))
    rows.append(["**local ÷ ray**", "", f"**{wall['local'] / wall['ray']:.2f}×**", "", ""])
    print_table("Sweep executors, side by side: wall time of the same sweep",
                ["executor", "runs at once", "wall s", "s per run", "Ray start-up s"], rows)
    print(f"\nvalid perplexity, largest relative difference between the executors: {diff:.1e}")


if __name__ == "__main__":
    run(main)
