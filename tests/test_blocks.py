"""Partitions cover every position once in contiguous blocks; anchors follow local entropy."""
import dataclasses

import numpy as np
import pytest
import torch

from localist_core.model.blocks import (
    BOUNDARY_WORDS,
    FixedPartition,
    PunctuationPartition,
    RecruitedPartition,
    anchor_mask,
    block_anchors,
    local_entropy_table,
    make_partition,
    zipf_log2_prior,
)
from localist_core.model.config import ModelConfig

WORDS = ["the", ",", ".", "of", "<unk>", "and", "in", ";", "<eos>", "cat", "sat", "mat", "on",
         "a", "dog", "ran", ":", "?", "big", "red"]


def _partitions(**kw):
    """One partition of each strategy over the WORDS vocabulary."""
    cfg = ModelConfig(vocab_size=len(WORDS), cutoffs=(), **kw)
    return [make_partition(dataclasses.replace(cfg, partition=k), words=WORDS)
            for k in ("fixed", "punctuation", "recruited")]


def _random_tokens(seed: int, batch: int = 6, n: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Zipf-like draws, so function words and punctuation repeat as they do in text.
    probs = 1.0 / torch.arange(1, len(WORDS) + 1, dtype=torch.float)
    return torch.multinomial(probs, batch * n, replacement=True, generator=g).view(batch, n)


@pytest.mark.parametrize("size,offset,n", [(1, 0, 7), (3, 0, 10), (5, 2, 23), (10, 0, 9)])
def test_fixed_partition_covers_each_position_once_contiguously(size, offset, n):
    ids = FixedPartition(size, offset).block_ids(torch.zeros(2, n, dtype=torch.long))
    assert ids.shape == (2, n) and ids[0, 0] == 0
    steps = ids[:, 1:] - ids[:, :-1]
    assert ((steps == 0) | (steps == 1)).all()          # contiguous, non-decreasing, no gaps
    counts = torch.bincount(ids[0])
    assert counts.sum() == n and (counts <= size).all()


@pytest.mark.parametrize("seed", range(4))
def test_every_partition_covers_each_position_once_in_contiguous_blocks(seed):
    tokens = _random_tokens(seed)
    for part in _partitions(block_size=4, max_block_size=6, boundary_bits=1.5):
        ids = part.block_ids(tokens)
        assert ids.shape == tokens.shape and ids.dtype == torch.long, part
        assert (ids[:, 0] == 0).all(), part
        steps = ids[:, 1:] - ids[:, :-1]
        assert ((steps == 0) | (steps == 1)).all(), part    # contiguous, no gaps, no repeats
        for row in ids:
            assert int(torch.bincount(row).sum()) == tokens.shape[1]


@pytest.mark.parametrize("seed", range(3))
def test_every_partition_is_causal(seed):
    """The blocks of a prefix never change when later tokens change (the leak test's premise)."""
    tokens = _random_tokens(seed)
    other = _random_tokens(seed + 100)
    for part in _partitions(boundary_bits=1.5):
        full = part.block_ids(tokens)
        for t in (1, 7, 30, 59):
            changed = torch.cat([tokens[:, :t], other[:, t:]], dim=1)
            assert torch.equal(part.block_ids(changed)[:, :t], full[:, :t]), (part, t)


def test_punctuation_blocks_end_at_punctuation_or_the_maximum_length():
    tokens = _random_tokens(5)
    part = PunctuationPartition.from_words(WORDS, max_block_size=6)
    ids = part.block_ids(tokens)
    is_punct = torch.tensor([WORDS[i] in BOUNDARY_WORDS for i in tokens.flatten()]).view_as(tokens)
    for b in range(tokens.shape[0]):
        lengths = torch.bincount(ids[b])
        assert (lengths <= 6).all()
        ends = torch.nonzero(ids[b, 1:] != ids[b, :-1]).flatten()   # last position of a block
        for e in ends.tolist():
            assert is_punct[b, e] or lengths[ids[b, e]] == 6
        # ...and every punctuation token (but the last position) ends its block.
        for e in torch.nonzero(is_punct[b, :-1]).flatten().tolist():
            assert ids[b, e + 1] == ids[b, e] + 1


def _reference_gains(tokens: list[int], log2_prior: list[float], alpha: float, c_bits: float):
    """The docstring's formula, one token at a time in plain Python: (boundaries, gains)."""
    start, gains, boundaries = 0, [0.0], []
    for s in range(1, len(tokens)):
        block = tokens[start:s]
        n, c = len(block), block.count(tokens[s])
        p = 2.0 ** log2_prior[tokens[s]]
        l_continue = -np.log2((c + alpha * p) / (n + alpha))
        l_new = -log2_prior[tokens[s]]
        g = l_continue - l_new - c_bits
        gains.append(g)
        if g > 0:
            boundaries.append(s)
            start = s
    return boundaries, gains


@pytest.mark.parametrize("alpha,c_bits", [(1.0, 2.5), (0.5, 1.0), (2.0, 3.0), (1.0, 0.0)])
def test_recruited_adds_a_boundary_exactly_where_the_gain_is_positive(alpha, c_bits):
    tokens = _random_tokens(11, batch=4, n=80)
    prior = zipf_log2_prior(len(WORDS))
    part = RecruitedPartition(prior, alpha, c_bits)
    ids, gain = part.trace(tokens)
    for b in range(tokens.shape[0]):
        boundaries = (torch.nonzero(ids[b, 1:] != ids[b, :-1]).flatten() + 1).tolist()
        assert all(gain[b, s] > 0 for s in boundaries)           # never a non-positive gain
        ref_bounds, ref_gains = _reference_gains(tokens[b].tolist(), prior.tolist(), alpha,
                                                 c_bits)
        assert boundaries == ref_bounds
        np.testing.assert_allclose(gain[b].numpy(), ref_gains, atol=1e-4)


def test_recruited_keeps_repeated_words_together_and_splits_new_ones():
    prior = zipf_log2_prior(len(WORDS))
    part = RecruitedPartition(prior, alpha=1.0, boundary_bits=2.5)
    new_words = torch.tensor([[9, 10, 11, 12, 13, 14, 15, 18, 19, 9, 10]])
    repeats = torch.tensor([[9, 10, 11, 12, 13, 11, 11, 11, 11, 11, 11]])
    assert int(part.block_ids(new_words).max()) >= 1        # new words: a block of ~5, then split
    assert int(part.block_ids(repeats).max()) == 0          # repeats: one block


def test_unknown_partition_is_refused():
    class Unknown:
        partition = "semantic"

    with pytest.raises(ValueError, match="partition 'semantic'"):
        make_partition(Unknown())
    cfg = ModelConfig(vocab_size=len(WORDS), cutoffs=(), partition="punctuation")
    with pytest.raises(ValueError, match="vocabulary"):
        make_partition(cfg)


def test_local_entropy_low_for_predictable_successors():
    # 0 is always followed by 1; 2 is followed by anything.
    rng = np.random.default_rng(0)
    seq = []
    for _ in range(2000):
        seq += [0, 1, 2, int(rng.integers(3, 20))]
    h = local_entropy_table(np.array(seq), 21)
    assert h[0] < h[2] and h[1] < h[2]
    assert h.shape == (21,) and torch.isfinite(h).all()
    # Word 20 never occurs: it gets the uniform entropy log2(V).
    assert abs(float(h[20]) - np.log2(21)) < 1e-4


def test_block_anchors_pick_k_lowest_entropy_per_block():
    ids = FixedPartition(5).block_ids(torch.zeros(1, 10, dtype=torch.long))
    ent = torch.tensor([[5., 1., 3., 2., 9., 0., 0., 7., 8., 6.]])
    anchors = block_anchors(ids, ent, 2)
    assert anchors[0].tolist() == [False, True, False, True, False,
                                   True, True, False, False, False]


def test_causal_anchors_never_depend_on_later_tokens():
    ids = FixedPartition(5).block_ids(torch.zeros(1, 10, dtype=torch.long))
    ent = torch.rand(1, 10)
    mask = anchor_mask(ids, ent, 2)
    for t in range(10):
        changed = ent.clone()
        changed[:, t + 1:] = torch.rand(1, 9 - t) - 1.0   # later tokens become "better" anchors
        assert torch.equal(anchor_mask(ids, changed, 2)[:, t], mask[:, t])
    # Each query sees at most k anchors, all in its own block and at or before it.
    assert (mask.sum(-1) <= 2).all()
    assert (mask & ~torch.ones(10, 10, dtype=torch.bool).tril()).sum() == 0
    # At the last position of a block, causal anchors equal the whole block's anchors.
    full = block_anchors(ids, ent, 2)
    assert torch.equal(mask[0, 4, :5], full[0, :5]) and torch.equal(mask[0, 9, 5:], full[0, 5:])
