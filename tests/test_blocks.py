"""Partitions cover every position once in contiguous blocks; anchors follow local entropy."""
import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
import torch

from localist_core.model.bigram import (
    PAD_CODE,
    BigramPartition,
    kn_bigram_tables,
    placeholder_tables,
)
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


def _random_tokens(seed: int, batch: int = 6, n: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Zipf-like draws, so function words and punctuation repeat as they do in text.
    probs = 1.0 / torch.arange(1, len(WORDS) + 1, dtype=torch.float)
    return torch.multinomial(probs, batch * n, replacement=True, generator=g).view(batch, n)


# A training stream for the bigram tables over WORDS: Zipf draws with a few fixed phrases, so
# some pairs are strongly associated ("the cat sat on a mat", "big red dog").
PHRASES = [[0, 9, 10, 12, 13, 11], [18, 19, 14], [3, 0, 14, 15]]


def _training_stream(seed: int = 0, n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = _random_tokens(seed + 1000, batch=1, n=n).flatten().tolist()
    out, i = [], 0
    while len(out) < n:
        if rng.random() < 0.3:
            out += PHRASES[int(rng.integers(len(PHRASES)))]
        else:
            out.append(noise[i])
            i += 1
    return np.array(out[:n])


TABLES = kn_bigram_tables(_training_stream(), len(WORDS))


def _partitions(**kw):
    """One partition of each strategy over the WORDS vocabulary."""
    cfg = ModelConfig(vocab_size=len(WORDS), cutoffs=(), **kw)
    return [make_partition(dataclasses.replace(cfg, partition=k), words=WORDS, bigram=TABLES)
            for k in ("fixed", "punctuation", "recruited", "bigram")]


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
    for part in _partitions(block_size=4, max_block_size=6, boundary_bits=1.5,
                            bigram_boundary_bits=1.5):
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
    for part in _partitions(boundary_bits=1.5, bigram_boundary_bits=1.5):
        full = part.block_ids(tokens)
        for t in (1, 7, 30, 59):
            changed = torch.cat([tokens[:, :t], other[:, t:]], dim=1)
            assert torch.equal(part.block_ids(changed)[:, :t], full[:, :t]), (part, t)
            assert torch.equal(part.block_ids(tokens[:, :t]), full[:, :t]), (part, t)  # prefix


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


# -- the bigram partition: a split test that reads the words -----------------------------------

D = 0.75


def _reference_kn(stream: list[int], v: int, min_count: int = 1):
    """P_KN(x | w) and P_uni(x) as ``kn_bigram_tables`` states them, from counts in plain Python
    (pruned pairs: unseen, their whole count in the backoff weight)."""
    pairs = Counter(zip(stream[:-1], stream[1:]))
    c_w, stored, pruned = Counter(), Counter(), Counter()
    for (w, _), k in pairs.items():
        c_w[w] += k
        if k >= min_count:
            stored[w] += 1
        else:
            pruned[w] += k
    after = Counter(x for _, x in pairs)                 # N1+(•x)

    def p_cont(x):
        return (max(after[x] - D, 0.0) + D * len(after) / v) / len(pairs)

    def p_kn(w, x):
        if c_w[w] == 0:
            return p_cont(x)
        k = pairs.get((w, x), 0)
        own = max(k - D, 0.0) / c_w[w] if k >= min_count else 0.0
        return own + (D * stored[w] + pruned[w]) / c_w[w] * p_cont(x)

    uni = Counter(stream)
    return p_kn, lambda x: (uni[x] + 1) / (len(stream) + v)


def _reference_bigram_gains(tokens, p_kn, p_uni, alpha, c_bits, cap):
    """BigramPartition's docstring, one token at a time: (boundaries, gains)."""
    start, gains, boundaries = 0, [0.0], []
    for s in range(1, len(tokens)):
        block = tokens[start:s]
        n, c = len(block), block.count(tokens[s])
        l_continue = -math.log2((c + alpha * p_kn(tokens[s - 1], tokens[s])) / (n + alpha))
        l_new = -math.log2(p_uni(tokens[s]))
        g = math.inf if n >= cap else l_continue - l_new - c_bits
        gains.append(g)
        if g > 0:
            boundaries.append(s)
            start = s
    return boundaries, gains


def _kn(tables, w: int, x: int) -> float:
    return 2.0 ** float(tables.log2_kn(torch.tensor(w), torch.tensor(x)))


def test_kn_tables_match_a_hand_computation():
    # Pairs: 0→1 ×3, 1→2 ×2, 1→3, 2→0, 2→3, 3→0: c(0)=3, c(1)=3; 6 distinct pairs, every word
    # follows another, so P_cont(v) = N1+(•v)/6 = (2, 1, 1, 2)/6; γ(0) = 0.75/3, γ(1) = 1.5/3.
    ids = [0, 1, 2, 0, 1, 3, 0, 1, 2, 3]
    t = kn_bigram_tables(ids, 4, min_count=1)
    assert _kn(t, 0, 1) == pytest.approx(2.25 / 3 + 0.25 / 6)          # 19/24
    assert _kn(t, 1, 2) == pytest.approx(1.25 / 3 + 0.5 / 6)           # 1/2
    assert _kn(t, 1, 3) == pytest.approx(0.25 / 3 + 0.5 * 2 / 6)       # 1/4
    assert _kn(t, 1, 0) == pytest.approx(0.5 * 2 / 6)                  # unseen: γ·P_cont
    assert 2.0 ** t.log2_uni.numpy() == pytest.approx(np.array([4, 4, 3, 3]) / 14)
    # Pairs seen once pruned: γ'(1) = (0.75·1 + 1)/3 = 7/12 takes in 1→3's count.
    p = kn_bigram_tables(ids, 4, min_count=2)
    assert int((p.codes != PAD_CODE).sum()) == 2                         # 0→1 and 1→2
    assert _kn(p, 1, 2) == pytest.approx(1.25 / 3 + 7 / 12 / 6)        # 37/72
    assert _kn(p, 1, 3) == pytest.approx(7 / 12 * 2 / 6)               # 7/36
    assert _kn(p, 3, 0) == pytest.approx(2 / 6)                        # γ'(3) = 1


@pytest.mark.parametrize("min_count,capacity", [(1, None), (2, None), (1, 15), (3, 64)])
def test_kn_every_context_sums_to_one(min_count, capacity):
    stream = _training_stream(3, 800)
    v = len(WORDS) + 1                     # the last word never occurs: never a predecessor
    t = kn_bigram_tables(stream, v, capacity=capacity, min_count=min_count)
    w, x = torch.meshgrid(torch.arange(v), torch.arange(v), indexing="ij")
    p = t.log2_kn(w, x).double().exp2()
    np.testing.assert_allclose(p.sum(-1).numpy(), 1.0, atol=1e-5)
    assert (p > 0).all()                                  # no word costs infinite bits
    assert torch.allclose(p[-1], t.log2_cont.double().exp2())            # γ = 1: P_cont alone
    np.testing.assert_allclose(float(t.log2_uni.double().exp2().sum()), 1.0, atol=1e-5)
    real = t.codes[t.codes != PAD_CODE]
    assert (real[1:] > real[:-1]).all() and (capacity is None or len(t.codes) == capacity)
    p_kn, _ = _reference_kn(stream.tolist(), v, min_count)
    if capacity is None:
        for a, b in [(0, 9), (9, 10), (18, 19), (5, 5), (20, 3)]:
            assert float(p[a, b]) == pytest.approx(p_kn(a, b), rel=1e-5)


def test_kn_capacity_keeps_the_most_frequent_pairs():
    stream = _training_stream(4, 2000)
    full = kn_bigram_tables(stream, len(WORDS), min_count=1)
    small = kn_bigram_tables(stream, len(WORDS), capacity=10, min_count=1)
    codes = stream[:-1] * len(WORDS) + stream[1:]
    top = [c for c, _ in Counter(codes.tolist()).most_common(10)]
    assert sorted(top) == small.codes.tolist()
    assert len(full.codes) > 10


@pytest.mark.parametrize("capacity,stored", [(4, 3), (9, 7), (10, 10), (20, 18)])
def test_kn_capacity_keeps_or_drops_tied_pairs_together(capacity, stored):
    """The counts of this stream run 124, 114, 107, 101, 101, 96, 90, 89, 89, 89, 57, … and
    19 three times at ranks 19–21: a cap inside a tie drops the whole tie, so every stored pair
    was seen more often than every pair left out, and the next tie would not fit."""
    stream = _training_stream(4, 2000)
    tables = kn_bigram_tables(stream, len(WORDS), capacity=capacity, min_count=1)
    counts = Counter((stream[:-1] * len(WORDS) + stream[1:]).tolist())
    kept = tables.codes[tables.codes != PAD_CODE].tolist()
    left = [k for c, k in counts.items() if c not in kept]
    assert len(kept) == stored and len(tables.codes) == capacity
    assert min(counts[c] for c in kept) > max(left)
    assert stored + left.count(max(left)) > capacity


@pytest.mark.parametrize("alpha,c_bits,cap,min_count", [(1.0, 1.5, 8, 2), (0.5, 0.0, 5, 1),
                                                        (2.0, 3.0, 12, 1), (1.0, 3.75, 8, 2)])
def test_bigram_adds_a_boundary_exactly_where_its_gain_is_positive(alpha, c_bits, cap, min_count):
    """Against the formula in plain Python: the same boundaries and gains; every boundary has
    gain > 0 (+∞ where the block was full) and every other position gain ≤ 0."""
    stream = _training_stream(0, 3000)
    tables = kn_bigram_tables(stream, len(WORDS), min_count=min_count)
    p_kn, p_uni = _reference_kn(stream.tolist(), len(WORDS), min_count)
    part = BigramPartition(tables, alpha, c_bits, cap)
    tokens = torch.tensor(_training_stream(7, 4 * 70)).view(4, 70)
    trace = part.trace_terms(tokens)
    assert torch.equal(trace.block_ids, part.block_ids(tokens))
    for b in range(tokens.shape[0]):
        ids, gain = trace.block_ids[b], trace.gain[b]
        starts = (torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1).tolist()
        assert all(gain[s] > 0 for s in starts)
        assert all(gain[s] <= 0 for s in range(1, len(ids)) if s not in starts)
        assert int(torch.bincount(ids).max()) <= cap
        ref_starts, ref_gains = _reference_bigram_gains(tokens[b].tolist(), p_kn, p_uni, alpha,
                                                        c_bits, cap)
        assert starts == ref_starts
        np.testing.assert_allclose(gain.numpy(), ref_gains, atol=1e-4)
        # The terms: gain = L_continue − L_new − C; for a new word L_continue − L_new is
        # log2((n + α)/α) − PMI.
        finite = torch.isfinite(gain[1:])
        g = trace.l_continue[b, 1:] - trace.l_new[b, 1:] - c_bits
        assert torch.allclose(g[finite], gain[1:][finite], atol=1e-4)


def test_a_full_bigram_block_ends_whatever_the_words():
    part = BigramPartition(TABLES, 1.0, 100.0, 4)        # C so high that only the cap splits
    ids, gain = part.trace(torch.tensor(_training_stream(9, 30)).view(1, 30))
    assert ids[0].tolist() == [i // 4 for i in range(30)]
    assert torch.isinf(gain[0, 4::4]).all() and (gain[0, 1:][gain[0, 1:].isfinite()] < 0).all()


def _valid_windows(corpus, n: int = 48, count: int = 24) -> torch.Tensor:
    return corpus.valid[: n * count].view(count, n)


def test_bigram_reads_the_words_and_recruited_does_not(tiny_corpus):
    """Give every word another id, the tables unchanged: the recruited partition (a length
    threshold) cuts every window as before; the bigram one, now reading other words, does not.
    Rebuild the tables over the relabelled training split too, and the bigram partition is
    back: it depends on the words, not on their ids."""
    v = len(tiny_corpus.tokenizer)
    cfg = ModelConfig(vocab_size=v, cutoffs=(), bigram_boundary_bits=1.5)
    tables = kn_bigram_tables(tiny_corpus.train.numpy(), v)
    x = _valid_windows(tiny_corpus)
    perm = torch.randperm(v, generator=torch.Generator().manual_seed(0))
    y = perm[x]
    bigram = make_partition(dataclasses.replace(cfg, partition="bigram"), bigram=tables)
    recruited = make_partition(dataclasses.replace(cfg, partition="recruited"))
    assert torch.equal(recruited.block_ids(x), recruited.block_ids(y))
    changed = (bigram.block_ids(x) != bigram.block_ids(y)).any(-1)
    assert changed.float().mean() > 0.5, changed
    relabelled = kn_bigram_tables(perm[tiny_corpus.train].numpy(), v)
    again = BigramPartition(relabelled, cfg.recruit_alpha, 1.5, cfg.max_block_size)
    assert torch.equal(again.block_ids(y), bigram.block_ids(x))


def test_capped_bigram_tables_cut_windows_alike_whatever_the_word_ids(tiny_corpus):
    """With the cap on, and falling inside a tie (as on WikiText-2, among the pairs seen
    twice): tables rebuilt over a consistently relabelled training split store the same pairs
    (relabelled) and cut every held-out window as before. A cap that broke the tie by pair code
    would store other pairs of the tie under the other ids, and cut windows elsewhere."""
    v = len(tiny_corpus.tokenizer)
    train = tiny_corpus.train.numpy()
    _, counts = np.unique(train[:-1] * v + train[1:], return_counts=True)
    level, ties = Counter(counts.tolist()).most_common(1)[0]      # the largest tie
    above = int((counts > level).sum())
    assert ties >= 10 and above > 0
    capacity = above + ties // 2                        # the cap falls inside that tie
    tables = kn_bigram_tables(train, v, capacity=capacity)
    perm = torch.randperm(v, generator=torch.Generator().manual_seed(0))
    relabelled = kn_bigram_tables(perm.numpy()[train], v, capacity=capacity)
    x = _valid_windows(tiny_corpus)
    for c_bits in (1.5, 3.75):
        before = BigramPartition(tables, 1.0, c_bits, 8).block_ids(x)
        after = BigramPartition(relabelled, 1.0, c_bits, 8).block_ids(perm[x])
        assert torch.equal(before, after), (before != after).any(-1).float().mean()
    kept = tables.codes[tables.codes != PAD_CODE].long()
    moved = perm[kept // v] * v + perm[kept % v]
    assert sorted(moved.tolist()) == relabelled.codes[relabelled.codes != PAD_CODE].tolist()
    assert len(kept) == above                           # the whole tie is left out


def test_bigram_keeps_associated_words_together():
    """Inside the training phrases (strongly associated neighbours) a block starts less often
    than elsewhere."""
    part = BigramPartition(TABLES, 1.0, 1.0, 8)
    stream = _training_stream(11, 2000)
    ids = part.block_ids(torch.tensor(stream).view(1, -1))[0]
    starts = torch.zeros(len(stream), dtype=torch.bool)
    starts[1:] = ids[1:] != ids[:-1]
    inside = torch.zeros_like(starts)
    for ph in PHRASES:
        for i in range(len(stream) - len(ph) + 1):
            if stream[i:i + len(ph)].tolist() == ph:
                inside[i + 1:i + len(ph)] = True
    assert starts[inside].float().mean() < 0.5 * starts[~inside].float().mean()


def test_the_bigram_partition_without_tables_says_what_is_missing():
    cfg = ModelConfig(vocab_size=len(WORDS), cutoffs=(), partition="bigram")
    with pytest.raises(ValueError, match="needs the Kneser–Ney bigram tables"):
        make_partition(cfg)
    part = make_partition(cfg, bigram=placeholder_tables(len(WORDS), 8))
    with pytest.raises(ValueError, match="needs the Kneser–Ney bigram tables"):
        part.block_ids(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="21 words|20"):
        make_partition(dataclasses.replace(cfg, vocab_size=21), bigram=TABLES)


# -- the random partition: punctuation's lengths at random places --------------------------------

def _lengths(ids: torch.Tensor) -> Counter:
    """Lengths of every complete block (each row's last block may be cut by the window)."""
    out: Counter = Counter()
    for row in ids:
        out.update(torch.bincount(row).tolist()[:-1])
    return out


def test_random_partition_blocks_follow_the_length_shares_it_is_given():
    from localist_core.model.blocks import RandomPartition
    shares = (0.1, 0.2, 0.0, 0.3, 0.4)
    tokens = torch.randint(0, 5000, (400, 128), generator=torch.Generator().manual_seed(0))
    ids = RandomPartition(shares, max_block_size=8).block_ids(tokens)
    assert (ids[:, 0] == 0).all() and (ids.diff(dim=1) >= 0).all()
    assert (ids.diff(dim=1) <= 1).all()                         # contiguous ids
    got = _lengths(ids)
    total = sum(got.values())
    for length, share in enumerate(shares, 1):
        assert got[length] / total == pytest.approx(share, abs=0.02), length
    assert max(got) <= len(shares)
    capped = RandomPartition(shares, max_block_size=2).block_ids(tokens)   # the cap holds
    assert max(_lengths(capped)) <= 2


def test_random_partition_is_causal_and_ignores_punctuation():
    from localist_core.model.blocks import RandomPartition
    part = make_partition(ModelConfig(vocab_size=len(WORDS), cutoffs=(), partition="random"))
    assert isinstance(part, RandomPartition)
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, len(WORDS), (8, 64), generator=g)
    for cut in (1, 17, 40):
        b = a.clone()
        b[:, cut:] = torch.randint(0, len(WORDS), (8, 64 - cut), generator=g)
        assert torch.equal(part.block_ids(a)[:, :cut], part.block_ids(b)[:, :cut])
    # a boundary word does not end its block: blocks end after punctuation no more than by chance
    ends = torch.tensor([w in BOUNDARY_WORDS for w in WORDS])[a[:, :-1]]
    starts = part.block_ids(a).diff(dim=1) == 1
    assert not torch.equal(starts, ends)


def test_random_partitions_default_lengths_are_punctuations_on_the_training_split():
    from localist_core.experiments.data import load_corpus, resolve_data_dir
    from localist_core.model.config import PUNCTUATION_BLOCK_LENGTHS
    if resolve_data_dir() is None:
        pytest.skip("no WikiText-2 folder on this machine")
    corpus = load_corpus()
    ends = np.flatnonzero(
        PunctuationPartition.from_words(corpus.tokenizer.words, 8).boundary.numpy()[
            corpus.train.numpy()])
    runs = np.diff(np.concatenate([[-1], ends]))     # tokens up to each boundary word
    counts = np.bincount(runs[runs % 8 > 0] % 8, minlength=9)[1:]
    counts[7] += int((runs // 8).sum())              # a run of 8 or more leaves blocks of 8
    assert tuple(np.round(counts / counts.sum(), 4)) == PUNCTUATION_BLOCK_LENGTHS


def test_random_block_lengths_are_checked_and_leave_old_run_identities_alone():
    from localist_core.model.config import model_identity
    for bad in ((), (0.0, 0.0), (-0.1, 1.0), (float("nan"),), (1.0,) * 65, "abc"):
        with pytest.raises(ValueError):
            ModelConfig(vocab_size=len(WORDS), cutoffs=(), random_block_lengths=bad)
    cfg = ModelConfig(vocab_size=len(WORDS), cutoffs=(), random_block_lengths=[1, 2])
    assert cfg.random_block_lengths == (1.0, 2.0)
    stored = dataclasses.asdict(ModelConfig(vocab_size=len(WORDS), cutoffs=()))
    stored["random_block_lengths"] = list(stored["random_block_lengths"])    # as JSON holds it
    assert "random_block_lengths" not in model_identity(stored)
