"""WikiText-2 (word level) through Hugging Face ``datasets`` (docs/design.md, "Experiments").

Sources, first found wins: an explicit ``data_dir``, ``$LOCALIST_DATA_DIR``, the development copy
at ``../shared/data/wikitext-2`` beside the repository, then the Hub where a network exists. With
none of them the loader fails within seconds and says what to do; it never retries.
"""
from __future__ import annotations

import os
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..model.tokenizer import EOS, Tokenizer
from ..paths import DEV_DATA_DIR

SPLITS = ("train", "valid", "test")
HUB_ID, HUB_CONFIG = "Salesforce/wikitext", "wikitext-2-v1"


class DataNotFound(RuntimeError):
    """No local WikiText folder and no reachable Hub."""


@dataclass
class Corpus:
    """Token-id streams of the three splits and the vocabulary built from the training split."""

    tokenizer: Tokenizer
    train: Tensor
    valid: Tensor
    test: Tensor
    source: str

    def split(self, name: str) -> Tensor:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local folder to read, or None when there is none (then the Hub is the only source)."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        missing = [s for s in SPLITS if not (path / f"{s}.txt").is_file()]
        if missing:
            raise DataNotFound(f"{path} lacks {', '.join(m + '.txt' for m in missing)}: a WikiText "
                               f"folder holds train.txt, valid.txt and test.txt")
        return path
    env = os.environ.get("LOCALIST_DATA_DIR")
    if env:
        return resolve_data_dir(env)
    if all((DEV_DATA_DIR / f"{s}.txt").is_file() for s in SPLITS):
        return DEV_DATA_DIR
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_lines(data_dir: str | os.PathLike | None = None) -> tuple[dict[str, list[str]], str]:
    """Lines of each split (newline stripped) and a description of where they came from."""
    from datasets import load_dataset  # heavy import, kept off the app's start-up path

    path = resolve_data_dir(data_dir)
    if path is not None:
        files = {s: str(path / f"{s}.txt") for s in SPLITS}
        ds = load_dataset("text", data_files=files)
        return {s: ds[s]["text"] for s in SPLITS}, str(path)
    if not _hub_reachable():
        raise DataNotFound(
            "WikiText-2 not found. No local folder was given and the Hugging Face Hub is not "
            "reachable (offline, or HF_DATASETS_OFFLINE=1). Point to a folder holding train.txt, "
            "valid.txt and test.txt (the word-level 'wiki.*.tokens' files) with --data-dir or "
            f"LOCALIST_DATA_DIR; in development it is {DEV_DATA_DIR}.")
    ds = load_dataset(HUB_ID, HUB_CONFIG)
    names = {"train": "train", "valid": "validation", "test": "test"}
    return {s: [t.rstrip("\n") for t in ds[names[s]]["text"]] for s in SPLITS}, f"hub:{HUB_ID}"


def line_words(line: str) -> list[str]:
    """The pytorch/examples ``Corpus`` rule: whitespace split, one ``<eos>`` per line."""
    return line.split() + [EOS]


def build_vocab(lines: list[str]) -> Tokenizer:
    """Vocabulary of the training lines, most frequent first."""
    counts: Counter = Counter()
    for line in lines:
        counts.update(line_words(line))
    return Tokenizer.from_counts(counts)


def encode_lines(tok: Tokenizer, lines: list[str]) -> Tensor:
    """One long stream of ids for a split, ``<unk>`` for words outside the vocabulary."""
    index, unk = tok.index, tok.unk_id
    return torch.tensor([index.get(w, unk) for line in lines for w in line_words(line)],
                        dtype=torch.long)


def load_corpus(data_dir: str | os.PathLike | None = None, tokenizer: Tokenizer | None = None
                ) -> Corpus:
    """Load WikiText-2; build the vocabulary from train unless a tokenizer is given."""
    lines, source = load_lines(data_dir)
    tok = tokenizer or build_vocab(lines["train"])
    streams = {s: encode_lines(tok, lines[s]) for s in SPLITS}
    return Corpus(tok, streams["train"], streams["valid"], streams["test"], source)


# -- batches --------------------------------------------------------------------------------

def random_windows(stream: Tensor, batch_size: int, n_ctx: int, generator: torch.Generator
                   ) -> tuple[Tensor, Tensor]:
    """A batch of random windows: inputs ``[B, n_ctx]`` and next-token targets ``[B, n_ctx]``."""
    if len(stream) < n_ctx + 2:
        raise ValueError(f"the training stream has {len(stream)} tokens, fewer than n_ctx+2")
    starts = torch.randint(0, len(stream) - n_ctx - 1, (batch_size,), generator=generator)
    idx = starts.unsqueeze(1) + torch.arange(n_ctx + 1)
    win = stream[idx]
    return win[:, :-1], win[:, 1:]
