"""Training throughput of ``cpu-ref`` (bars in BENCHMARKS.md), measured side by side in one run:

- **ours**: the localist model as `train` runs it, with the `attention` penalty on (λ = 0.6);
- **(b)**: the same model with plain attention (one query/key channel, SDPA, no penalty);
- **(a)**: a plain same-size causal LM with a full 33k softmax and SDPA attention (tied
  embeddings, nanoGPT style), the model a user would otherwise write;

in fp32 and in bf16 autocast (each against the same precision), on real WikiText-2 batches.
Model FLOP utilisation is each step's matmul FLOPs (``torch.utils.flop_counter``) over its
time, against a matmul peak measured in the same run.

    python -m bench.train            # the table recorded in BENCHMARKS.md (~10 minutes)
    python -m bench.train --keep-freed-memory --quality-steps 0   # glibc keeps freed memory
    python -m bench.train --quick    # smoke run on random tokens: numbers meaningless
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.common import count, fresh_tensor_ms, machine, parser, print_table, run
from localist_core.experiments.memory import keep_freed_memory
from localist_core.experiments.train import make_optimizer, training_loss
from localist_core.model.config import ModelConfig, TrainConfig, preset
from localist_core.model.dial import Dial
from localist_core.model.transformer import LocalistLM, TransformerBlock, autocast_ctx


class PlainAttention(nn.Module):
    """Causal multi-head attention through SDPA: one query/key channel, as users write it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.p = cfg.n_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def channel_weights(self) -> dict:
        d = self.out.in_features
        return {"W_V": self.qkv.weight[2 * d:]}

    def forward(self, x, block_ids=None, dial=None, anchors=None, score_bias=None):
        batch, n, d = x.shape
        q, k, v = self.qkv(x).view(batch, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.p if self.training else 0.0)
        return self.out(z.transpose(1, 2).reshape(batch, n, d)), None


def plain_attention_model(cfg: ModelConfig) -> LocalistLM:
    """Model (b): ours, with every locality attention swapped for PlainAttention."""
    model = LocalistLM(cfg)
    for blk in model.blocks:
        blk.attn = PlainAttention(cfg)
    model.apply(model._init_weights)
    return model


class FullSoftmaxLM(nn.Module):
    """Model (a): same width, depth and MLP, SDPA attention, a full softmax over the vocabulary."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        for blk in self.blocks:
            blk.attn = PlainAttention(cfg)
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight            # tied, as in nanoGPT
        self.apply(LocalistLM._init_weights)

    def loss(self, x, y):
        h = self.drop(self.tok_emb(x) + self.pos_emb(torch.arange(x.shape[1])))
        for blk in self.blocks:
            h, _ = blk(h, None, None, None)
        logits = self.lm_head(self.ln_final(h))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))


def stepper(model, loss_fn, tcfg: TrainConfig):
    """(model in train mode, one optimiser step on (x, y)): our fused AdamW for a LocalistLM,
    ``torch.optim.AdamW`` as a user would write it otherwise."""
    opt = make_optimizer(model, tcfg) if isinstance(model, LocalistLM) else \
        torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=(0.9, 0.98))

    def step(x, y):
        loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
    return model.train(), step


def make_steps(cfg: ModelConfig, bf16: bool) -> dict:
    """name → (model, one optimiser step on (x, y)); all share the optimiser settings."""
    base = {**preset("cpu-ref").train, "precision": "bf16" if bf16 else "fp32"}
    tcfg = TrainConfig(**base)
    ours_cfg = TrainConfig(**{**base, "locality": 0.6, "penalty_form": "attention"})
    plain_cfg = TrainConfig(**{**base, "penalty_form": "none"})
    torch.manual_seed(0)
    ours = LocalistLM(cfg)
    plain = plain_attention_model(cfg)
    full = FullSoftmaxLM(cfg)

    def full_loss(x, y):
        with autocast_ctx(bf16):
            return full.loss(x, y)

    return {
        "ours (attention penalty on)": stepper(
            ours, lambda x, y: training_loss(ours, ours_cfg, x, y, Dial())[0], tcfg),
        "(b) ours, plain attention": stepper(
            plain, lambda x, y: training_loss(plain, plain_cfg, x, y, Dial())[0], tcfg),
        "(a) full softmax + SDPA": stepper(full, full_loss, tcfg),
    }


def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048, 3072), reps: int = 8) -> float:
    """Best GFLOP/s of square matmuls in ``dtype`` over a few sizes (the peak MFU is measured
    against); the best of several sizes and repeats, so that one slow moment cannot lower it."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def step_flops(step, x, y) -> int:
    with FlopCounterMode(display=False) as counter:
        step(x, y)
    return counter.get_total_flops()


def batches(cfg: ModelConfig, batch: int, quick: bool, data_dir: str | None):
    """An endless supply of real WikiText-2 training windows (random tokens with --quick)."""
    gen = torch.Generator().manual_seed(0)
    if quick:
        stream = torch.randint(0, cfg.vocab_size, (50_000,), generator=gen)
    else:
        from localist_core.experiments.data import load_corpus
        stream = load_corpus(data_dir).train
    from localist_core.experiments.data import random_windows
    while True:
        yield random_windows(stream, batch, cfg.n_ctx, gen)


