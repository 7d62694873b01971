"""Partitions cover every position once in contiguous blocks; anchors follow local entropy."""
import numpy as np
import pytest
import torch

from localist_core.blocks import (FixedPartition, anchor_mask, block_anchors,
                                  local_entropy_table, make_partition)


@pytest.mark.parametrize("size,offset,n", [(1, 0, 7), (3, 0, 10), (5, 2, 23), (10, 0, 9)])
def test_fixed_partition_covers_each_position_once_contiguously(size, offset, n):
    ids = FixedPartition(size, offset).block_ids(torch.zeros(2, n, dtype=torch.long))
    assert ids.shape == (2, n) and ids[0, 0] == 0
    steps = ids[:, 1:] - ids[:, :-1]
    assert ((steps == 0) | (steps == 1)).all()          # contiguous, non-decreasing, no gaps
    counts = torch.bincount(ids[0])
    assert counts.sum() == n and (counts <= size).all()


def test_unknown_partition_is_refused():
    with pytest.raises(ValueError, match="partition"):
        make_partition("semantic", 5)


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
