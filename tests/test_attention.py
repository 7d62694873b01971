"""Properties of the locality-dial attention (docs/design.md, "The model") and of the dial."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from localist_core.model.attention import cross_block_barrier, off_block_attention_penalty
from localist_core.model.blocks import FixedPartition, same_block
from localist_core.model.config import ConfigError
from localist_core.model.dial import Dial, DialNotice

GRID = [(lam, tau) for lam in (0.0, 0.3, 0.7, 0.999, 1.0) for tau in (0.05, 0.3, 1.0, 3.0, 10.0)]


def _qkv(model, cache, layer=0):
    """q, k, q_x, k_x, v recomputed from the residual stream, each ``[B, T, H, dh]``."""
    attn = model.blocks[layer].attn
    x = model.blocks[layer].ln1(cache[f"blocks.{layer}.hook_resid_pre"])
    b, n, _ = x.shape
    return attn.qkv(x).view(b, n, 5, model.cfg.n_heads, model.cfg.d_head).unbind(2)


def test_plain_setting_equals_sdpa(tiny_model, tokens):
    """λ_f=0, τ=1, γ=0 and equal channels: exactly plain causal scaled dot-product attention."""
    _, cache = tiny_model.run_with_cache(tokens)
    for layer in range(tiny_model.cfg.n_layers):
        pre = f"blocks.{layer}.attn."
        # The hooks hold what the weights give, in TransformerLens's [batch, pos, head, d_head].
        for name, want in zip(("hook_q", "hook_k", "hook_q_x", "hook_k_x", "hook_v"),
                              _qkv(tiny_model, cache, layer)):
            assert torch.equal(cache[pre + name], want), name
        q, k, v = (cache[pre + h].transpose(1, 2) for h in ("hook_q", "hook_k", "hook_v"))
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)              # (B, H, T, dh)
        assert torch.allclose(cache[pre + "hook_z"], ref.transpose(1, 2), atol=1e-5)
        ours = cache[f"blocks.{layer}.attn.hook_pattern"] @ v
        assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
        # The explicit reference pattern too.
        n = q.shape[-2]
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        assert torch.allclose(cache[f"blocks.{layer}.attn.hook_pattern"], s.softmax(-1), atol=1e-5)


def test_trained_channels_differ_so_equivalence_is_not_vacuous(trained_tiny):
    w = trained_tiny.blocks[0].attn.channel_weights()
    assert (w["W_Q_in"] - w["W_Q_x"]).abs().max() > 1e-3


@pytest.mark.parametrize("lam,tau", GRID)
def test_rows_sum_to_one_and_no_future_weight(trained_tiny, tokens, lam, tau):
    _, cache = trained_tiny.run_with_cache(tokens, Dial(lam, tau, rule_strength=1.5))
    n = tokens.shape[1]
    future = ~torch.ones(n, n, dtype=torch.bool).tril()
    for layer in range(trained_tiny.cfg.n_layers):
        p = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert torch.isfinite(p).all()
        assert torch.allclose(p.sum(-1), torch.ones(p.shape[:-1]), atol=1e-5)
        assert (p[..., future] == 0).all()


@pytest.mark.parametrize("lam", [0.0, 0.2, 0.6, 0.95])
def test_zeroed_cross_channel_scores_equal_barrier(tiny_model, tokens, lam):
    with torch.no_grad():
        for blk in tiny_model.blocks:
            d = tiny_model.cfg.d_model
            blk.attn.qkv.weight[2 * d:4 * d].zero_()
    _, cache = tiny_model.run_with_cache(tokens, Dial(locality=lam))
    ids = tiny_model.partition_info(tokens).block_ids
    n = tokens.shape[1]
    cross_visible = (~same_block(ids) & torch.ones(n, n, dtype=torch.bool).tril()).unsqueeze(1)
    b = cross_block_barrier(lam, tiny_model.cfg.barrier_sharpness)
    for layer in range(tiny_model.cfg.n_layers):
        s = cache[f"blocks.{layer}.attn.hook_attn_scores"]
        vals = s.expand(-1, -1, n, n)[cross_visible.expand_as(s)]
        assert vals.numel() > 0
        assert (vals == torch.tensor(b, dtype=s.dtype)).all()


def test_exact_block_local_at_full_locality(trained_tiny, tokens):
    _, cache = trained_tiny.run_with_cache(tokens, Dial(locality=1.0, attn_temperature=0.05))
    cross = ~same_block(trained_tiny.partition_info(tokens).block_ids).unsqueeze(1)
    for layer in range(trained_tiny.cfg.n_layers):
        p = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert (p.masked_select(cross) == 0).all()
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"]
        assert torch.isfinite(scores.masked_select(~cross)).any()


def test_attention_penalty_zero_iff_block_diagonal():
    ids = FixedPartition(4).block_ids(torch.zeros(2, 12, dtype=torch.long))
    sb = same_block(ids).float().tril()
    diag = (sb / sb.sum(-1, keepdim=True)).unsqueeze(1).expand(2, 3, 12, 12)
    assert off_block_attention_penalty(diag, ids) == 0
    full = torch.ones(12, 12).tril()
    full = (full / full.sum(-1, keepdim=True)).expand(2, 3, 12, 12)
    assert off_block_attention_penalty(full, ids) > 0
    # Gradient at the block-diagonal pattern is finite (no sqrt(0) blow-up).
    p = diag.clone().requires_grad_(True)
    off_block_attention_penalty(p, ids).backward()
    assert torch.isfinite(p.grad).all()


def test_barrier_is_monotone_and_zero_at_zero():
    vals = [cross_block_barrier(lam, 3.0) for lam in (0.0, 0.1, 0.5, 0.9, 0.999, 1.0)]
    assert vals[0] == 0.0 and vals[-1] == -math.inf
    assert all(a > b for a, b in zip(vals, vals[1:]))


def test_the_dial_clamps_with_notice_and_refuses_nan():
    with pytest.warns(DialNotice):
        dial = Dial(1.5, 0.0, -1.0)
    assert dial == Dial(locality=1.0, attn_temperature=0.05, rule_strength=0.0)
    assert len(dial.notices) == 3 and all("outside" in n for n in dial.notices)
    with pytest.warns(DialNotice):
        dial = Dial(0.5, float("inf"))
    assert dial.attn_temperature == 10.0 and dial.notices
    assert Dial(0.3, 2.0, 1.0).notices == ()
    with pytest.warns(DialNotice):      # an integer too large for a float is +inf, clamped
        assert Dial(10**400).locality == 1.0
    for bad, message in ((float("nan"), "NaN"), ("abc", "number"), (None, "number"),
                         (True, "number")):
        with pytest.raises(ConfigError, match=message):
            Dial(bad)


def test_a_dial_is_one_value_whatever_its_spelling():
    """Integers become floats (one cache key for 1 and 1.0); a replaced field is checked again;
    a frozen dial is hashable."""
    assert Dial(1, 1, 0) == Dial(1.0, 1.0, 0.0) and type(Dial(1).locality) is float
    assert hash(Dial(0.5)) == hash(Dial(0.5))
    with pytest.warns(DialNotice, match="τ"):
        assert dataclasses.replace(Dial(0.5), attn_temperature=0.0).attn_temperature == 0.05
    with pytest.raises(dataclasses.FrozenInstanceError):
        Dial().locality = 1.0                                   # type: ignore[misc]
    assert Dial(0.6).as_dict() == {"locality": 0.6, "attn_temperature": 1.0,
                                   "rule_strength": 0.0}


def test_a_clamped_tau_runs_finite(tiny_model, tokens):
    with pytest.warns(DialNotice, match="τ"):
        dial = Dial(attn_temperature=0.0)
    _, cache = tiny_model.run_with_cache(tokens, dial)
    assert any("τ" in n for n in dial.notices)
    assert all(torch.isfinite(cache[f"blocks.{i}.attn.hook_pattern"]).all() for i in range(2))
    with pytest.raises(TypeError, match="Dial"):
        tiny_model.run_with_cache(tokens, 0.5)                  # a bare λ is not a dial


def test_a_hook_that_edits_a_channel_changes_the_pattern(trained_tiny, tokens):
    """Hook points sit on the path: zeroing the within-block queries makes every in-block
    score 0, so at λ_f = 1 each query attends uniformly to the visible keys of its block."""
    attn = trained_tiny.blocks[0].attn
    handle = attn.hook_q.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    try:
        _, cache = trained_tiny.run_with_cache(tokens, Dial(locality=1.0))
    finally:
        handle.remove()
    pattern = cache["blocks.0.attn.hook_pattern"]
    bid = trained_tiny.partition_info(tokens).block_ids
    n = tokens.shape[1]
    visible = same_block(bid) & torch.ones(n, n, dtype=torch.bool).tril()       # (B, T, T)
    uniform = visible.float() / visible.sum(-1, keepdim=True)
    assert torch.allclose(pattern, uniform.unsqueeze(1).expand_as(pattern), atol=1e-6)
    _, plain = trained_tiny.run_with_cache(tokens, Dial(locality=1.0))
    assert not torch.allclose(plain["blocks.0.attn.hook_pattern"], pattern, atol=1e-3)
