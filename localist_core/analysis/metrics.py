"""Attention and language-model metrics (docs/design.md, "Metrics and their controls").

Attention metrics take per-head patterns ``[batch, head, query, key]`` and return per-query values
``[batch, head, query]``; the caller reduces. Masked (future) keys carry weight exactly 0.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..model.attention import visible_keys
from ..model.blocks import block_starts, same_block

LN2 = math.log(2.0)


# -- attention ------------------------------------------------------------------------------

def attention_entropy(pattern: Tensor) -> Tensor:
    """H = −Σ_j α log₂ α in bits, ``[B, H, Q]``; ``xlogy`` makes 0·log 0 = 0."""
    return -torch.special.xlogy(pattern, pattern).sum(-1) / LN2


def visible_count(pattern: Tensor) -> Tensor:
    """Number of keys each causal query can see, ``[Q]`` (1, 2, …, T)."""
    return torch.arange(1, pattern.shape[-2] + 1, device=pattern.device, dtype=pattern.dtype)


def normalised_entropy(pattern: Tensor, n_visible: Tensor | None = None) -> Tensor:
    """H / log₂(#visible keys), in [0, 1]; a query that sees a single key scores 0.

    ``n_visible`` (broadcast against ``[B, H, Q]``) defaults to the causal count,
    ``visible_count``."""
    n = visible_count(pattern) if n_visible is None else n_visible.to(pattern.dtype)
    denom = torch.log2(n)
    h = attention_entropy(pattern)
    return torch.where(denom > 0, h / denom.clamp_min(1e-12), torch.zeros_like(h))


def causal_entropy_ceiling(n_ctx: int) -> float:
    """mean_t log₂ t over t = 1..n_ctx: the most entropy causal attention can have, in bits."""
    return float(np.mean(np.log2(np.arange(1, n_ctx + 1))))


def mass_on(pattern: Tensor, keys: Tensor) -> Tensor:
    """Attention mass on a key mask (``[B, Q, K]`` or ``[Q, K]`` bool), ``[B, H, Q]``."""
    if keys.dim() == 3:
        keys = keys.unsqueeze(1)
    return (pattern * keys.to(pattern.dtype)).sum(-1)


def in_block_mass(pattern: Tensor, block_ids: Tensor) -> Tensor:
    """Share of each query's attention inside its own block, ``[B, H, Q]``."""
    return mass_on(pattern, same_block(block_ids))


def recent_mass(pattern: Tensor, window: int) -> Tensor:
    """Mass on the last ``window`` positions t−window+1 … t (a sliding-window control)."""
    n = pattern.shape[-1]
    pos = torch.arange(n, device=pattern.device)
    diff = pos.unsqueeze(-1) - pos.unsqueeze(0)           # t − j
    return mass_on(pattern, (diff >= 0) & (diff < window))


def shifted_block_ids(block_ids: Tensor, block_size: int) -> Tensor:
    """The shifted-block control for in-block mass: every block boundary moved ⌈b/2⌉ positions
    later, so the blocks keep their lengths but stop matching the ones the model was trained on.
    For fixed blocks of b this is the fixed partition offset by ⌊b/2⌋.

    >>> ids = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 2]])
    >>> shifted_block_ids(ids, 2).tolist()
    [[0, 1, 1, 2, 2, 2, 3, 3]]
    """
    k = block_size - block_size // 2
    starts = block_starts(block_ids)
    moved = torch.zeros_like(starts)
    if k < starts.shape[1]:
        moved[:, k:] = starts[:, :-k]
    return moved.long().cumsum(-1)


def uniform_pattern(block_ids: Tensor, heads: int = 1) -> Tensor:
    """Uniform causal attention ``[B, heads, T, T]``: the baseline for every mass metric."""
    batch, n = block_ids.shape
    p = torch.ones(n, n).tril()
    p = p / p.sum(-1, keepdim=True)
    return p.expand(batch, heads, n, n)


def pointer_fidelity_mass(pattern: Tensor, anchors: Tensor) -> Tensor:
    """Mass on the (visible) anchors of the query's block, ``[B, H, Q]``."""
    return mass_on(pattern, anchors)


def pointer_argmax_hit(pattern: Tensor, anchors: Tensor) -> Tensor:
    """1.0 where the query's most-attended key is one of its block's anchors, else 0.0."""
    top = pattern.argmax(-1, keepdim=True)                               # (B, H, Q, 1)
    a = anchors.unsqueeze(1).expand(pattern.shape[0], pattern.shape[1], *anchors.shape[-2:])
    return a.gather(-1, top).squeeze(-1).to(pattern.dtype)


def visible_in_block_mask(block_ids: Tensor, noncausal_diagnostic: bool = False) -> Tensor:
    """``[B, Q, K]`` bool: the keys of query t's own block that t may attend to (j ≤ t; the
    whole block in the non-causal diagnostic mode), as ``attention.visible_keys`` decides."""
    return visible_keys(block_ids, noncausal_diagnostic) & same_block(block_ids)


def visible_in_block_keys(block_ids: Tensor, noncausal_diagnostic: bool = False) -> Tensor:
    """How many keys of its own block each query sees, ``[B, Q]`` (float): 1, 2, … from each
    block's first token, causal unless the diagnostic mode is on.

    What a block-local query sees is this count, not the block length: fixed blocks of 3, 5
    and 10 give a mean of 2, 3 and 5.5 over whole blocks ((b + 1)/2); the partial last block
    of a 128-token window brings them to 1.99, 2.98 and 5.44. Comparing partitions needs it.

    >>> visible_in_block_keys(torch.tensor([[0, 0, 0, 1, 1]])).tolist()
    [[1.0, 2.0, 3.0, 1.0, 2.0]]
    """
    return visible_in_block_mask(block_ids, noncausal_diagnostic).sum(-1).float()


def uniform_pointer_fidelity(block_ids: Tensor, anchors: Tensor,
                             noncausal_diagnostic: bool = False) -> Tensor:
    """Pointer fidelity of uniform attention over the query's visible in-block keys, ``[B, Q]``:
    #visible anchors / #visible in-block keys. The chance level of ``pointer_fidelity_mass``
    for a query whose attention stays in its block.

    With ``anchors_per_block`` = k (causal anchors, ``blocks.anchor_mask``) the first k
    positions of a block score 1 and position p ≥ k scores k/(p + 1): fixed blocks of 3 give
    1.0, of 5 give 0.870 (0.873 over 128-token windows), of 10 give 0.629 (0.634).

    >>> ids = torch.tensor([[0, 0, 0, 0, 0]])
    >>> a = torch.zeros(1, 5, 5, dtype=torch.bool)
    >>> a[..., 0] = True                  # every query's one anchor is key 0
    >>> [round(v, 3) for v in uniform_pointer_fidelity(ids, a)[0].tolist()]
    [1.0, 0.5, 0.333, 0.25, 0.2]
    """
    vis = visible_in_block_mask(block_ids, noncausal_diagnostic)
    if anchors.dim() == 2:
        anchors = anchors.unsqueeze(0)
    n_anchors = (vis & anchors).sum(-1).float()
    return n_anchors / vis.sum(-1).clamp_min(1).float()


def pointer_fidelity_lift(pattern: Tensor, block_ids: Tensor, anchors: Tensor,
                          noncausal_diagnostic: bool = False) -> Tensor:
    """How much more mass the anchors draw than chance, ``[B, H, Q]``:

        lift = pointer_fidelity_mass − in_block_mass · uniform_pointer_fidelity

    i.e. the anchor mass beyond what the query's own in-block mass would put on its visible
    anchors if it were spread uniformly over the visible in-block keys. 0 for any attention
    that is uniform inside the block (whatever leaves the block), > 0 when in-block mass leans
    on the anchors, < 0 when it avoids them; always 0 where every visible in-block key is an
    anchor (fixed blocks of 3 with 3 anchors).

    A difference, not a ratio: it is defined when the baseline is 0 (no anchors), it averages
    over queries, heads and layers without reweighting, and it is not capped at 1/baseline
    (which is 1 for blocks of 3). It is scaled by the in-block mass, not taken against the
    bare baseline, because anchors lie in the block: mass that leaves the block (λ < 1) would
    otherwise count against the anchors, and "fidelity rises with λ" would be in-block mass
    again. With every query's mass in-block (λ = 1) it is fidelity − uniform fidelity.
    """
    base = uniform_pointer_fidelity(block_ids, anchors, noncausal_diagnostic).unsqueeze(1)
    return _lift(pointer_fidelity_mass(pattern, anchors), in_block_mass(pattern, block_ids), base)


def _lift(fidelity: Tensor, in_block: Tensor, base: Tensor) -> Tensor:
    """``pointer_fidelity_lift`` from its three parts (``attention_metrics`` has them already)."""
    return fidelity - in_block * base


def mean_attention_distance(pattern: Tensor) -> Tensor:
    """Σ_j α(t,j)·|t−j| in positions (as in ConViT), ``[B, H, Q]``."""
    n = pattern.shape[-1]
    pos = torch.arange(n, device=pattern.device, dtype=pattern.dtype)
    dist = (pos.unsqueeze(-1) - pos.unsqueeze(0)).abs()
    return (pattern * dist).sum(-1)


# Every metric ``attention_metrics`` returns, in the order tables show them, with a short label:
# the one list of metric names (evaluation results, the report, the CLI and the app read it).
METRIC_LABELS = {"entropy_bits": "H (bits)", "normalised_entropy": "H/H_max",
                 "in_block_mass": "in-block", "recent_b_mass": "recent-b",
                 "shifted_block_mass": "shifted", "uniform_in_block_mass": "uniform",
                 "visible_in_block_keys": "visible keys",
                 "pointer_fidelity_mass": "fidelity",
                 "uniform_pointer_fidelity": "fidelity (uniform)",
                 "pointer_fidelity_lift": "fidelity lift", "pointer_argmax_hit": "argmax hit",
                 "mean_attention_distance": "distance"}
METRIC_NAMES = tuple(METRIC_LABELS)


def attention_metrics(pattern: Tensor, block_ids: Tensor, anchors: Tensor,
                      block_size: int, noncausal_diagnostic: bool = False) -> dict[str, Tensor]:
    """Every attention metric for one layer (docs/design.md, "Metrics and their controls"),
    each ``[B, H, Q]``, controls included.

    ``visible_in_block_keys`` and ``uniform_pointer_fidelity`` do not depend on the pattern;
    they are expanded over heads like ``uniform_in_block_mass``. ``noncausal_diagnostic``
    follows the model's visibility (a query also sees the later keys of its block), and so
    does the entropy's normaliser."""
    uni = uniform_pattern(block_ids)
    shape = pattern.shape[:-1]
    ncd = noncausal_diagnostic
    # Causal visibility is the default normaliser; the diagnostic mode counts its own keys.
    n_visible = visible_keys(block_ids, True).sum(-1).unsqueeze(1) if ncd else None  # (B, 1, Q)
    in_block = in_block_mass(pattern, block_ids)
    fidelity = pointer_fidelity_mass(pattern, anchors)
    base = uniform_pointer_fidelity(block_ids, anchors, ncd).unsqueeze(1)            # (B, 1, Q)
    return {
        "entropy_bits": attention_entropy(pattern),
        "normalised_entropy": normalised_entropy(pattern, n_visible),
        "in_block_mass": in_block,
        "recent_b_mass": recent_mass(pattern, block_size),
        "shifted_block_mass": in_block_mass(pattern, shifted_block_ids(block_ids, block_size)),
        "uniform_in_block_mass": in_block_mass(uni, block_ids).expand(pattern.shape[:-1]),
        "visible_in_block_keys": visible_in_block_keys(block_ids, ncd).unsqueeze(1).expand(shape),
        "pointer_fidelity_mass": fidelity,
        "uniform_pointer_fidelity": base.expand(shape),
        "pointer_fidelity_lift": _lift(fidelity, in_block, base),
        "pointer_argmax_hit": pointer_argmax_hit(pattern, anchors),
        "mean_attention_distance": mean_attention_distance(pattern),
    }


# -- language model baselines ---------------------------------------------------------------

def unigram_perplexity(train: np.ndarray | Tensor, evaluate: np.ndarray | Tensor, vocab_size: int,
                       add_k: float = 1.0) -> float:
    """Perplexity of an add-k unigram model fitted on ``train``."""
    train, evaluate = np.asarray(train), np.asarray(evaluate)
    counts = np.bincount(train, minlength=vocab_size) + add_k
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[evaluate].mean()))


