"""Metric properties (docs/design.md, "Metrics and their controls"): entropy, in-block mass
and its controls, fidelity, baselines."""
import math

import numpy as np
import pytest
import torch

from localist_core.analysis import metrics as M
from localist_core.analysis.evaluate import attention_summary
from localist_core.model.attention import visible_keys
from localist_core.model.blocks import FixedPartition, anchor_mask, same_block
from localist_core.model.dial import Dial

LAMBDAS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0]
TAUS = [10.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.05]


def _negative_cross_model(model):
    """Make every cross-block score strongly negative: near-constant LN output, W_K^x = −6·W_Q^x."""
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for blk in model.blocks:
            blk.ln1.weight.mul_(0.05)
            blk.ln1.bias.copy_(torch.randn(d, generator=g))
            w = blk.attn.qkv.weight
            w[3 * d:4 * d].copy_(-6.0 * w[2 * d:3 * d] / w[2 * d:3 * d].norm() * 40)
            w[2 * d:3 * d].mul_(40 / w[2 * d:3 * d].norm())
    return model


@pytest.fixture(params=["fresh", "trained", "negative_cross"])
def any_model(request, tiny_model, trained_tiny):
    if request.param == "fresh":
        return tiny_model
    if request.param == "trained":
        return trained_tiny
    return _negative_cross_model(tiny_model)


def test_uniform_row_has_entropy_log2_n():
    for n in (1, 2, 5, 17):
        row = torch.full((1, 1, 1, n), 1.0 / n)
        assert math.isclose(float(M.attention_entropy(row)), math.log2(n), abs_tol=1e-5)
    one_hot = torch.zeros(1, 1, 1, 6)
    one_hot[..., 2] = 1
    assert float(M.attention_entropy(one_hot)) == 0.0


def test_normalised_entropy_of_uniform_causal_is_one():
    ids = FixedPartition(5).block_ids(torch.zeros(1, 20, dtype=torch.long))
    h = M.normalised_entropy(M.uniform_pattern(ids))
    assert h[0, 0, 0] == 0 and torch.allclose(h[0, 0, 1:], torch.ones(19), atol=1e-5)
    assert math.isclose(M.causal_entropy_ceiling(128), 5.60, abs_tol=0.01)
    assert math.isclose(M.causal_entropy_ceiling(256), 6.58, abs_tol=0.01)


def test_normalised_entropy_of_uniform_attention_in_diagnostic_mode_is_one():
    """The diagnostic mode's queries also see the later keys of their block, so uniform
    attention over what they see has H = log₂(that count): normalised entropy 1, never above."""
    ids = FixedPartition(5).block_ids(torch.zeros(1, 12, dtype=torch.long))
    vis = visible_keys(ids, noncausal_diagnostic=True).float()            # (1, Q, K)
    pattern = (vis / vis.sum(-1, keepdim=True)).unsqueeze(1)              # (1, 1, Q, K)
    anchors = anchor_mask(ids, torch.zeros(1, 12), 1)
    h = M.attention_metrics(pattern, ids, anchors, 5, noncausal_diagnostic=True)
    assert torch.allclose(h["normalised_entropy"], torch.ones(1, 1, 12), atol=1e-5)
    causal = M.attention_metrics(M.uniform_pattern(ids), ids, anchors, 5)
    assert torch.equal(causal["normalised_entropy"], M.normalised_entropy(M.uniform_pattern(ids)))


def test_entropy_does_not_rise_as_tau_falls(any_model, tokens):
    prev = None
    for tau in TAUS:
        _, cache = any_model.run_with_cache(tokens, Dial(attn_temperature=tau))
        h = torch.stack([M.attention_entropy(cache[f"blocks.{i}.attn.hook_pattern"])
                         for i in range(any_model.cfg.n_layers)])
        if prev is not None:
            # Layer 0 per query; deeper layers see different inputs, so compare their means.
            assert (h[0] <= prev[0] + 1e-4).all()
        prev = h


