"""Shared fixtures: a synthetic WikiText-style corpus written to temporary files and loaded
through ``datasets``, and tiny models (untrained and briefly trained) built from it."""
from __future__ import annotations

import os
import random

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from localist_core.experiments.data import load_corpus  # noqa: E402
from localist_core.experiments.train import make_model, train  # noqa: E402
from localist_core.model.config import ModelConfig, TrainConfig, preset  # noqa: E402

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the committee", "a small bird",
            "the river", "our teacher", "the ship", "a young king", "the army", "the city"]
VERBS = ["sees", "follows", "builds", "carries", "finds", "loves", "attacks", "visits",
         "paints", "describes", "defends", "crosses"]
OBJECTS = ["the bridge", "a red house", "the long road", "the castle", "a letter", "the forest",
           "the market", "a golden ring", "the harbour", "a new song", "the mountain", "the law"]
TAILS = ["in 1990", "on Monday", "with great care", "after the war", "near the sea",
         "during the night", "for three years", "without a word"]


def synthetic_lines(n_lines: int, seed: int) -> list[str]:
    """WikiText-like lines: headings, blank lines and sentences with some structure to learn."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        if i % 15 == 0:
            lines.append(f" = {rng.choice(OBJECTS).split()[-1].title()} = ")
        elif i % 15 == 1:
            lines.append(" ")
        else:
            s = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
                 f"{rng.choice(TAILS)} ." for _ in range(rng.randint(1, 3))]
            lines.append(" " + " ".join(s) + " ")
    return lines


@pytest.fixture(autouse=True)
def no_study_cache(monkeypatch, tmp_path):
    """Pages offer the multi-seed study's cache beside the sweep cache; a test sees only the
    caches it writes (a test that wants one sets $LOCALIST_STUDY_CACHE itself)."""
    monkeypatch.setenv("LOCALIST_STUDY_CACHE", str(tmp_path / "no-study-cache"))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-wikitext")
    for split, n, seed in (("train", 1500, 1), ("valid", 150, 2), ("test", 150, 3)):
        (folder / f"{split}.txt").write_text("\n".join(synthetic_lines(n, seed)) + "\n",
                                             encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_corpus(tiny_data_dir):
    return load_corpus(tiny_data_dir)


@pytest.fixture(scope="session")
def tiny_model_cfg(tiny_corpus):
    return ModelConfig(vocab_size=len(tiny_corpus.tokenizer), **preset("tiny").model)


@pytest.fixture()
def tiny_model(tiny_model_cfg, tiny_corpus):
    """A fresh (untrained, equal-channel) tiny model in eval mode."""
    return make_model(tiny_model_cfg, tiny_corpus, seed=0).eval()


@pytest.fixture(scope="session")
def trained_tiny(tiny_model_cfg, tiny_corpus):
    """A tiny model trained briefly with the dial protocol, so its two channels differ."""
    cfg = TrainConfig(**{**preset("tiny").train, "protocol": "dial", "penalty_form": "none",
                         "max_steps": 40})
    return train(tiny_model_cfg, cfg, tiny_corpus, progress=False).model.eval()


@pytest.fixture()
def tokens(tiny_corpus, tiny_model_cfg):
    return tiny_corpus.valid[: 2 * tiny_model_cfg.n_ctx].view(2, tiny_model_cfg.n_ctx).clone()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_dial_root(tmp_path_factory, trained_tiny, tiny_corpus):
    """A checkpoint folder holding the trained tiny model saved as a dial checkpoint
    (``tiny-dial``), for app tests that point $LOCALIST_CHECKPOINT_DIRS at it."""
    from localist_core import save_checkpoint
    root = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(root / "tiny-dial", trained_tiny, tiny_corpus.tokenizer,
                    TrainConfig(protocol="dial", penalty_form="none"))
    return root
