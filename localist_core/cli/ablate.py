"""``ablate``: what each head's cross-block attention is worth on held-out text. On evenly
spaced WikiText-2 validation windows it cuts one head's cross-block attention at a time
(``analysis.interventions``) and prints the change in valid perplexity with a 95% percentile
bootstrap interval over windows, beside a control that removes as much in-block attention
from the same head in each window, drawn at random."""
from __future__ import annotations

import argparse

import torch

from ..analysis.interventions import (
    VARIANTS,
    check_heads,
    head_ablation_scan,
    perplexity_change_interval,
)
from ..model.config import LOCALITY_RANGE, TEMPERATURE_RANGE
from .args import finite_float
from .experts import int_in

DEFAULT_WINDOWS = 64        # about a minute and a half of cpu-ref on 2 cores
MAX_WINDOWS = 1024          # WikiText-2's validation split holds 1,698 windows of 128
RESAMPLES = 2000


def head_list(text: str) -> list[tuple[int, int]]:
    """``--heads 0.1,1.3``: (layer, head) pairs; the model checks their range."""
    out = []
    for part in text.split(","):
        layer, dot, head = part.strip().partition(".")
        if not (dot and layer.isdigit() and head.isdigit()) or len(part) > 12:
            raise argparse.ArgumentTypeError(f"heads are LAYER.HEAD, comma-separated (e.g. "
                                             f"0.1,1.3), got {text[:60]!r}")
        out.append((int(layer), int(head)))
    if len(out) > 4096:
        raise argparse.ArgumentTypeError("at most 4096 heads")
    return out


def add_parser(sub) -> None:
    """The ``ablate`` subcommand."""
    a = sub.add_parser("ablate", help="cut each head's cross-block attention on validation "
                                      "windows; the change in perplexity beside a control")
    a.add_argument("--checkpoint", required=True,
                   help="a checkpoint folder, e.g. assets/checkpoints/dial (only read)")
    a.add_argument("--locality", type=finite_float(*LOCALITY_RANGE), default=0.0,
                   help="dial λ_f in [0, 1] (default 0: the cross-block channel open)")
    a.add_argument("--tau", type=finite_float(*TEMPERATURE_RANGE), default=1.0,
                   help="attention temperature τ (default 1)")
    a.add_argument("--variant", choices=VARIANTS, default="renormalise",
                   help="renormalise (default): the head's cross-block keys are masked before "
                        "its softmax, so it attends inside its block; zero: their weights are "
                        "set to 0 after it and the rest is kept")
    a.add_argument("--windows", type=int_in(2, MAX_WINDOWS), default=DEFAULT_WINDOWS,
                   help=f"validation windows of n_ctx tokens, evenly spaced over the split "
                        f"(default {DEFAULT_WINDOWS}, at most {MAX_WINDOWS})")
    a.add_argument("--heads", type=head_list, default=None,
                   help="only these heads, LAYER.HEAD comma-separated (default: every head)")
    a.add_argument("--batch-size", type=int_in(1, 256), default=16)
    a.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0,
                   help="draws the control's in-block keys and the bootstrap (default 0)")
    a.add_argument("--data-dir", default=None,
                   help="folder with train.txt/valid.txt/test.txt (default: "
                        "$LOCALIST_DATA_DIR, then ../shared/data/wikitext-2)")
    a.set_defaults(func=cmd_ablate)


def validation_windows(stream: torch.Tensor, n_ctx: int, count: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` non-overlapping windows of ``n_ctx`` inputs and their next-token targets,
    evenly spaced over ``stream``."""
    full = (len(stream) - 1) // n_ctx
    if count > full:
        raise ValueError(f"--windows {count}: the validation split holds {full} windows of "
                         f"{n_ctx} tokens")
    starts = torch.linspace(0, full - 1, count).round().long() * n_ctx
    idx = starts.unsqueeze(1) + torch.arange(n_ctx)
    return stream[idx], stream[idx + 1]


def _interval(d: dict) -> str:
    return f"{d['change']:+8.2f} [{d['lo']:+7.2f}, {d['hi']:+7.2f}]"


def cmd_ablate(args: argparse.Namespace) -> int:
    """Load the checkpoint and the validation split, scan the heads, print the table."""
    from tqdm.auto import tqdm

    from ..experiments.data import load_corpus
    from ..model.checkpoint import load_model
    from ..model.dial import Dial
    model, tok = load_model(args.checkpoint)
    model.eval()
    heads = check_heads(model, args.heads or [(lay, h) for lay in range(model.cfg.n_layers)
                                              for h in range(model.cfg.n_heads)])
    corpus = load_corpus(args.data_dir, tokenizer=tok)
    inputs, targets = validation_windows(corpus.valid, model.cfg.n_ctx, args.windows)
    dial = Dial(args.locality, args.tau)
    with tqdm(total=args.windows * (1 + 2 * len(heads)), unit="window", desc="ablate",
              leave=False) as bar:
        scan = head_ablation_scan(model, inputs, targets, dial, heads=heads,
                                  variant=args.variant, batch_size=args.batch_size,
                                  seed=args.seed, progress=bar.update)
    base = float(scan.clean.mean().exp())
    print(f"{args.checkpoint}: λ_f={dial.locality:g}, τ={dial.attn_temperature:g}, variant "
          f"{scan.variant}; {args.windows} validation windows of {model.cfg.n_ctx} tokens "
          f"({args.windows * model.cfg.n_ctx:,} targets); valid perplexity {base:.2f}")
    print(f"Δ perplexity with a 95% percentile-bootstrap interval over windows ({RESAMPLES} "
          f"resamples, paired); the control removes as much in-block attention from the same "
          f"head in each window, drawn at random (matched: the share of the cross-block mass "
          f"it found in-block to remove)")
    print(f"{'head':>5} {'cross mass':>10} {'Δ ablation [95%]':>27} {'Δ control [95%]':>27} "
          f"{'matched':>8} {'ablation − control [95%]':>28}")
    for i, (layer, head) in enumerate(scan.heads):
        cut = perplexity_change_interval(scan.clean, scan.ablated[i], resamples=RESAMPLES,
                                         seed=args.seed)
        ctl = perplexity_change_interval(scan.clean, scan.control[i], resamples=RESAMPLES,
                                         seed=args.seed)
        beyond = perplexity_change_interval(scan.control[i], scan.ablated[i],
                                            resamples=RESAMPLES, seed=args.seed)
        print(f"{layer:>3}.{head:<1} {float(scan.cross_mass[i]):>10.3f} {_interval(cut):>27} "
              f"{_interval(ctl):>27} {float(scan.control_matched[i]):>8.2f} "
              f"{_interval(beyond):>28}")
    return 0