def measure(steps: dict, data, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Interleave the models round by round so that machine noise hits them alike. Every model
    trains on the same batches (how many words fall in each adaptive-softmax cluster changes
    a step's cost), and the order of the models rotates from round to round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _, step in steps.values():           # warm-up: allocator, AdamW state, kernels
        step(*next(data))
    names = list(steps)
    for r in range(rounds):
        round_batches = [next(data) for _ in range(per_round)]
        for name in names[r % len(names):] + names[:r % len(names)]:
            step = steps[name][1]
            for x, y in round_batches:
                t0 = time.perf_counter()
                step(x, y)
                times[name].append(time.perf_counter() - t0)
    return times


def bf16_quality(cfg: ModelConfig, batch: int, steps: int, eval_tokens: int, quick: bool,
                 data_dir: str | None) -> list[list]:
    """Train ours in fp32 and under bf16 autocast from the same seed on the same batches, then
    compare valid perplexity (fp32 evaluation): bf16 is used only if it stays within 1%."""
    from localist_core.analysis.evaluate import evaluate_stream
    from localist_core.experiments.data import load_corpus
    from localist_core.experiments.train import train

    if quick:
        gen = torch.Generator().manual_seed(1)
        stream = torch.randint(0, cfg.vocab_size, (20_000,), generator=gen)
        from localist_core.experiments.data import Corpus
        corpus = Corpus(None, stream, stream[:eval_tokens + 1], stream[:eval_tokens + 1], "random")
    else:
        corpus = load_corpus(data_dir)
    rows, ppl = [], {}
    for bf16 in (False, True):
        tcfg = TrainConfig(**{**preset("cpu-ref").train, "precision": "bf16" if bf16 else "fp32",
                              "max_steps": steps,
                              "batch_size": batch, "lr_by_time": False,
                              "eval_interval": 10 ** 6, "time_budget_s": 10 ** 6})
        t0 = time.perf_counter()
        model = train(cfg, tcfg, corpus, progress=False).model
        dt = time.perf_counter() - t0
        ppl[bf16] = evaluate_stream(model, corpus.valid, max_tokens=eval_tokens,
                                    with_attention=False)["perplexity"]
        rows.append(["bf16" if bf16 else "fp32", steps, f"{dt:.0f}", f"{ppl[bf16]:.2f}"])
    rows.append(["bf16 vs fp32", "", "", f"{ppl[True] / ppl[False] - 1:+.2%} (bar: within 1%)"])
    return rows


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="WikiText-2 folder (default: the usual search)")
    p.add_argument("--rounds", type=count(1), default=6)
    p.add_argument("--quality-steps", type=count(0), default=300,
                   help="steps of the fp32-vs-bf16 quality check (0 skips it)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc keeps freed memory (mallopt), so no model pays page faults for "
                        "its big tensors; without it every model runs as a user would run it")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    allocator = "glibc default"
    if args.keep_freed_memory:
        allocator = ("glibc keeps freed memory (M_MMAP_MAX=0)" if keep_freed_memory()
                     else "glibc default (mallopt unavailable)")
    if args.quick:
        cfg = ModelConfig(**{**preset("cpu-ref").model, "vocab_size": 33_278, "d_model": 64,
                             "d_ff": 128, "n_ctx": 32})
        batch, rounds, per_round = 4, 1, 1
    else:
        cfg = ModelConfig(**{**preset("cpu-ref").model, "vocab_size": 33_278})
        batch, rounds, per_round = preset("cpu-ref").train["batch_size"], args.rounds, 3
    tokens = batch * cfg.n_ctx
    print(f"machine: {machine()}; allocator: {allocator}")
    print(f"shape: d={cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, d_ff {cfg.d_ff}, "
          f"batch {batch}×{cfg.n_ctx}, vocab {cfg.vocab_size:,}")
    data = batches(cfg, batch, args.quick, args.data_dir)
    rows = []
    for bf16 in (False, True):
        label = "bf16" if bf16 else "fp32"
        peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32,
                           (256,) if args.quick else (1024, 2048, 3072))
        steps = make_steps(cfg, bf16)
        flops = {name: step_flops(step, *next(data)) for name, (_, step) in steps.items()}
        times = measure(steps, data, rounds, per_round)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        ours, plain_b, full_a = (med[n] for n in steps)
        for name in steps:
            tps = tokens / med[name]
            rows.append([label, name, f"{tps:,.0f}", f"{med[name] * 1e3:,.0f}",
                         f"{flops[name] / tokens / 1e6:,.1f}",
                         f"{flops[name] / med[name] / 1e9 / peak:.1%}"])
        rows.append([label, "**ours ÷ (a)**", f"**{full_a / ours:.2f}×**", "", "", "bar ≥ 8×"])
        rows.append([label, "**ours vs (b)**", f"**{(ours / plain_b - 1):+.1%} time**", "", "",
                     "bar ≤ +5%"])
        rows.append([label, "matmul peak", f"{peak:,.0f} GFLOP/s", "", "", ""])
    print_table("Training throughput, side by side",
                ["precision", "model", "tokens/s", "ms/step (median)", "MFLOP/token", "MFU"],
                rows)
    # After the runs, so the heap has grown: what one more big tensor costs in page faults.
    print_table(f"Fresh float32 tensors, allocate + zero (ms, median of 5 after 2), {allocator}",
                ["tensor", "MB", "ms"],
                [[label, f"{4 * rows * cols / 1e6:.0f}", f"{fresh_tensor_ms((rows, cols)):.1f}"]
                 for label, rows, cols in (("a tail's log-probs, 462 × 23,278", 462, 23_278),
                                           ("(a)'s logits, 4,096 × 33,278", 4096, 33_278))])
    q_steps = min(3, args.quality_steps) if args.quick else args.quality_steps
    if q_steps:
        print_table(f"bf16 autocast vs fp32: valid perplexity after {q_steps} steps, same seed",
                    ["training precision", "steps", "wall s", "valid ppl"],
                    bf16_quality(cfg, batch, q_steps, 256 if args.quick else 32_768, args.quick,
                                 args.data_dir))


if __name__ == "__main__":
    run(main)
