"""Block partitions and anchors: which block each token is in, and which tokens anchor a block.

Every partition answers one question, ``block_ids(tokens) -> [batch, pos]``, with ids that start
at 0 and never decrease along a sequence, so attention and metrics never care which one is used.
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


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


def make_partition(kind: str, block_size: int) -> Partition:
    """Build the partition named in a ModelConfig."""
    if kind == "fixed":
        return FixedPartition(block_size)
    raise ValueError(f"partition {kind!r} is not available; choose 'fixed'")


def same_block(block_ids: Tensor) -> Tensor:
    """``[batch, query, key]`` bool: key and query share a block."""
    return block_ids.unsqueeze(-1) == block_ids.unsqueeze(-2)


# ---------------------------------------------------------------------------------------------
# Anchors (DESIGN §2, "our reading of lowest local entropy")
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