def test_in_block_mass_does_not_fall_as_lambda_rises(any_model, tokens):
    ids = any_model.partition_info(tokens).block_ids
    for tau in (0.25, 1.0, 4.0):
        prev = None
        for lam in LAMBDAS:
            _, cache = any_model.run_with_cache(tokens, Dial(lam, tau))
            mass = M.in_block_mass(cache["blocks.0.attn.hook_pattern"], ids)
            if prev is not None:
                assert (mass >= prev - 1e-5).all(), (tau, lam)
            prev = mass
        assert torch.allclose(prev, torch.ones_like(prev), atol=0) or (prev == 1).all()


def test_negative_cross_model_really_has_negative_cross_scores(tiny_model, tokens):
    model = _negative_cross_model(tiny_model)
    _, cache = model.run_with_cache(tokens)
    s = cache["blocks.0.attn.hook_attn_scores"]
    cross = (~same_block(model.partition_info(tokens).block_ids)).unsqueeze(1) & torch.isfinite(s)
    assert s[cross].max() < -5


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 0.75, 0.999, 1.0])
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
def test_metrics_finite_on_grid(trained_tiny, tokens, lam, tau):
    _, cache = trained_tiny.run_with_cache(tokens, Dial(lam, tau, rule_strength=2.0))
    pats = [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(2)]
    ids = trained_tiny.partition_info(tokens).block_ids
    for layer in attention_summary(trained_tiny, tokens, pats, ids):
        for name, v in layer.items():
            assert torch.isfinite(v).all(), name


def test_controls_and_pointer_metrics_on_known_patterns():
    ids = FixedPartition(5).block_ids(torch.zeros(1, 10, dtype=torch.long))
    eye = torch.eye(10).view(1, 1, 10, 10)             # attend to self only
    assert (M.in_block_mass(eye, ids) == 1).all()
    assert (M.recent_mass(eye, 5) == 1).all()
    assert (M.mean_attention_distance(eye) == 0).all()
    prev = torch.zeros(1, 1, 10, 10)
    prev[0, 0, 0, 0] = 1
    prev[0, 0, torch.arange(1, 10), torch.arange(0, 9)] = 1  # attend to the previous token
    assert torch.allclose(M.mean_attention_distance(prev)[0, 0, 1:], torch.ones(9))
    # Shifted blocks by ⌊5/2⌋: positions 5→4 cross a true boundary but not a shifted one.
    shifted = M.shifted_block_ids(ids, 5)
    assert shifted[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
    assert M.in_block_mass(prev, ids)[0, 0, 5] == 0 and M.in_block_mass(prev, shifted)[0, 0, 5] == 1
    uni = M.in_block_mass(M.uniform_pattern(ids), ids)
    assert math.isclose(float(uni[0, 0, 9]), 0.5)
    anchors = torch.zeros(1, 10, 10, dtype=torch.bool)
    anchors[0, :, 0] = True
    assert M.pointer_fidelity_mass(prev, anchors)[0, 0, 1] == 1
    assert M.pointer_argmax_hit(prev, anchors)[0, 0].tolist() == [1.0, 1.0] + [0.0] * 8


def test_baselines_order_on_structured_corpus(tiny_corpus):
    v = len(tiny_corpus.tokenizer)
    tr, va = tiny_corpus.train.numpy(), tiny_corpus.valid.numpy()
    uni = M.unigram_perplexity(tr, va, v)
    bi = M.bigram_perplexity(tr, va, v)
    assert 1 < bi < uni < v
    # A corpus that is a fixed cycle is almost perfectly predictable by a bigram model.
    cyc = np.tile(np.arange(10), 500)
    assert M.bigram_perplexity(cyc, cyc, 10) < 1.5 < M.unigram_perplexity(cyc, cyc, 10)


def test_attention_metrics_returns_exactly_the_named_metrics():
    """METRIC_NAMES is the one list of metric names: what attention_metrics returns, in order."""
    pattern = torch.softmax(torch.randn(1, 2, 6, 6).masked_fill(
        torch.triu(torch.ones(6, 6, dtype=torch.bool), 1), float("-inf")), -1)
    block_ids = torch.tensor([[0, 0, 0, 1, 1, 1]])
    anchors = torch.eye(6, dtype=torch.bool).unsqueeze(0)
    assert tuple(M.attention_metrics(pattern, block_ids, anchors, 3)) == M.METRIC_NAMES


# -- the controls for pointer fidelity: visible in-block keys and the uniform baseline ----------

def _fixed(b: int, n: int, batch: int = 1) -> torch.Tensor:
    return FixedPartition(b).block_ids(torch.zeros(batch, n, dtype=torch.long))


def _causal_anchors(ids: torch.Tensor, k: int = 3, seed: int = 0) -> torch.Tensor:
    """Causal anchors (blocks.anchor_mask) for random local entropies: whichever tokens are
    chosen, a query at position p of its block sees min(p + 1, k) of them."""
    ent = torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed))
    return anchor_mask(ids, ent, k)


