"""Block lengths of each partition on WikiText-2 valid, in the 128-token windows evaluation uses,
and the control that decides comparisons between partitions: the mean number of keys a
block-local query can see (visible in-block keys), also for fixed windows of 3 to 10; then the
bigram partition's curve over its boundary price C.

    HF_DATASETS_OFFLINE=1 python scripts/block_lengths.py [--data-dir ../shared/data/wikitext-2]

Prints two Markdown tables (REPRODUCTION.md, "Where blocks fall"). The vocabulary is the shipped
checkpoints' (built from the training split), so ids match the trained models; the bigram
partition's Kneser–Ney table is built from the training split as training builds it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's localist_core

from localist_core.analysis.evaluate import eval_windows  # noqa: E402
from localist_core.analysis.metrics import visible_in_block_keys  # noqa: E402
from localist_core.experiments.data import DataNotFound, load_corpus  # noqa: E402
from localist_core.model.bigram import kn_bigram_tables  # noqa: E402
from localist_core.model.blocks import make_partition  # noqa: E402
from localist_core.model.config import PARTITIONS, ModelConfig  # noqa: E402
from localist_core.model.tokenizer import Tokenizer  # noqa: E402

VOCAB = Path(__file__).resolve().parents[1] / "assets" / "checkpoints" / "dial" / "vocab.json"
# The bigram partition's boundary prices (bits) of the curve.
CURVE_C = (0.0, 1.0, 2.0, 2.5, 3.0, 3.5, 3.75, 4.0, 6.0)


def block_stats(part, stream) -> tuple[torch.Tensor, float]:
    """(every block's length, mean visible in-block keys) of ``part`` over ``stream``'s
    evaluation windows."""
    lengths, visible = [], []
    for x, _ in eval_windows(stream, 128, 64):
        ids = part.block_ids(x)
        visible.append(visible_in_block_keys(ids).double().flatten())
        lengths += [torch.bincount(row) for row in ids]
    return torch.cat(lengths).double(), float(torch.cat(visible).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None,
                    help="WikiText-2 folder (default: $LOCALIST_DATA_DIR, then "
                         "../shared/data/wikitext-2)")
    args = ap.parse_args()
    tok = Tokenizer.load(VOCAB)
    try:
        corpus = load_corpus(args.data_dir, tokenizer=tok)
    except DataNotFound as e:       # one line, as the CLI says it
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    cfg = ModelConfig(vocab_size=len(tok))
    tables = kn_bigram_tables(corpus.train.numpy(), len(tok), capacity=cfg.bigram_pairs)
    print("| partition | settings | blocks | mean length | median | longest | share at the cap "
          "| visible in-block keys |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = [(kind, cfg) for kind in PARTITIONS]
    rows += [("fixed", dataclasses.replace(cfg, block_size=b)) for b in range(3, 11)
             if b != cfg.block_size]
    for kind, c in rows:
        part = make_partition(dataclasses.replace(c, partition=kind), words=tok.words,
                              bigram=tables)
        lens, visible = block_stats(part, corpus.valid)
        cap = {"fixed": c.block_size, "punctuation": c.max_block_size,
               "bigram": c.max_block_size, "random": c.max_block_size}.get(kind)
        settings = {"fixed": f"b={c.block_size}",
                    "punctuation": f"max_block_size={c.max_block_size}",
                    "recruited": f"α={c.recruit_alpha:g}, C={c.boundary_bits:g} bits",
                    "bigram": f"α={c.recruit_alpha:g}, C={c.bigram_boundary_bits:g} bits, "
                              f"max_block_size={c.max_block_size}",
                    "random": f"punctuation's lengths, max_block_size={c.max_block_size}"}[kind]
        share = f"{float((lens == cap).double().mean()):.0%}" if cap else "—"
        print(f"| {kind} | {settings} | {len(lens):,} | {float(lens.mean()):.2f} | "
              f"{float(lens.median()):.0f} | {int(lens.max())} | {share} | {visible:.2f} |")
    cap = cfg.max_block_size
    print(f"\nThe bigram partition over C (α={cfg.recruit_alpha:g}, max_block_size={cap}; "
          f"its default C is {cfg.bigram_boundary_bits:g}): share of blocks of each length.\n")
    print("| C (bits) | blocks | mean length | visible in-block keys | "
          + " | ".join(str(k) for k in range(1, cap + 1)) + " |")
    print("| --- " * (4 + cap) + "|")
    for c_bits in CURVE_C:
        part = make_partition(dataclasses.replace(cfg, partition="bigram",
                                                  bigram_boundary_bits=c_bits), bigram=tables)
        lens, visible = block_stats(part, corpus.valid)
        shares = " | ".join(f"{float((lens == k).double().mean()):.0%}"
                            for k in range(1, cap + 1))
        print(f"| {c_bits:g} | {len(lens):,} | {float(lens.mean()):.2f} | {visible:.2f} | "
              f"{shares} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
