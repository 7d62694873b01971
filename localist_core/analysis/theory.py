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

A cached sweep holds means, not scores: ``effective_margin`` reads one margin off a run's
measured cross-block mass, and ``predicted_cross_mass`` turns it into the formula's prediction
at any dial setting (λ_f, τ). ``threshold_problems`` says when the threshold means nothing.
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


# ρ_max ≥ 1 divides the threshold by zero; an estimate (and a calculator value) stops here.
RHO_MAX_CAP = 0.999

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
                              layer: int = 0, partition=None) -> ThresholdInputs:
    """Estimate L, R_x, σ_X, |X|, ρ_max and δ for ``layer`` from a model and a token batch at
    ``dial``. δ is the median typical margin, from the scores before τ, so τ does not change
    it. When no query sees a cross-block key (λ = 1) the result is ``exactly_local`` with
    δ = +inf. ``partition`` re-blocks the text at inference (None: the trained one)."""
    tokens = model.check_tokens(tokens)
    names = [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_attn_scores"]
    _, cache = model.run_with_cache(tokens, dial, names_filter=names, return_type=None,
                                    partition=partition)
    x = model.blocks[layer].ln1(cache[names[0]])                               # (B, T, d)
    ids = model.partition_info(tokens, partition).block_ids                    # (B, T)
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
    rho_max = min(sum(rho) / len(rho), RHO_MAX_CAP) if rho else 0.0
    return ThresholdInputs(lipschitz, r_x, sigma_x, block_len, rho_max, margin, exactly_local)


@torch.no_grad()
def predicted_vs_measured(model, tokens: Tensor, dial: Dial, temperatures: list[float],
                          layer: int = 0, partition=None) -> list[dict]:
    """For each τ in ``temperatures`` (in place of the dial's), averaged over the queries and
    heads of ``layer``:

    - ``measured_cross_mass``: the pattern's mass on cross-block keys;
    - ``bound_cross_mass``: the formula at each query's own bound margin. It bounds that
      query's cross mass, so its mean never falls below the measured mean;
    - ``bound_holds``: whether it held for every query (to 1e-6, the fp32 softmax);
    - ``estimate_cross_mass``: the formula at each query's typical margin, an estimate;
    - ``exactly_local``: no query sees a cross-block key (λ = 1): all three masses are 0.

    ``partition`` re-blocks the text at inference (None: the trained one)."""
    rows = []
    ids = model.partition_info(tokens, partition).block_ids                    # (B, T)
    names = [f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern"]
    for tau in temperatures:
        at_tau = dataclasses.replace(dial, attn_temperature=tau)
        _, cache = model.run_with_cache(tokens, at_tau, names_filter=names, return_type=None,
                                        partition=partition)
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


# -- what the threshold means, in words, and when it means nothing ------------------------------

# Above this the threshold is "astronomical": no λ anyone would set reaches it (the sweeps use
# λ ≤ 1), so the page says what it means instead of printing a figure like 1.8e+17.
ASTRONOMICAL_THRESHOLD = 1e6

# Each input of the threshold formula in one plain line for a class: what it is and where it
# was measured (``estimate_threshold_inputs``; ThresholdInputs' comments give the exact
# definitions). The keys are ThresholdInputs' fields, plus τ.
INPUT_MEANINGS = {
    "lipschitz": "How sharply a head's cross-block score can change when a token's vector "
                 "moves: the largest stretch of any head's cross-block query–key map, read "
                 "from this layer's weights.",
    "r_x": "How long the token vectors entering this layer's attention are: 95% of the "
           "selected text's tokens are shorter than this.",
    "sigma_x": "How far a token's vector sits, on average, from the mean vector of its own "
               "block: the spread inside a block, on the selected text.",
    "block_len": "How many tokens a block holds, on average, in the selected text.",
    "rho_max": "How alike two blocks look: the largest cosine between two blocks' mean "
               "vectors (0 unrelated, 1 the same direction), on the selected text.",
    "margin": "How far a typical query's scores for keys in its own block lie above its "
              "scores for keys in earlier blocks (median over queries and heads, on the "
              "selected text at the sidebar's λ).",
    "attn_temperature": "The softmax temperature from the sidebar: below 1 sharpens "
                        "attention, above 1 flattens it; the formula divides δ by it.",
}


def threshold_problems(threshold: float, margin: float) -> list[str]:
    """Why a threshold from ``threshold_locality`` should be read as words, not as a number
    (empty when the number means what the formula says):

    - ``"no_margin"``: δ ≤ 0, so cross-block keys score as high as in-block ones or higher,
      against the formula's assumption that in-block keys lead by δ > 0;
    - ``"overflow"``: the threshold is +∞ (past the largest float);
    - ``"astronomical"``: finite but above ASTRONOMICAL_THRESHOLD.

    >>> threshold_problems(0.8, 2.0)
    []
    >>> threshold_problems(math.inf, -3.0)
    ['no_margin', 'overflow']
    >>> threshold_problems(1.776e17, 0.5)
    ['astronomical']
    """
    out = []
    if not margin > 0:
        out.append("no_margin")
    if threshold == math.inf:
        out.append("overflow")
    elif threshold > ASTRONOMICAL_THRESHOLD:
        out.append("astronomical")
    return out


# -- the cross-block formula against a λ-sweep ---------------------------------------------------
# A sweep result holds means, not per-query scores, so the formula is fed aggregate figures:
# n_x/n_in is read from uniform attention's cross-block mass, u_x = mean n_x/(n_in + n_x), and
# one effective margin δ₀ from the measured cross-block mass at λ_f = 0, τ = 1. The dial adds
# β·log(1−λ_f) to every cross-block score, so it lowers every margin by that much:
#     δ(λ_f) = δ₀ − β·log(1 − λ_f),   predicted cross mass = the bound formula at δ(λ_f), τ.

def effective_margin(cross_mass: float, uniform_cross_mass: float,
                     attn_temperature: float = 1.0) -> float:
    """The one margin δ with which the bound formula, at count ratio n_x/n_in = u_x/(1−u_x)
    (``uniform_cross_mass`` u_x), gives the measured ``cross_mass`` m at τ:
    δ = τ·(logit u_x − logit m). m = 0 gives +∞ and m = 1 gives −∞.

    >>> round(effective_margin(0.5, 0.9), 6)    # a 50/50 split against 9 cross keys per in key
    2.197225
    >>> round(float(cross_block_mass_bound(0.1, 0.9, effective_margin(0.3, 0.9), 1.0)), 12)
    0.3
    """
    if not 0.0 < uniform_cross_mass < 1.0:
        raise ValueError(f"the uniform cross-block mass must lie in (0, 1), got "
                         f"{uniform_cross_mass!r}")
    if not 0.0 <= cross_mass <= 1.0:
        raise ValueError(f"a cross-block mass must lie in [0, 1], got {cross_mass!r}")
    if not 0 < attn_temperature < math.inf:
        raise ValueError("τ must be > 0 and finite")
    if cross_mass == 0.0:
        return math.inf
    if cross_mass == 1.0:
        return -math.inf
    logit = lambda p: math.log(p) - math.log1p(-p)          # noqa: E731
    return attn_temperature * (logit(uniform_cross_mass) - logit(cross_mass))


def predicted_cross_mass(margin: float, uniform_cross_mass: float, locality: float,
                         attn_temperature: float, barrier_sharpness: float) -> float:
    """The formula's cross-block mass at dial (λ_f, τ) for a model whose one effective margin
    at λ_f = 0 is ``margin`` (``effective_margin``): the bound formula at
    δ(λ_f) = δ − β·log(1−λ_f), with n_x/n_in from ``uniform_cross_mass``. λ_f = 1 masks the
    cross-block keys: 0.

    One margin stands for every query. Real queries have many, and the mean of their logistic
    curves responds more slowly to the barrier than the curve at their mean (p(1−p) is
    concave), so for λ_f > 0 this never predicts more cross-block mass than a model whose
    queries differ, and usually predicts less.

    >>> round(predicted_cross_mass(0.0, 0.5, 0.5, 1.0, 2.0), 6)    # odds 1 · (1−0.5)^2 = 0.25
    0.2
    >>> predicted_cross_mass(-math.inf, 0.9, 1.0, 1.0, 4.0)
    0.0
    """
    if not 0.0 <= locality <= 1.0:
        raise ValueError(f"λ_f must lie in [0, 1], got {locality!r}")
    if not barrier_sharpness > 0:
        raise ValueError(f"β must be > 0, got {barrier_sharpness!r}")
    if locality == 1.0:
        return 0.0
    shifted = margin - barrier_sharpness * math.log1p(-locality)
    return float(cross_block_mass_bound(1.0 - uniform_cross_mass, uniform_cross_mass, shifted,
                                        attn_temperature))
