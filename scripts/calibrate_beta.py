"""Calibrate the dial sharpness β: in-block mass and valid perplexity against λ_f for several β,
on the first 16,384 validation tokens (REPRODUCTION.md, "Does one checkpoint serve the dial?").

    HF_DATASETS_OFFLINE=1 python scripts/calibrate_beta.py runs/dial-* runs/attention-l0.0-*
"""
import sys

import torch

from localist_core import load_model
from localist_core.analysis.evaluate import evaluate_stream
from localist_core.experiments.data import load_corpus
from localist_core.experiments.sweep import with_barrier_sharpness

torch.set_num_threads(2)
for run in sys.argv[1:]:
    model, tok = load_model(run)
    corpus = load_corpus(tokenizer=tok)
    for beta in (4.0, 16.0, 64.0):
        m = with_barrier_sharpness(model, beta)
        row = []
        for lam in (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0):
            ev = evaluate_stream(m, corpus.valid, lam, 1.0, max_tokens=16384)
            row.append(f"{lam}:{ev['attention']['in_block_mass']['mean']:.3f}/"
                       f"{ev['perplexity']:.0f}")
        print(run, f"β={beta:g}", " ".join(row), flush=True)
