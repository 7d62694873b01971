"""Block lengths of each partition on WikiText-2 valid, in the 128-token windows evaluation uses,
and the control that decides comparisons between partitions: the mean number of keys a
block-local query can see (visible in-block keys), also for fixed windows of 3 to 10.

    HF_DATASETS_OFFLINE=1 python scripts/block_lengths.py [--data-dir ../shared/data/wikitext-2]

Prints a Markdown table (REPRODUCTION.md, "Where blocks fall"). The vocabulary is the shipped
checkpoints' (built from the training split), so ids match the trained models.
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
from localist_core.model.blocks import make_partition  # noqa: E402
from localist_core.model.config import PARTITIONS, ModelConfig  # noqa: E402
from localist_core.model.tokenizer import Tokenizer  # noqa: E402

VOCAB = Path(__file__).resolve().parents[1] / "assets" / "checkpoints" / "dial" / "vocab.json"


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
    print("| partition | settings | blocks | mean length | median | longest | share at the cap "
          "| visible in-block keys |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = [(kind, cfg) for kind in PARTITIONS]
    rows += [("fixed", dataclasses.replace(cfg, block_size=b)) for b in range(3, 11)
             if b != cfg.block_size]
    for kind, c in rows:
        part = make_partition(dataclasses.replace(c, partition=kind), words=tok.words)
        lengths, visible = [], []
        for x, _ in eval_windows(corpus.valid, c.n_ctx, 64):
            ids = part.block_ids(x)
            visible.append(visible_in_block_keys(ids).double().flatten())
            for row in ids:
                lengths.append(torch.bincount(row))
        lens = torch.cat(lengths).double()
        cap = {"fixed": c.block_size, "punctuation": c.max_block_size}.get(kind)
        settings = {"fixed": f"b={c.block_size}",
                    "punctuation": f"max_block_size={c.max_block_size}",
                    "recruited": f"α={c.recruit_alpha:g}, C={c.boundary_bits:g} bits"}[kind]
        share = f"{float((lens == cap).double().mean()):.0%}" if cap else "—"
        print(f"| {kind} | {settings} | {len(lens):,} | {float(lens.mean()):.2f} | "
              f"{float(lens.median()):.0f} | {int(lens.max())} | {share} | "
              f"{float(torch.cat(visible).mean()):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
