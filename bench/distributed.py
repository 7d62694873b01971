"""Data-parallel training throughput of ``cpu-ref`` (fp32, on the CPU): one process against two
under torchrun (experiments/distributed.py), side by side in one run, through `train` itself.

Each layout is one torchrun launch (one process too, so every row pays the same launcher) that
trains ``--warmup`` steps, then ``--steps`` timed steps, on real WikiText-2 batches of the
preset's global batch. The thread budget ``--threads`` (default 2) is shared: one process with
all of it, two processes with half each, and one process with a single thread for scale. The
time is `train`'s own clock (the slowest rank's step time, evaluation excluded).

    python -m bench.distributed            # the table (a few minutes, on a quiet machine)
    python -m bench.distributed --quick    # smoke run: a small model on random tokens
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import count, machine, parser, print_table, run

ROOT = Path(__file__).resolve().parents[1]


def layouts(threads: int) -> list[tuple[int, int]]:
    """(processes, threads per process): the budget in one process, split over two, and one
    process with one thread."""
    rows = [(1, threads), (2, max(1, threads // 2)), (1, 1)]
    return list(dict.fromkeys(rows))        # --threads 1: the last row repeats the first


def worker(args) -> None:
    """One rank of one layout: train, and rank 0 writes its timing to ``args.result``."""
    import torch

    from localist_core.experiments.data import Corpus, load_corpus
    from localist_core.experiments.distributed import process_group
    from localist_core.experiments.memory import keep_freed_memory
    from localist_core.experiments.train import train
    from localist_core.model.config import ModelConfig, TrainConfig, preset

    keep_freed_memory()                     # as `localist train` runs
    if args.quick:
        gen = torch.Generator().manual_seed(1)
        stream = torch.randint(0, 33_278, (20_000,), generator=gen)
        corpus = Corpus(None, stream, stream[:1_025], stream[:1_025], "random")
        mcfg = ModelConfig(**{**preset("cpu-ref").model, "vocab_size": 33_278, "d_model": 64,
                              "d_ff": 128, "n_ctx": 32})
        batch, eval_tokens = 4, 256
    else:
        corpus = load_corpus(args.data_dir)
        mcfg = ModelConfig(**{**preset("cpu-ref").model, "vocab_size": len(corpus.tokenizer)})
        batch, eval_tokens = preset("cpu-ref").train["batch_size"], 4_096
    # Evaluations at the end of the warm-up and every `warmup` steps after: the history's
    # train_seconds at the warm-up's end and at the last step bound the timed steps.
    tcfg = TrainConfig(**{**preset("cpu-ref").train, "precision": "fp32", "device": "cpu",
                          "threads": args.threads, "batch_size": batch,
                          "max_steps": args.warmup + args.steps, "eval_interval": args.warmup,
                          "time_budget_s": 1e9})
    with process_group("cpu") as dist:
        res = train(mcfg, tcfg, corpus, progress=False, eval_tokens=eval_tokens, dist=dist)
    if dist.is_main:
        times = {h["step"]: h["train_seconds"] for h in res.history}
        Path(args.result).write_text(json.dumps({
            "seconds": times[args.warmup + args.steps] - times[args.warmup],
            "tokens": args.steps * batch * mcfg.n_ctx, "steps": args.steps,
            "valid_ppl": res.history[-1]["valid_ppl"], "world_size": res.world_size}))


def launch(processes: int, threads: int, args, folder: str) -> dict:
    """One layout under torchrun; its rank 0's timing."""
    result = Path(folder) / f"{processes}x{threads}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--standalone", "-m", "bench.distributed", "--worker", "--result", str(result),
           "--threads", str(threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"error: {processes} × {threads} threads failed "
                         f"(exit {proc.returncode})")
    return json.loads(result.read_text())


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="WikiText-2 folder (default: the usual search)")
    p.add_argument("--steps", type=count(1), default=40, help="timed steps (default 40)")
    p.add_argument("--warmup", type=count(1), default=10,
                   help="untimed steps first (default 10); --steps must be a multiple of it")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick and not args.worker:
        args.steps, args.warmup = 4, 2
    if args.steps % args.warmup:
        p.error(f"--steps ({args.steps}) must be a multiple of --warmup ({args.warmup})")
    if args.worker:
        worker(args)
        return
    print(f"machine: {machine()}")
    print(f"cpu-ref{' (--quick: a small model, random tokens)' if args.quick else ''}, fp32, "
          f"{args.warmup} warm-up steps, then {args.steps} timed; batch_size is the global "
          f"batch, split over the processes")
    with tempfile.TemporaryDirectory() as folder:
        runs = {(n, t): launch(n, t, args, folder) for n, t in layouts(args.threads)}
    base = runs[(1, args.threads)]
    base_tps = base["tokens"] / max(base["seconds"], 1e-9)
    rows = []
    for (n, t), r in runs.items():
        tps = r["tokens"] / max(r["seconds"], 1e-9)
        rows.append([f"{n} × {t} thread{'s' if t > 1 else ''}", n * t, f"{tps:,.0f}",
                     f"{r['seconds'] / r['steps'] * 1e3:,.0f}", f"{tps / base_tps:.2f}×",
                     f"{r['valid_ppl']:,.2f}"])
    print_table(f"Data-parallel training, {args.steps} steps after {args.warmup}, side by side",
                ["processes × threads", "threads in all", "tokens/s", "ms/step",
                 f"vs 1 × {args.threads}", "valid ppl at the end"], rows)


if __name__ == "__main__":
    run(main)
