"""The papers' threshold formula and the cross-block-mass bound, with estimators for their inputs
(docs/design.md, "Theory, rules and inspection"). The estimators are our readings of the
symbols; each docstring says which.

    λᵢ⁽ʰ⁾(τ, δ) = 2·L_ℓ·R_x·σ_X·√|Xᵢ| / (τ·(1−ρ_max)) · exp(−δ/τ)
    cross-block mass ≤ n_x·e^{−δ/τ} / (n_in + n_x·e^{−δ/τ})

Both are computed in log space, so no τ in the dial's range and no δ (±∞ included) gives NaN.
Two margins per query feed the second formula, and they mean different things:
- the **bound margin** δ_q = min visible in-block score − max visible cross-block score. With
  it the formula is a true upper bound on that query's cross-block mass, at every τ;
- the **typical margin** δ̂_q = log-mean-exp of the visible in-block scores − log-mean-exp of
  the visible cross-block scores. With it the formula is an *estimate*, not a bound: it equals
  the measured cross-block mass at τ = 1 and is our reading of the papers' δ.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..model.blocks import same_block
from ..model.dial import Dial

_LOG_FLOAT_MAX = math.log(torch.finfo(torch.float64).max)     # ≈ 709.78


def threshold_locality(lipschitz: float, r_x: float, sigma_x: float, block_len: float,
                       attn_temperature: float, rho_max: float, margin: float) -> float:
    """λ threshold = 2·L·R_x·σ_X·√|X| / (τ·(1−ρ_max)) · exp(−δ/τ), computed as exp of a sum of
    logs. Never NaN: a zero factor or δ = +∞ (no cross-block key can receive mass) gives 0;
    anything past the largest float, δ = −∞ included, gives +∞ (the page's overflow notice).

    >>> round(threshold_locality(1.0, 1.0, 1.0, 4, 1.0, 0.5, 0.0), 6)
    8.0
    >>> threshold_locality(1.0, 1.0, 1.0, 4, 0.05, 0.5, -1e6)   # overflows to +∞, not an error
    inf
    >>> threshold_locality(1.0, 1.0, 1.0, 4, 1.0, 0.5, math.inf)
    0.0
    """
    factors = (lipschitz, r_x, sigma_x, block_len)
    if any(math.isnan(v) for v in (*factors, attn_temperature, rho_max, margin)):
        raise ValueError("the threshold's inputs must be numbers, not NaN")
    if any(v < 0 for v in factors):
        raise ValueError("L, R_x, σ_X and |X| must be ≥ 0")
    if not 0 < attn_temperature < math.inf:
        raise ValueError("τ must be > 0 and finite")
    if not rho_max < 1.0:
        raise ValueError("ρ_max must be < 1 (the formula divides by 1 − ρ_max)")
    if min(factors) == 0.0 or margin == math.inf:
        return 0.0
    log_thr = (math.log(2.0) + math.log(lipschitz) + math.log(r_x) + math.log(sigma_x)
               + 0.5 * math.log(block_len) - math.log(attn_temperature)
               - math.log1p(-rho_max) - margin / attn_temperature)
    if log_thr >= _LOG_FLOAT_MAX:            # exp() would overflow: the threshold is +∞
        return math.inf
    return math.exp(log_thr)


def cross_block_mass_bound(n_in: Tensor | float, n_x: Tensor | float, margin: Tensor | float,
                           attn_temperature: float) -> Tensor:
    """n_x·e^{−δ/τ} / (n_in + n_x·e^{−δ/τ}) = sigmoid(log n_x − δ/τ − log n_in), elementwise.

    With a query's bound margin (``query_margins``) it is an upper bound on that query's
    cross-block mass; with its typical margin it is an estimate. Finite and in [0, 1] for
    every δ, ±∞ included: no cross key (n_x = 0) or δ = +∞ gives 0; δ = −∞ or no in-block key
    gives 1 (when n_x > 0).

    >>> float(cross_block_mass_bound(5.0, 0.0, 1.0, 1.0))
    0.0
    >>> float(cross_block_mass_bound(1.0, 4.0, -math.inf, 0.05))
    1.0
    """
    if not 0 < attn_temperature < math.inf:
        raise ValueError("τ must be > 0 and finite")
    n_in, n_x, margin = (torch.as_tensor(v, dtype=torch.float64) for v in (n_in, n_x, margin))
    n_in, n_x, margin = torch.broadcast_tensors(n_in, n_x, margin)
    none_x = (n_x <= 0) | (margin == math.inf)
    all_x = (n_in <= 0) | (margin == -math.inf)
    z = torch.log(n_x.clamp_min(1e-300)) - margin / attn_temperature \
        - torch.log(n_in.clamp_min(1e-300))
    z = torch.where(none_x | all_x, torch.zeros_like(z), z)      # no inf − inf on either path
    out = torch.sigmoid(z)
    out = torch.where(all_x, torch.ones_like(out), out)
    return torch.where(none_x, torch.zeros_like(out), out)


def query_margins(scores: Tensor, block_ids: Tensor) -> dict[str, Tensor]:
    """Per query ``[B, H, Q]``, from the scores before τ (−inf = masked) and the block ids:

    - ``n_in``, ``n_x``: the counts of visible in-block and cross-block keys;
    - ``bound_margin``: min visible in-block score − max visible cross-block score, the margin
      with which ``cross_block_mass_bound`` is an upper bound for this query at every τ;
    - ``typical_margin``: log-mean-exp of the visible in-block scores − log-mean-exp of the
      visible cross-block scores (our reading of the papers' δ). With it the formula equals the
      query's cross-block mass at τ = 1 and is an estimate at other τ. It lies between the bound
      margin and max in − min cross, so one outlying key does not decide it.

    Queries with no visible cross-block key get +inf for both (their cross mass is 0)."""
    sb = same_block(block_ids).unsqueeze(1)
    vis = torch.isfinite(scores)
    s = scores.double()
    inf = torch.tensor(float("inf"), dtype=s.dtype)
    in_vis, x_vis = sb & vis, ~sb & vis
    n_in, n_x = in_vis.sum(-1).to(s.dtype), x_vis.sum(-1).to(s.dtype)
    bound = torch.where(in_vis, s, inf).amin(-1) - torch.where(x_vis, s, -inf).amax(-1)
    has_in, has_x = n_in > 0, n_x > 0
    lme_in = torch.where(in_vis, s, -inf).logsumexp(-1) - n_in.clamp_min(1).log()
    lme_x = torch.where(x_vis, s, -inf).logsumexp(-1) - n_x.clamp_min(1).log()
    typical = torch.where(has_in, lme_in - torch.where(has_x, lme_x, 0.0), -inf)
    bound = torch.where(has_in, bound, -inf)
    typical, bound = (torch.where(has_x, v, inf) for v in (typical, bound))
    return {"bound_margin": bound, "typical_margin": typical, "n_in": n_in, "n_x": n_x}


@dataclass(frozen=True)
class ThresholdInputs:
    """Estimated inputs of the threshold formula for one layer (our readings, see each field)."""

    lipschitz: float    # L_ℓ: max over heads of the spectral norm of W_Q^x[h]ᵀW_K^x[h]/√d_h
    r_x: float          # R_x: 95th percentile of ‖x‖ over the LayerNorm'd attention inputs
    sigma_x: float      # σ_X: RMS distance of a token's input to its block's mean input
    block_len: float    # |X_i|: mean block length
    rho_max: float      # ρ_max: mean over sequences of the max |cos| between two block means
    margin: float       # δ: median over queries and heads (with cross keys) of the typical
    #                     margin (``query_margins``); +inf when exactly local
    exactly_local: bool = False   # no query sees a cross-block key (λ = 1 masks them): the
    #                               cross-block mass is exactly 0 and the threshold is 0

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def estimate_threshold_inputs(model, tokens: Tensor, dial: Dial = Dial(),
                              layer: int = 0) -> ThresholdInputs:
    """Estimate L, R_x, σ_X, |X|, ρ_max and δ for ``layer`` from a model and a token batch at
    ``dial``. δ is the median typical margin, from the scores before τ, so τ does not change
    it. When no query sees a cross-block key (λ = 1) the result is ``exactly_local`` with
    δ = +inf."""
    tokens = model.check_tokens(tokens)
    names = [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_attn_scores"]
    _, cache = model.run_with_cache(tokens, dial, names_filter=names, return_type=None)
    x = model.blocks[layer].ln1(cache[names[0]])                               # (B, T, d)
    ids = model.partition_info(tokens).block_ids                               # (B, T)
    heads, dh = model.cfg.n_heads, model.cfg.d_head
    w = model.blocks[layer].attn.channel_weights()
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
    exactly_local = not bool(has_x.any())
    margin = math.inf if exactly_local else float(m["typical_margin"][has_x].median())
    rho_max = min(sum(rho) / len(rho), 0.999) if rho else 0.0
    return ThresholdInputs(lipschitz, r_x, sigma_x, block_len, rho_max, margin, exactly_local)


@torch.no_grad()
def predicted_vs_measured(model, tokens: Tensor, dial: Dial, temperatures: list[float],
                          layer: int = 0) -> list[dict]:
    """For each τ in ``temperatures`` (in place of the dial's), averaged over the queries and
    heads of ``layer``:

    - ``measured_cross_mass``: the pattern's mass on cross-block keys;
    - ``bound_cross_mass``: the formula at each query's own bound margin. It bounds that
      query's cross mass, so its mean never falls below the measured mean;
    - ``bound_holds``: whether it held for every query (to 1e-6, the fp32 softmax);
    - ``estimate_cross_mass``: the formula at each query's typical margin, an estimate;
    - ``exactly_local``: no query sees a cross-block key (λ = 1): all three masses are 0."""
    rows = []
    ids = model.partition_info(tokens).block_ids                               # (B, T)
    names = [f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern"]
    for tau in temperatures:
        at_tau = dataclasses.replace(dial, attn_temperature=tau)
        _, cache = model.run_with_cache(tokens, at_tau, names_filter=names, return_type=None)
        pattern = cache[names[1]].double()                                     # (B, H, T, T)
        measured = (pattern * (~same_block(ids)).unsqueeze(1)).sum(-1)
        m = query_margins(cache[names[0]], ids)
        t = at_tau.attn_temperature
        bound = cross_block_mass_bound(m["n_in"], m["n_x"], m["bound_margin"], t)
        estimate = cross_block_mass_bound(m["n_in"], m["n_x"], m["typical_margin"], t)
        rows.append({"attn_temperature": t,
                     "measured_cross_mass": float(measured.mean()),
                     "bound_cross_mass": float(bound.mean()),
                     "estimate_cross_mass": float(estimate.mean()),
                     "bound_holds": bool((measured <= bound + 1e-6).all()),
                     "exactly_local": not bool((m["n_x"] > 0).any())})
    return rows