def test_visible_in_block_keys_by_hand():
    assert M.visible_in_block_keys(_fixed(3, 7))[0].tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert M.visible_in_block_keys(_fixed(5, 7))[0].tolist() == [1, 2, 3, 4, 5, 1, 2]
    uneven = torch.tensor([[0, 0, 1, 1, 1, 1, 2]])
    assert M.visible_in_block_keys(uneven)[0].tolist() == [1, 2, 1, 2, 3, 4, 1]
    # The non-causal diagnostic sees its whole block.
    assert M.visible_in_block_keys(uneven, True)[0].tolist() == [2, 2, 4, 4, 4, 4, 1]
    # Whole blocks of b: mean (1 + … + b)/b = (b + 1)/2, e.g. (1 + 2 + 3)/3 = 2.
    for b in (3, 5, 10):
        assert M.visible_in_block_keys(_fixed(b, 30 * b)).mean() == (b + 1) / 2
    # Over a 128-token window (the figures of the re-check: 1.99, 2.98, 5.44): every query,
    # the block's first positions and the partial last block included.
    for b, mean in ((3, (42 * 6 + 1 + 2) / 128), (5, (25 * 15 + 1 + 2 + 3) / 128),
                    (10, (12 * 55 + 36) / 128)):
        got = float(M.visible_in_block_keys(_fixed(b, 128)).mean())
        assert math.isclose(got, mean, rel_tol=1e-6), b
        assert round(got, 2) == {3: 1.99, 5: 2.98, 10: 5.44}[b]


def test_uniform_pointer_fidelity_by_hand():
    """3 anchors: the first 3 positions of a block score 1, position p ≥ 3 scores 3/(p + 1)."""
    per_query = {3: [1.0] * 12,
                 5: [1, 1, 1, 3 / 4, 3 / 5] * 2 + [1, 1],
                 10: [1, 1, 1, 3 / 4, 3 / 5, 3 / 6, 3 / 7, 3 / 8, 3 / 9, 3 / 10, 1, 1]}
    for b, want in per_query.items():
        ids = _fixed(b, 12)
        got = M.uniform_pointer_fidelity(ids, _causal_anchors(ids))[0]
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float32)), b
    # The re-check's 1.0 / 0.873 / 0.634 are the mean over every query of a 128-token window,
    # a block's first positions and the window's partial last block (3 and 8 tokens) included;
    # over whole blocks the means are 1, 0.870 and 0.629.
    whole = {3: 1.0, 5: (3 + 3 / 4 + 3 / 5) / 5,
             10: (3 + sum(3 / p for p in range(4, 11))) / 10}
    partial = {3: 2.0, 5: 3.0, 10: 3 + sum(3 / p for p in range(4, 9))}   # sums, not means
    full_blocks = {3: 42, 5: 25, 10: 12}
    for b, figure in ((3, 1.0), (5, 0.873), (10, 0.634)):
        ids = _fixed(b, 128, batch=2)
        got = float(M.uniform_pointer_fidelity(ids, _causal_anchors(ids)).mean())
        want = (full_blocks[b] * b * whole[b] + partial[b]) / 128
        assert math.isclose(got, want, rel_tol=1e-6) and round(got, 3) == figure, b
        ids = _fixed(b, 100 * b)
        got = float(M.uniform_pointer_fidelity(ids, _causal_anchors(ids)).mean())
        assert math.isclose(got, whole[b], rel_tol=1e-6), b
    assert round(whole[5], 3) == 0.870 and round(whole[10], 3) == 0.629


