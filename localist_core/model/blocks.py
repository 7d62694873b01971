"""Block partitions and anchors: which block each token is in, and which tokens anchor a block.

Every partition answers one question, ``block_ids(tokens) -> [batch, pos]``, with ids that start
at 0 and never decrease along a sequence, so attention and metrics never care which one is used.
The partition that reads the words, ``bigram``, and its tables live in ``bigram.py``.
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .bigram import NO_TABLES, BigramPartition, BigramTables
from .config import PARTITIONS


class Partition(Protocol):
    """The one interface every partition strategy implements."""

    name: str

    def block_ids(self, tokens: Tensor) -> Tensor:
        """Block id of every position, ``[batch, pos]`` (long), contiguous and non-decreasing."""
        ...


class FixedPartition:
    """Fixed windows of ``block_size`` positions; ``offset`` shifts them (the shifted control).

    >>> FixedPartition(3).block_ids(torch.zeros(1, 7, dtype=torch.long)).tolist()
    [[0, 0, 0, 1, 1, 1, 2]]
    >>> FixedPartition(3, offset=1).block_ids(torch.zeros(1, 7, dtype=torch.long)).tolist()
    [[0, 0, 1, 1, 1, 2, 2]]
    """

    name = "fixed"

    def __init__(self, block_size: int, offset: int = 0):
        if block_size < 1:
            raise ValueError(f"block_size must be ≥ 1, got {block_size}")
        self.block_size = block_size
        self.offset = offset % block_size

    def block_ids(self, tokens: Tensor) -> Tensor:
        batch, n = tokens.shape
        pos = torch.arange(n, device=tokens.device)
        ids = (pos + self.offset) // self.block_size
        ids = ids - ids[0]  # start at 0 whatever the offset
        return ids.unsqueeze(0).expand(batch, n)

    def __repr__(self) -> str:
        return f"FixedPartition(block_size={self.block_size}, offset={self.offset})"


# Sentence and clause punctuation of WikiText; ``<eos>`` ends a line (a paragraph or a heading).
BOUNDARY_WORDS = (".", ",", ";", ":", "!", "?", "–", "—", "<eos>")


def _cumsum_with_reset(starts: Tensor, max_len: int) -> Tensor:
    """Block ids from block-start flags ``[batch, pos]``, adding a start wherever a block would
    grow past ``max_len``. Position 0 always starts a block. One pass over positions, vectorised
    over the batch."""
    batch, n = starts.shape
    ids = torch.zeros(batch, n, dtype=torch.long, device=starts.device)
    cur = torch.zeros(batch, dtype=torch.long, device=starts.device)
    length = torch.ones(batch, dtype=torch.long, device=starts.device)
    for t in range(1, n):
        new = starts[:, t] | (length >= max_len)
        cur = cur + new
        length = torch.where(new, torch.ones_like(length), length + 1)
        ids[:, t] = cur
    return ids


class PunctuationPartition:
    """A block ends at sentence or clause punctuation (the punctuation token is the block's last),
    or when it reaches ``max_block_size`` tokens.

    Causal: the block of position t depends only on tokens ≤ t, so the leak test holds.
    ``boundary`` is a ``[vocab]`` bool mask of the ids that end a block (see ``from_words``).

    >>> words = ["the", ",", "cat", "."]
    >>> p = PunctuationPartition.from_words(words, max_block_size=3)
    >>> p.block_ids(torch.tensor([[0, 2, 1, 0, 2, 0, 0, 3, 2]])).tolist()
    [[0, 0, 0, 1, 1, 1, 2, 2, 3]]
    """

    name = "punctuation"

    def __init__(self, boundary: Tensor, max_block_size: int):
        if max_block_size < 1:
            raise ValueError(f"max_block_size must be ≥ 1, got {max_block_size}")
        self.boundary = boundary
        self.max_block_size = int(max_block_size)

    @classmethod
    def from_words(cls, words: list[str], max_block_size: int) -> "PunctuationPartition":
        return cls(boundary_mask(words), max_block_size)

    def block_ids(self, tokens: Tensor) -> Tensor:
        ends = self.boundary.to(tokens.device)[tokens]
        starts = torch.zeros_like(ends)
        starts[:, 1:] = ends[:, :-1]          # a block starts after a boundary token
        return _cumsum_with_reset(starts, self.max_block_size)

    def __repr__(self) -> str:
        return f"PunctuationPartition(max_block_size={self.max_block_size})"


def _pair_uniform(tokens: Tensor) -> Tensor:
    """``[batch, pos]`` numbers in [0, 1) from an integer hash of (previous token, token): a
    fixed pseudo-random draw for each word pair, unrelated to what the words mean. Position 0
    has no previous token and hashes with −1."""
    prev = torch.full_like(tokens, -1)
    prev[:, 1:] = tokens[:, :-1]
    h = (prev + 1) * 0x9E3779B1 + tokens * 0x85EBCA77 + 0x165667B1     # int64 wraps
    h = h ^ (h >> 15)
    h = (h & 0xFFFFFFFF) * 0x2C1B3C6D
    h = h ^ (h >> 13)
    return (h & 0xFFFFFF).double() / float(1 << 24)


class RandomPartition:
    """Blocks of punctuation's lengths at random places: the control for *where* punctuation
    puts its boundaries. A block that has reached length L ends at the current token with the
    hazard P(length = L | length ≥ L) of ``lengths`` (shares of lengths 1, 2, …), decided by
    a fixed pseudo-random number of the (previous, current) word pair (``_pair_uniform``); so
    its lengths follow ``lengths`` while its boundaries ignore meaning and punctuation. Causal:
    the block of position t depends only on tokens ≤ t.

    >>> p = RandomPartition((0.0, 1.0), max_block_size=8)      # every block exactly 2 long
    >>> p.block_ids(torch.tensor([[5, 3, 9, 9, 1]])).tolist()
    [[0, 0, 1, 1, 2]]
    """

    name = "random"

    def __init__(self, lengths, max_block_size: int):
        if max_block_size < 1:
            raise ValueError(f"max_block_size must be ≥ 1, got {max_block_size}")
        share = torch.tensor([float(x) for x in lengths], dtype=torch.float64)
        if share.numel() == 0 or bool((share < 0).any()) or float(share.sum()) <= 0:
            raise ValueError("lengths must be shares ≥ 0 with a positive sum")
        self.max_block_size = int(max_block_size)
        share = share[: self.max_block_size] / share.sum()
        survive = 1.0 - torch.cumsum(share, 0) + share          # P(length ≥ L)
        hazard = torch.where(survive > 0, share / survive.clamp_min(1e-300),
                             torch.ones_like(share))
        hazard[-1] = 1.0           # the longest length given (or the cap) always ends a block
        self.hazard = hazard

    def block_ids(self, tokens: Tensor) -> Tensor:
        u = _pair_uniform(tokens)
        hazard = self.hazard.to(tokens.device)
        batch, n = tokens.shape
        ids = torch.zeros(batch, n, dtype=torch.long, device=tokens.device)
        cur = torch.zeros(batch, dtype=torch.long, device=tokens.device)
        length = torch.ones(batch, dtype=torch.long, device=tokens.device)
        for t in range(1, n):
            # the block holding t − 1 ends there with the hazard of its length
            ended = u[:, t - 1] < hazard[(length - 1).clamp_max(len(hazard) - 1)]
            cur = cur + ended
            length = torch.where(ended, torch.ones_like(length), length + 1)
            ids[:, t] = cur
        return ids

    def __repr__(self) -> str:
        return f"RandomPartition(max_block_size={self.max_block_size})"


def boundary_mask(words: list[str]) -> Tensor:
    """``[vocab]`` bool: the ids of ``BOUNDARY_WORDS`` in a vocabulary."""
    mark = set(BOUNDARY_WORDS)
    return torch.tensor([w in mark for w in words], dtype=torch.bool)


def zipf_log2_prior(vocab_size: int) -> Tensor:
    """log2 p(w) of a Zipf law over frequency-ranked ids: p(rank r) = 1 / ((r + 1)·H_V).

    Our vocabularies are sorted by training frequency (most frequent first), and word
    frequencies in WikiText follow Zipf's law closely, so the id alone gives a prior without
    shipping counts inside every checkpoint.
    """
    ranks = torch.arange(1, vocab_size + 1, dtype=torch.float64)
    h = (1.0 / ranks).sum()
    return (-torch.log2(ranks) - torch.log2(h)).float()


class RecruitedPartition:
    """Blocks recruited left to right by a description-length test (the third paper;
    docs/design.md, "Blocks, partitions and anchors").

    Reading a sequence, the current block is "the one block" so far, from its start b to s − 1.
    Token s either continues it or is split off to recruit a new block. The gain of the split, in
    bits, is

        gain(s) = L_continue(x_s) − L_new(x_s) − C

    - **L_continue(x_s) = −log2[(c + α·p(x_s)) / (n + α)]**: the bits to code x_s inside the
      current block with the block's own adaptive code, a Dirichlet–multinomial (Pólya urn) with
      concentration α whose base measure is the prior p. n = s − b is the block's length so far
      and c the number of times x_s already occurs in it. This is "the model" the split is
      measured under: a block is cheap when its words repeat. It is a stand-in for the
      language model of the design, chosen because it is exact, needs no forward pass and
      cannot see later tokens; REPRODUCTION.md discusses what it misses.
    - **L_new(x_s) = −log2 p(x_s)**: the bits to code x_s as the first token of a fresh block,
      where the urn is empty and codes with its base measure alone.
    - **p(w)**: a Zipf prior over the frequency-ranked vocabulary (``zipf_log2_prior``).
    - **C = log2((1 − q)/q)**, the cost of the new boundary: every position carries a flag
      "a block starts here", coded with probability q; a split pays −log2 q for it where
      continuing pays −log2(1 − q). ``boundary_bits`` sets C, so q = 1/(1 + 2^C).

    A block starts at s exactly when gain(s) > 0; no boundary is ever added with a gain ≤ 0.
    For a word new to the block, gain = log2((n + α)/α) − C: the block grows until it is about
    α(2^C − 1) tokens long and then ends before the next new word; a repeated word is cheap to
    continue (gain < 0 unless the word is very frequent), so repetition keeps a block together.

    The test is causal: whether s starts a block depends on tokens b … s only, never on later
    ones, so the partition cannot carry future tokens into attention (the leak test holds). A
    top-down split of the whole window, which sees every token first, would leak.

    >>> p = RecruitedPartition(zipf_log2_prior(10), alpha=1.0, boundary_bits=1.5)
    >>> p.block_ids(torch.tensor([[5, 6, 7, 8, 8, 8, 9, 5, 6, 7]])).tolist()
    [[0, 0, 1, 1, 1, 1, 2, 2, 3, 3]]
    """

    name = "recruited"

    def __init__(self, log2_prior: Tensor, alpha: float, boundary_bits: float):
        if not alpha > 0:
            raise ValueError(f"recruit_alpha (α) must be > 0, got {alpha}")
        if not boundary_bits >= 0:
            raise ValueError(f"boundary_bits (C) must be ≥ 0, got {boundary_bits}")
        self.log2_prior = log2_prior
        self.alpha = float(alpha)
        self.boundary_bits = float(boundary_bits)

    def trace(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(block_ids [batch, pos], gain [batch, pos])``: each position's split gain in bits,
        the test it was recruited by (0 at position 0, which always starts a block)."""
        batch, n = tokens.shape
        dev = tokens.device
        logp = self.log2_prior.to(dev)[tokens].double()                 # log2 p(x_s)
        p = logp.exp2()
        eq = tokens.unsqueeze(-1) == tokens.unsqueeze(-2)               # [B, s, j]
        pos = torch.arange(n, device=dev)
        ids = torch.zeros(batch, n, dtype=torch.long, device=dev)
        gain = torch.zeros(batch, n, dtype=torch.float64, device=dev)
        start = torch.zeros(batch, dtype=torch.long, device=dev)
        cur = torch.zeros(batch, dtype=torch.long, device=dev)
        a = self.alpha
        for s in range(1, n):
            in_block = (pos[:s].unsqueeze(0) >= start.unsqueeze(1))      # [B, s]
            c = (eq[:, s, :s] & in_block).sum(-1).double()
            length = (s - start).double()
            cont = -torch.log2((c + a * p[:, s]) / (length + a))
            g = cont + logp[:, s] - self.boundary_bits
            gain[:, s] = g
            split = g > 0
            cur = cur + split
            start = torch.where(split, torch.full_like(start, s), start)
            ids[:, s] = cur
        return ids, gain.float()

    def block_ids(self, tokens: Tensor) -> Tensor:
        return self.trace(tokens)[0]

    def __repr__(self) -> str:
        return (f"RecruitedPartition(alpha={self.alpha}, boundary_bits={self.boundary_bits})")


def make_partition(cfg, words: list[str] | None = None, boundary: Tensor | None = None,
                   bigram: BigramTables | None = None):
    """Build the partition a ModelConfig names (``cfg.partition``).

    ``punctuation`` needs to know which ids are punctuation: pass the vocabulary's ``words``
    or a ready ``boundary`` mask. ``bigram`` needs the Kneser–Ney tables of the training split
    (``bigram.kn_bigram_tables``).
    """
    kind = cfg.partition
    if kind == "fixed":
        return FixedPartition(cfg.block_size)
    if kind == "punctuation":
        if boundary is None:
            if words is None:
                raise ValueError("the punctuation partition needs the vocabulary's words")
            boundary = boundary_mask(words)
        return PunctuationPartition(boundary, cfg.max_block_size)
    if kind == "recruited":
        return RecruitedPartition(zipf_log2_prior(cfg.vocab_size), cfg.recruit_alpha,
                                  cfg.boundary_bits)
    if kind == "random":
        return RandomPartition(cfg.random_block_lengths, cfg.max_block_size)
    if kind == "bigram":
        if bigram is None:
            raise ValueError(NO_TABLES)
        if bigram.vocab_size != cfg.vocab_size:
            raise ValueError(f"bigram tables of {bigram.vocab_size:,} words for a vocabulary of "
                             f"{cfg.vocab_size:,}")
        return BigramPartition(bigram, cfg.recruit_alpha, cfg.bigram_boundary_bits,
                               cfg.max_block_size)
    raise ValueError(f"partition {kind!r} is not available; choose one of {PARTITIONS}")


def block_starts(block_ids: Tensor) -> Tensor:
    """``[batch, pos]`` bool: the position opens a block (position 0 always does).

    >>> block_starts(torch.tensor([[0, 0, 1, 1, 2]])).tolist()
    [[True, False, True, False, True]]
    """
    starts = torch.ones_like(block_ids, dtype=torch.bool)
    starts[..., 1:] = block_ids[..., 1:] != block_ids[..., :-1]
    return starts


def same_block(block_ids: Tensor) -> Tensor:
    """``[batch, query, key]`` bool: key and query share a block."""
    return block_ids.unsqueeze(-1) == block_ids.unsqueeze(-2)


# ---------------------------------------------------------------------------------------------
# Anchors (our reading of "lowest local entropy", docs/design.md)
# ---------------------------------------------------------------------------------------------

def local_entropy_table(ids: np.ndarray | Tensor, vocab_size: int, add_k: float = 0.01) -> Tensor:
    """H(next token | w) in bits for every vocabulary item w, from add-k smoothed bigram counts.

    Our reading of the papers' "local entropy": how predictable the token after w is. A word never
    seen in training gets the entropy of the uniform distribution, log2(V), so it is never an anchor
    before a seen word. Smoothing spreads ``add_k`` over every one of the V possible successors.
    """
    ids = np.asarray(ids, dtype=np.int64)
    v = int(vocab_size)
    codes = ids[:-1] * v + ids[1:]
    uniq, cnt = np.unique(codes, return_counts=True)
    prev = uniq // v
    c_w = np.bincount(prev, weights=cnt, minlength=v)            # c(w)
    n_seen = np.bincount(prev, minlength=v).astype(np.float64)   # distinct successors of w
    denom = c_w + add_k * v
    p_seen = (cnt + add_k) / denom[prev]
    h_seen = np.bincount(prev, weights=-p_seen * np.log2(p_seen), minlength=v)
    p0 = add_k / denom
    h_unseen = -(v - n_seen) * p0 * np.log2(p0)
    return torch.tensor(h_seen + h_unseen, dtype=torch.float32)


def _rank_in_block(block_ids: Tensor, token_entropy: Tensor) -> Tensor:
    """``[batch, i, j]`` bool: i is in j's block and comes before j in anchor order.

    Anchor order is lowest local entropy first; ties go to the earlier position.
    """
    n = block_ids.shape[-1]
    pos = torch.arange(n, device=block_ids.device)
    e_i, e_j = token_entropy.unsqueeze(-1), token_entropy.unsqueeze(-2)
    earlier = (pos.unsqueeze(-1) < pos.unsqueeze(-2))
    better = (e_i < e_j) | ((e_i == e_j) & earlier)
    return same_block(block_ids) & better


def block_anchors(block_ids: Tensor, token_entropy: Tensor, k: int) -> Tensor:
    """``[batch, pos]`` bool: the k lowest-local-entropy tokens of each whole block (display)."""
    return _rank_in_block(block_ids, token_entropy).sum(-2) < k


def anchor_mask(block_ids: Tensor, token_entropy: Tensor, k: int, causal: bool = True) -> Tensor:
    """``[batch, query, key]`` bool: key j is an anchor of query t's block, as t can see it.

    Causal models choose the k anchors among the block's tokens at positions ≤ t, so the anchor
    bias γ never reveals a later token (the leak test covers γ > 0). With ``causal=False`` (the
    diagnostic mode) anchors are chosen over the whole block.
    """
    sb = same_block(block_ids)
    if not causal:
        return sb & block_anchors(block_ids, token_entropy, k).unsqueeze(-2)
    # ranks[t, j] = #{i ≤ t : i before j in anchor order}, a cumulative sum over i.
    ranks = _rank_in_block(block_ids, token_entropy).to(torch.int32).cumsum(dim=-2)
    n = block_ids.shape[-1]
    visible = torch.ones(n, n, dtype=torch.bool, device=block_ids.device).tril()
    return sb & visible & (ranks < k)


def uniform_entropy_bits(n: int) -> float:
    """Entropy of a uniform distribution over n keys, in bits."""
    return math.log2(n) if n > 0 else 0.0
