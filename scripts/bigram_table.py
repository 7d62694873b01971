"""Write the shipped Kneser–Ney bigram table (``paths.BIGRAM_TABLE``): the tables a model
trained with partition=bigram on WikiText-2 carries, built from the training split over the
shipped checkpoints' vocabulary, at the default size (``ModelConfig.bigram_pairs``).

    HF_DATASETS_OFFLINE=1 python scripts/bigram_table.py [--data-dir ../shared/data/wikitext-2]

The Rules & blocks page and ``eval --partition bigram`` use it for checkpoints that carry no
table of their own (every checkpoint not trained with partition=bigram), when their vocabulary
is the one it was built for. The same command writes the same bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's localist_core

from localist_core.experiments.data import DataNotFound, load_corpus  # noqa: E402
from localist_core.model.bigram import (  # noqa: E402
    BIGRAM_MIN_COUNT,
    KN_DISCOUNT,
    PAD_CODE,
    kn_bigram_tables,
    write_table_file,
)
from localist_core.model.config import ModelConfig  # noqa: E402
from localist_core.model.tokenizer import Tokenizer  # noqa: E402
from localist_core.paths import BIGRAM_TABLE, CHECKPOINT_DIR  # noqa: E402

VOCAB = CHECKPOINT_DIR / "dial" / "vocab.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None,
                    help="WikiText-2 folder (default: $LOCALIST_DATA_DIR, then "
                         "../shared/data/wikitext-2)")
    ap.add_argument("--out", default=str(BIGRAM_TABLE), help="where to write the table")
    args = ap.parse_args()
    tok = Tokenizer.load(VOCAB)
    try:
        corpus = load_corpus(args.data_dir, tokenizer=tok)
    except DataNotFound as e:       # one line, as the CLI says it
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    capacity = ModelConfig(vocab_size=len(tok)).bigram_pairs
    tables = kn_bigram_tables(corpus.train.numpy(), len(tok), capacity=capacity)
    stored = int((tables.codes != PAD_CODE).sum())
    write_table_file(Path(args.out), tables, tok.words,
                     {"source": "WikiText-2 train", "train_tokens": len(corpus.train),
                      "discount": KN_DISCOUNT, "min_count": BIGRAM_MIN_COUNT,
                      "capacity": capacity, "stored_pairs": stored})
    size = Path(args.out).stat().st_size
    print(f"{args.out}: {stored:,} of {capacity:,} pair slots used, {len(tok):,} words, "
          f"{size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