def _uniform_over(keys: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention spread evenly over a ``[B, Q, K]`` key mask, ``[B, heads, Q, K]``."""
    p = keys.float() / keys.float().sum(-1, keepdim=True)
    return p.unsqueeze(1).expand(-1, heads, -1, -1)


def test_fidelity_lift_is_zero_at_chance_and_positive_on_anchors():
    ids = _fixed(5, 23, batch=2)
    anchors = _causal_anchors(ids)
    in_block = M.visible_in_block_mask(ids)
    base = M.uniform_pointer_fidelity(ids, anchors)
    uni = _uniform_over(in_block, heads=3)
    lift = M.pointer_fidelity_lift(uni, ids, anchors)
    assert lift.shape == (2, 3, 23) and lift.abs().max() < 1e-6
    assert torch.allclose(M.pointer_fidelity_mass(uni, anchors), base.unsqueeze(1).expand(2, 3, 23))
    # Half the mass leaves the block (to position 0's key, for queries outside block 0), the
    # rest is uniform in-block: still chance, so still no lift.
    leave = torch.zeros_like(uni)
    leave[..., 0] = 1.0
    mixed = torch.where((ids >= 1).view(2, 1, 23, 1), 0.5 * uni + 0.5 * leave, uni)
    assert M.pointer_fidelity_lift(mixed, ids, anchors).abs().max() < 1e-6
    # All in-block mass on the visible anchors: lift = 1 − baseline, > 0 wherever a
    # non-anchor key is visible (block positions 3 and 4), 0 elsewhere.
    on = M.pointer_fidelity_lift(_uniform_over(anchors, heads=3), ids, anchors)
    assert torch.allclose(on, (1 - base).unsqueeze(1).expand(2, 3, 23), atol=1e-6)
    pib = torch.arange(23) % 5
    assert (on[..., pib >= 3] >= 0.25 - 1e-6).all() and (on[..., pib < 3].abs() < 1e-6).all()
    # In-block attention that avoids the anchors where it can has a negative lift, −baseline.
    avoid = torch.where((pib >= 3).view(1, 23, 1), in_block & ~anchors, in_block)
    off = M.pointer_fidelity_lift(_uniform_over(avoid, heads=3), ids, anchors)
    assert torch.allclose(off[..., pib >= 3], -base[:, pib >= 3].unsqueeze(1).expand(2, 3, -1))


def test_attention_metrics_are_all_per_head_per_query():
    ids = _fixed(5, 23, batch=2)
    anchors = _causal_anchors(ids)
    pattern = torch.softmax(torch.randn(2, 4, 23, 23).masked_fill(
        torch.triu(torch.ones(23, 23, dtype=torch.bool), 1), float("-inf")), -1)
    out = M.attention_metrics(pattern, ids, anchors, 5)
    for name, v in out.items():
        assert v.shape == (2, 4, 23), name
    assert torch.equal(out["visible_in_block_keys"][:, 2], M.visible_in_block_keys(ids))
    assert torch.allclose(out["pointer_fidelity_lift"],
                          out["pointer_fidelity_mass"]
                          - out["in_block_mass"] * out["uniform_pointer_fidelity"])
    assert {"visible_in_block_keys", "uniform_pointer_fidelity",
            "pointer_fidelity_lift"} <= set(M.METRIC_LABELS)


@pytest.mark.parametrize("noncausal_diagnostic", [False, True])
def test_attention_metrics_computes_the_lifts_parts_once(monkeypatch, noncausal_diagnostic):
    """The lift reuses the fidelity, in-block mass and baseline just computed for their own
    entries (one call each), and equals ``pointer_fidelity_lift`` exactly."""
    ids = _fixed(5, 23, batch=2)
    anchors = _causal_anchors(ids)
    pattern = torch.softmax(torch.randn(2, 4, 23, 23).masked_fill(
        torch.triu(torch.ones(23, 23, dtype=torch.bool), 1), float("-inf")), -1)
    want = M.pointer_fidelity_lift(pattern, ids, anchors, noncausal_diagnostic)
    calls = {}
    for name in ("pointer_fidelity_mass", "uniform_pointer_fidelity", "pointer_fidelity_lift"):
        real = getattr(M, name)
        calls[name] = 0

        def counting(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(M, name, counting)
    out = M.attention_metrics(pattern, ids, anchors, 5, noncausal_diagnostic)
    assert calls == {"pointer_fidelity_mass": 1, "uniform_pointer_fidelity": 1,
                     "pointer_fidelity_lift": 0}
    assert torch.equal(out["pointer_fidelity_lift"], want)