def bigram_perplexity(train: np.ndarray | Tensor, evaluate: np.ndarray | Tensor, vocab_size: int,
                      discount: float = 0.75) -> float:
    """Perplexity of an interpolated Kneser-Ney bigram model fitted on ``train``.

    P(w|v) = max(c(v,w) − D, 0)/c(v) + D·N₁₊(v·)/c(v) · P_cont(w), where P_cont(w) ∝ N₁₊(·w)
    (add-one over the vocabulary so an unseen continuation keeps some mass); unseen v uses P_cont.
    The first token of ``evaluate`` is scored by P_cont (no history).
    """
    train, ev = np.asarray(train, dtype=np.int64), np.asarray(evaluate, dtype=np.int64)
    v = int(vocab_size)
    uniq, cnt = np.unique(train[:-1] * v + train[1:], return_counts=True)
    prev, nxt = uniq // v, uniq % v
    c_v = np.bincount(prev, weights=cnt, minlength=v)
    n1_v = np.bincount(prev, minlength=v).astype(np.float64)
    cont = np.bincount(nxt, minlength=v).astype(np.float64) + 1.0
    p_cont = cont / cont.sum()
    q_prev, q_next = ev[:-1], ev[1:]
    codes = q_prev * v + q_next
    pos = np.searchsorted(uniq, codes)
    pos_c = np.minimum(pos, len(uniq) - 1)
    c_vw = np.where(uniq[pos_c] == codes, cnt[pos_c], 0).astype(np.float64)
    cv = c_v[q_prev]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(cv > 0,
                     np.maximum(c_vw - discount, 0) / np.maximum(cv, 1)
                     + discount * n1_v[q_prev] / np.maximum(cv, 1) * p_cont[q_next],
                     p_cont[q_next])
    logp = np.concatenate([[np.log(p_cont[ev[0]])], np.log(p)])
    return float(np.exp(-logp.mean()))
