"""Locality-dial attention (docs/design.md, "The model"): two query/key channels per head, a
monotone cross-block barrier b(λ_f) = β·log(1−λ_f), a temperature τ and an anchor bias γ.

    s(t,j) = q(t)·k(j)/√d_h                       if blk(j) = blk(t)
    s(t,j) = q_x(t)·k_x(j)/√d_h + b(λ_f)          otherwise (masked outright at λ_f = 1)
    s(t,j) += γ·[j is an anchor of blk(t)]
    α(t,·) = softmax(s(t,·)/τ) over the visible keys j ≤ t

q, k are the within-block channel and q_x, k_x the cross-block one; the hooks carry
TransformerLens's shapes (``hook_q`` is ``[batch, pos, head_index, d_head]``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .blocks import same_block
from .config import ModelConfig
from .dial import Dial


class HookPoint(nn.Module):
    """An identity module; its module path is its hook name (``blocks.0.attn.hook_pattern``),
    which the model also stores as ``.name`` (what a hook function reads as ``hook.name``)."""

    name: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        return x


def cross_block_barrier(locality: float, sharpness: float) -> float:
    """b(λ_f) = β·log(1−λ_f): 0 at λ_f = 0, falling to −∞ at λ_f = 1.

    Callers mask cross-block keys outright at λ_f = 1 instead of adding −∞ (0·∞ gives NaN).

    >>> cross_block_barrier(0.0, 4.0), round(cross_block_barrier(0.5, 4.0), 4)
    (0.0, -2.7726)
    """
    if locality >= 1.0:
        return -math.inf
    if locality <= 0.0:
        return 0.0
    return sharpness * math.log1p(-locality)


def visible_keys(block_ids: Tensor, noncausal_diagnostic: bool = False) -> Tensor:
    """``[batch, query, key]`` bool: the keys a query may attend to.

    Causal: j ≤ t. The diagnostic mode also lets a query see later tokens of its own block, which
    is a leak: it exists only to show where the papers' figures come from.
    """
    n = block_ids.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=block_ids.device).tril()
    if not noncausal_diagnostic:
        return causal.expand(block_ids.shape[0], n, n)
    return causal | same_block(block_ids)


def off_block_attention_penalty(pattern: Tensor, block_ids: Tensor) -> Tensor:
    """Σ_h mean_i ‖A_h[X_i, ¬X_i]‖_F, averaged over the batch (the `attention` penalty form).

    ``pattern`` is ``[batch, head, query, key]``. Zero exactly when every query block attends only
    inside itself; the square root is taken only where the group is non-zero, so the gradient at a
    block-diagonal pattern is finite.
    """
    batch, heads, n, _ = pattern.shape
    off = ~same_block(block_ids)                                           # (B, T, T)
    sq = (pattern.float().pow(2) * off.unsqueeze(1)).sum(-1)               # (B, H, T)
    n_blocks = int(block_ids.max().item()) + 1
    idx = block_ids.unsqueeze(1).expand(batch, heads, n)
    group = sq.new_zeros(batch, heads, n_blocks).scatter_add_(-1, idx, sq)  # (B, H, nb)
    norms = torch.where(group > 0, group.clamp_min(1e-30).sqrt(), torch.zeros_like(group))
    present = torch.zeros(batch, n_blocks, device=pattern.device).scatter_(-1, block_ids, 1.0)
    per_head = (norms * present.unsqueeze(1)).sum(-1) / present.sum(-1, keepdim=True)  # (B, H)
    return per_head.sum(-1).mean()


class LocalityAttention(nn.Module):
    """Multi-head causal attention with within-block and cross-block query/key channels."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        # One fused, bias-free projection: [q_in | k_in | q_x | k_x | v], each d wide.
        self.qkv = nn.Linear(d, 5 * d, bias=False)
        self.out = nn.Linear(d, d)
        self.dropout = nn.Dropout(cfg.dropout)
        # TransformerLens's names and shapes. q, k are the within-block channel; q_x, k_x the
        # cross-block channel, our addition.
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_q_x, self.hook_k_x = HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern = HookPoint(), HookPoint()
        self.hook_z = HookPoint()
        self.equalize_channels()

    @torch.no_grad()
    def equalize_channels(self) -> None:
        """Copy the within-block channel into the cross one: a fresh model is plain attention."""
        d = self.cfg.d_model
        self.qkv.weight[2 * d:4 * d].copy_(self.qkv.weight[0:2 * d])

    def channel_weights(self) -> dict[str, Tensor]:
        """The four query/key matrices and W_V, each ``[d_model(out), d_model(in)]``."""
        w = self.qkv.weight
        d = self.cfg.d_model
        names = ("W_Q_in", "W_K_in", "W_Q_x", "W_K_x", "W_V")
        return {n: w[i * d:(i + 1) * d] for i, n in enumerate(names)}

    def forward(self, x: Tensor, block_ids: Tensor, dial: Dial,
                anchors: Tensor | None = None, score_bias: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Return the attention output ``[B, T, d]`` and the pattern ``[B, H, T, T]``."""
        cfg = self.cfg
        batch, n, d = x.shape
        heads, dh = cfg.n_heads, cfg.d_head
        # One projection, unbound into its five channels. The scores are computed from the hook
        # points' outputs, so a forward hook that edits a channel (an intervention) changes the
        # pattern. unbind's backward writes the five gradients into one tensor; the step time is
        # the same as with strided views (BENCHMARKS.md).
        q, k, q_x, k_x, v = self.qkv(x).view(batch, n, 5, heads, dh).unbind(2)  # (B, T, H, dh)
        # [batch, pos, head_index, d_head] each, as in TransformerLens
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q_x, k_x = self.hook_q_x(q_x), self.hook_k_x(k_x)                 # the cross-block channel
        scale = 1.0 / math.sqrt(dh)
        k_t = k.permute(0, 2, 3, 1)                                       # (B, H, dh, T)
        s_in = (q.transpose(1, 2) * scale) @ k_t                          # (B, H, T, T)
        sb, bias = self._score_masks(block_ids, dial, anchors, s_in.dtype, score_bias)
        if dial.locality >= 1.0:
            scores = s_in + bias        # cross-block keys are −inf in the bias: exact, never 0·∞
        else:
            s_x = (q_x.transpose(1, 2) * scale) @ k_x.permute(0, 2, 3, 1)  # (B, H, T, T)
            scores = torch.where(sb, s_in, s_x) + bias
        # [batch, head_index, query_pos, key_pos]: the scores before τ (masked keys −inf), then
        # the pattern (rows sum to 1)
        scores = self.hook_attn_scores(scores)
        logits = scores if dial.attn_temperature == 1.0 else scores / dial.attn_temperature
        pattern = self.hook_pattern(torch.softmax(logits, dim=-1, dtype=torch.float32))
        z = self.dropout(pattern).to(v.dtype) @ v.transpose(1, 2)         # (B, H, T, dh)
        z = self.hook_z(z.transpose(1, 2))              # [batch, pos, head_index, d_head]
        return self.out(z.reshape(batch, n, d)), pattern                  # (B, T, d)

    def _score_masks(self, block_ids: Tensor, dial: Dial, anchors: Tensor | None,
                     dtype: torch.dtype, score_bias: Tensor | None = None
                     ) -> tuple[Tensor, Tensor]:
        """The same-block selector ``[b, 1, T, T]`` and one additive bias holding the barrier,
        the γ anchor bias, a rule's ``score_bias`` ``[b, T, T]`` and −inf on keys a query
        cannot see (b = 1 when every row of the batch has the same blocks, as fixed windows
        do: the masks are then built once)."""
        if block_ids.shape[0] > 1 and block_ids.stride(0) == 0:
            block_ids = block_ids[:1]                           # an expanded row: one copy
        sb = same_block(block_ids).unsqueeze(1)                 # (b, 1, T, T)
        visible = visible_keys(block_ids, self.cfg.noncausal_diagnostic).unsqueeze(1)
        if dial.locality >= 1.0:
            keep = visible & sb
        else:
            keep = visible
        bias = torch.zeros(keep.shape, dtype=torch.float32, device=keep.device)
        barrier = cross_block_barrier(dial.locality, self.cfg.barrier_sharpness)
        if 0.0 < dial.locality < 1.0:
            bias = bias.masked_fill(~sb, barrier)
        if dial.rule_strength != 0.0 and anchors is not None:
            bias = bias + dial.rule_strength * anchors.unsqueeze(1).float()
        if score_bias is not None:
            bias = bias + score_bias.unsqueeze(1).float()
        return sb, bias.masked_fill(~keep, float("-inf")).to(dtype)

