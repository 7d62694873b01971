"""Calibrate the dial sharpness β: in-block mass and valid perplexity against λ_f for several β,
on the first 16,384 validation tokens (REPRODUCTION.md, "Does one checkpoint serve the dial?").

    HF_DATASETS_OFFLINE=1 python scripts/calibrate_beta.py runs/dial-* runs/attention-l0.0-*

The checkpoints are the runs ``bash scripts/reproduce.sh`` trains into ``runs/`` (not shipped).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's localist_core

BETAS = (4.0, 16.0, 64.0)
LOCALITIES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
MAX_TOKENS = 16_384
NEEDS = "checkpoint folders trained by `bash scripts/reproduce.sh` (runs/dial-*, " \
        "runs/attention-l0.0-*); they are not shipped"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                    help="checkpoint folders, e.g. runs/dial-* runs/attention-l0.0-*")
    ap.add_argument("--data-dir", default=None,
                    help="WikiText-2 folder (default: $LOCALIST_DATA_DIR, then "
                         "../shared/data/wikitext-2)")
    args = ap.parse_args()
    # What this script needs and the repository does not ship: say so in one line, before the
    # (slow) imports. An unexpanded shell glob arrives here as a literal "runs/dial-*".
    missing = [c for c in args.checkpoints if not Path(c).is_dir()]
    if not args.checkpoints or missing:
        given = f"no such folder: {', '.join(missing)}; " if missing else ""
        print(f"error: {given}calibrate_beta.py needs {NEEDS}", file=sys.stderr)
        return 2

    import torch

    from localist_core import CheckpointError, load_model
    from localist_core.analysis.evaluate import evaluate_stream
    from localist_core.experiments.data import DataNotFound, load_corpus
    from localist_core.experiments.sweep import with_barrier_sharpness
    from localist_core.model.dial import Dial

    torch.set_num_threads(2)
    corpus = None
    try:
        for run in args.checkpoints:
            model, tok = load_model(run)
            # Runs trained on one corpus share its vocabulary: the corpus is read once.
            if corpus is None or tok.words != corpus.tokenizer.words:
                corpus = load_corpus(args.data_dir, tokenizer=tok)
            for beta in BETAS:
                m = with_barrier_sharpness(model, beta)
                row = []
                for lam in LOCALITIES:
                    ev = evaluate_stream(m, corpus.valid, Dial(lam), max_tokens=MAX_TOKENS)
                    row.append(f"{lam}:{ev['attention']['in_block_mass']['mean']:.3f}/"
                               f"{ev['perplexity']:.0f}")
                print(run, f"β={beta:g}", " ".join(row), flush=True)
    except (CheckpointError, DataNotFound) as e:      # one line, as the CLI says it
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1 if isinstance(e, DataNotFound) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
