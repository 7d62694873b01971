"""The papers' threshold formula and the cross-block-mass bound, with estimators for their inputs
(docs/design.md, "Theory, rules and inspection"). The estimators are our readings of the
symbols; each docstring says which.

    λᵢ⁽ʰ⁾(τ, δ) = 2·L_ℓ·R_x·σ_X·√|Xᵢ| / (τ·(1−ρ_max)) · exp(−δ/τ)
    cross-block mass ≤ n_x·e^{−δ/τ} / (n_in + n_x·e^{−δ/τ})
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..model.blocks import same_block
from ..model.dial import Dial


def threshold_locality(lipschitz: float, r_x: float, sigma_x: float, block_len: float,
                       attn_temperature: float, rho_max: float, margin: float) -> float:
    """λ threshold = 2·L·R_x·σ_X·√|X| / (τ·(1−ρ_max)) · exp(−δ/τ).

    >>> round(threshold_locality(1.0, 1.0, 1.0, 4, 1.0, 0.5, 0.0), 6)
    8.0
    >>> threshold_locality(1.0, 1.0, 1.0, 4, 0.05, 0.5, -1e6)   # overflows to +∞, not an error
    inf
    """
    if attn_temperature <= 0:
        raise ValueError("τ must be > 0")
    if not rho_max < 1.0:
        raise ValueError("ρ_max must be < 1 (the formula divides by 1 − ρ_max)")
    scale = (2.0 * lipschitz * r_x * sigma_x * math.sqrt(block_len)
             / (attn_temperature * (1.0 - rho_max)))
    exponent = -margin / attn_temperature
    if scale == 0.0:
        return 0.0
    if exponent > 709.0 or math.isinf(scale):   # exp() would overflow: the threshold is +∞
        return math.copysign(math.inf, scale)
    return scale * math.exp(exponent)


def cross_block_mass_bound(n_in: Tensor | float, n_x: Tensor | float, margin: Tensor | float,
                           attn_temperature: float) -> Tensor:
    """Upper bound on cross-block mass when every cross score sits δ below every in-block score.

    It holds exactly per query with δ = min in-block score − max cross-block score (any sign).

    >>> float(cross_block_mass_bound(5.0, 0.0, 1.0, 1.0))
    0.0
    """
    n_in, n_x, margin = (torch.as_tensor(v, dtype=torch.float64) for v in (n_in, n_x, margin))
    w = n_x * torch.exp(-margin / attn_temperature)
    return w / (n_in + w)


def query_margins(scores: Tensor, block_ids: Tensor) -> dict[str, Tensor]:
    """Per query ``[B, H, Q]``: δ = min visible in-block score − max visible cross-block score,
    and the counts n_in, n_x of visible keys. ``scores`` are pre-temperature (−inf = masked).
    Queries with no visible cross-block key get δ = +inf (their cross mass is 0)."""
    sb = same_block(block_ids).unsqueeze(1)
    vis = torch.isfinite(scores)
    inf = torch.tensor(float("inf"), dtype=scores.dtype)
    s_in_min = torch.where(sb & vis, scores, inf).amin(-1)
    s_x_max = torch.where(~sb & vis, scores, -inf).amax(-1)
    return {"margin": s_in_min - s_x_max,
            "n_in": (sb & vis).sum(-1).to(scores.dtype),
            "n_x": (~sb & vis).sum(-1).to(scores.dtype)}


@dataclass(frozen=True)
class ThresholdInputs:
    """Estimated inputs of the threshold formula for one layer (our readings, see each field)."""

    lipschitz: float    # L_ℓ: max over heads of the spectral norm of W_Q^x[h]ᵀW_K^x[h]/√d_h
    r_x: float          # R_x: 95th percentile of ‖x‖ over the LayerNorm'd attention inputs
    sigma_x: float      # σ_X: RMS distance of a token's input to its block's mean input
    block_len: float    # |X_i|: mean block length
    rho_max: float      # ρ_max: mean over sequences of the max |cos| between two block means
    margin: float       # δ: median over queries (with cross keys) of the measured score margin

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def estimate_threshold_inputs(model, tokens: Tensor, dial: Dial = Dial(),
                              layer: int = 0) -> ThresholdInputs:
    """Estimate L, R_x, σ_X, |X|, ρ_max and δ for ``layer`` from a model and a token batch at
    ``dial`` (δ comes from the scores before τ, so τ does not change it)."""
    tokens = model.check_tokens(tokens)
    names = [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_attn_scores"]
    _, cache = model.run_with_cache(tokens, dial, names_filter=names, return_type=None)
    attn = model.blocks[layer].attn
    x = model.blocks[layer].ln1(cache[names[0]])                               # (B, T, d)
    ids = model.partition_info(tokens).block_ids                               # (B, T)
    heads, dh = model.cfg.n_heads, model.cfg.d_head
    w = attn.channel_weights()
    wq = w["W_Q_x"].reshape(heads, dh, -1)
    wk = w["W_K_x"].reshape(heads, dh, -1)
    bil = wq.transpose(1, 2) @ wk / math.sqrt(dh)                              # (H, d, d)
    lipschitz = float(torch.linalg.matrix_norm(bil, ord=2).max())
    norms = x.norm(dim=-1).flatten()
    r_x = float(torch.quantile(norms, 0.95))
    sq_dev, rho, n_blocks = [], [], []
    for b in range(x.shape[0]):
        nb = int(ids[b].max()) + 1
        onehot = torch.nn.functional.one_hot(ids[b], nb).float()               # (T, nb)
        means = (onehot.T @ x[b]) / onehot.sum(0).unsqueeze(-1)                # (nb, d)
        sq_dev.append((x[b] - means[ids[b]]).pow(2).sum(-1))
        n_blocks.append(onehot.sum(0))
        if nb > 1:
            unit = torch.nn.functional.normalize(means, dim=-1)
            cos = (unit @ unit.T).abs().fill_diagonal_(0.0)
            rho.append(float(cos.max()))
    sigma_x = float(torch.cat(sq_dev).mean().sqrt())
    block_len = float(torch.cat(n_blocks).mean())
    m = query_margins(cache[names[1]], ids)
    has_x = m["n_x"] > 0
    margin = float(m["margin"][has_x].median()) if bool(has_x.any()) else float("inf")
    rho_max = min(sum(rho) / len(rho), 0.999) if rho else 0.0
    return ThresholdInputs(lipschitz, r_x, sigma_x, block_len, rho_max, margin)


@torch.no_grad()
def predicted_vs_measured(model, tokens: Tensor, dial: Dial, temperatures: list[float],
                          layer: int = 0) -> list[dict]:
    """For each τ in ``temperatures`` (in place of the dial's): measured cross-block mass and
    the per-query bound, both averaged over queries and heads of ``layer``. The bound must
    never fall below the measurement."""
    rows = []
    ids = model.partition_info(tokens).block_ids                               # (B, T)
    names = [f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern"]
    for tau in temperatures:
        at_tau = dataclasses.replace(dial, attn_temperature=tau)
        _, cache = model.run_with_cache(tokens, at_tau, names_filter=names, return_type=None)
        pattern = cache[names[1]]                                              # (B, H, T, T)
        measured = (pattern * (~same_block(ids)).unsqueeze(1)).sum(-1)
        m = query_margins(cache[names[0]], ids)
        bound = cross_block_mass_bound(m["n_in"], m["n_x"], m["margin"], at_tau.attn_temperature)
        rows.append({"attn_temperature": at_tau.attn_temperature,
                     "measured_cross_mass": float(measured.mean()),
                     "bound_cross_mass": float(bound.mean())})
    return rows
