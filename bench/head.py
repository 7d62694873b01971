"""What the bf16 adaptive head buys a training step: ours in bf16, side by side in one run,
with the head's matmuls in bf16 (``adaptive_nll``, how training runs) and with torch's
``AdaptiveLogSoftmaxWithLoss`` forward in fp32 (how it ran before), on the same batches.

    python -m bench.head            # the table recorded in BENCHMARKS.md (~3 minutes)
    python -m bench.head --quick    # smoke run on random tokens: numbers meaningless
"""
from __future__ import annotations

import statistics

import torch

from bench.common import count, machine, parser, print_table, run
from bench.train import batches, measure, stepper
from localist_core.experiments.train import training_loss
from localist_core.model.config import ModelConfig, TrainConfig, preset
from localist_core.model.dial import Dial
from localist_core.model.transformer import LocalistLM


def make_step(cfg: ModelConfig, tcfg: TrainConfig, bf16_head: bool):
    torch.manual_seed(0)
    model = LocalistLM(cfg)
    if not bf16_head:
        exact = model.token_nll
        model.token_nll = lambda hidden, targets, bf16_matmuls=False: exact(hidden, targets)
    return stepper(model, lambda x, y: training_loss(model, tcfg, x, y, Dial())[0], tcfg)


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=count(1), default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = dict(d_model=64, d_ff=128, n_ctx=32) if args.quick else {}
    cfg = ModelConfig(**{**preset("cpu-ref").model, "vocab_size": 33_278, **shape})
    tcfg = TrainConfig(**{**preset("cpu-ref").train, "precision": "bf16", "locality": 0.6,
                          "penalty_form": "attention"})
    batch = 4 if args.quick else tcfg.batch_size
    rounds, per_round = (1, 1) if args.quick else (args.rounds, 3)
    print(f"machine: {machine()}")
    steps = {"head matmuls bf16, softmax fp32 (adaptive_nll)": make_step(cfg, tcfg, True),
             "torch's adaptive forward in fp32 (before)": make_step(cfg, tcfg, False)}
    times = measure(steps, batches(cfg, batch, args.quick, args.data_dir), rounds, per_round)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med[next(iter(med))]
    print_table("Ours in bf16: the adaptive head, side by side",
                ["head", "tokens/s", "ms/step (median)", "time vs adaptive_nll"],
                [[name, f"{batch * cfg.n_ctx / t:,.0f}", f"{t * 1e3:,.0f}", f"{t / base - 1:+.1%}"]
                 for name, t in med.items()])


if __name__ == "__main__":
    run(main)
