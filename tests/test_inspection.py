"""The live path: ``analyze`` and ``next_words`` agree with the full distribution."""
from pathlib import Path

import numpy as np
import pytest
import torch

from localist_core.analysis.inspection import analyze, next_words
from localist_core.model.dial import Dial

TEXT = "the cat sees the bridge . the dog walks over the old river and the town"


def test_analysis_perplexity_and_next_words_match_the_full_distribution(trained_tiny,
                                                                          tiny_corpus):
    tok = tiny_corpus.tokenizer
    dial = Dial(locality=0.4, attn_temperature=0.7)
    a = analyze(trained_tiny, tok, TEXT, dial)
    assert a.dial is dial
    ids = torch.tensor([a.token_ids])
    lp, _ = trained_tiny.run_with_cache(ids, dial)
    nll = -lp[0, :-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
    np.testing.assert_allclose(a.token_nll, nll.numpy(), rtol=1e-5, atol=1e-5)
    assert a.perplexity == pytest.approx(float(nll.mean().exp()), rel=1e-5)
    for pos in (0, len(a.labels) // 2, len(a.labels) - 1):
        words, probs = next_words(trained_tiny, tok, a, pos)
        top = lp[0, pos].exp().topk(len(words))
        assert words == tok.labels(top.indices.tolist())
        np.testing.assert_allclose(probs, top.values.numpy(), rtol=1e-5)
        assert (np.diff(probs) <= 0).all()


def test_next_words_refuses_a_position_outside_the_text(trained_tiny, tiny_corpus):
    a = analyze(trained_tiny, tiny_corpus.tokenizer, TEXT)
    with pytest.raises(ValueError, match="outside the text"):
        next_words(trained_tiny, tiny_corpus.tokenizer, a, len(a.labels))


def test_a_one_word_text_has_no_perplexity_but_next_words(trained_tiny, tiny_corpus):
    a = analyze(trained_tiny, tiny_corpus.tokenizer, "the")
    assert a.perplexity is None and a.token_nll.shape == (0,)
    words, probs = next_words(trained_tiny, tiny_corpus.tokenizer, a, 0)
    assert len(words) == 5 and 0 < probs.sum() <= 1 + 1e-6


@pytest.mark.parametrize("partition", ["punctuation", "recruited"])
def test_partitions_at_inference_and_the_theory_report_count_real_blocks(tiny_model_cfg,
                                                                        tiny_corpus, partition):
    import dataclasses

    from localist_core.analysis.inspection import recruitment_trace, theory_report
    from localist_core.experiments.train import make_model
    model = make_model(dataclasses.replace(tiny_model_cfg, partition=partition),
                       tiny_corpus).eval()
    tok = tiny_corpus.tokenizer
    one_block = "the cat sees"                       # 3 words: one block under either rule
    assert theory_report(model, tok, one_block, Dial(0.5), 0) is None
    two = "the cat sees the bridge . a dog follows the castle on Monday ."
    assert theory_report(model, tok, two, Dial(0.5), 0) is not None
    a = analyze(model, tok, two, partition="fixed", block_size=4)
    assert a.block_ids.tolist() == [i // 4 for i in range(len(a.labels))]
    assert a.partition == "fixed"
    assert analyze(model, tok, "", partition="recruited").partition == "recruited"
    trace = recruitment_trace(model, tok, two)
    assert [p for p, _, _ in trace.boundaries()] == [
        i for i in range(1, len(trace.labels)) if trace.block_ids[i] != trace.block_ids[i - 1]]
    assert all(bits > 0 for _, _, bits in trace.boundaries())


def test_the_theory_report_reblocks_the_text_as_the_sidebar_does(trained_tiny, tiny_corpus):
    """The Theory page's report follows the sidebar's "Blocks": fixed windows of 2 give shorter
    blocks, and a text of one trained block has two blocks (a report) once re-blocked."""
    from localist_core.analysis.inspection import theory_report
    tok = tiny_corpus.tokenizer
    text = "the cat sees the bridge . a dog follows the castle on Monday ."
    trained = theory_report(trained_tiny, tok, text, Dial(0.5), 0)
    small = theory_report(trained_tiny, tok, text, Dial(0.5), 0, partition="fixed",
                          block_size=2)
    assert small["inputs"]["block_len"] < trained["inputs"]["block_len"]
    assert small["rows"] != trained["rows"]
    short = "the cat sees"
    assert theory_report(trained_tiny, tok, short, Dial(0.5), 0) is None
    assert theory_report(trained_tiny, tok, short, Dial(0.5), 0, partition="fixed",
                         block_size=2) is not None


def _counting(monkeypatch, owner, name):
    """Replace ``owner.name`` by a wrapper that counts its calls; returns the count list."""
    calls = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.mark.parametrize("dial", [Dial(0.6, 0.7), Dial(0.6, 1.0, 2.0)])
def test_one_analysis_partitions_once_and_finds_anchors_once(tiny_model_cfg, tiny_corpus,
                                                             monkeypatch, dial):
    """The recruited partition (a left-to-right scan) runs once per analysis and the anchor mask
    is built once for the metrics (the forward builds its own only when γ ≠ 0), and the result
    is what the forward pass and ``partition_info`` give separately."""
    import dataclasses

    from localist_core.analysis.evaluate import attention_summary
    from localist_core.experiments.train import make_model
    from localist_core.model import transformer
    from localist_core.model.blocks import RecruitedPartition
    model = make_model(dataclasses.replace(tiny_model_cfg, partition="recruited"),
                       tiny_corpus).eval()
    tok = tiny_corpus.tokenizer
    scans = _counting(monkeypatch, RecruitedPartition, "block_ids")
    anchors = _counting(monkeypatch, transformer, "anchor_mask")
    a = analyze(model, tok, TEXT, dial)
    assert len(scans) == 1
    assert len(anchors) == 1 + (dial.rule_strength != 0.0)
    # The same numbers as the separate calls.
    ids = torch.tensor([a.token_ids])
    _, cache = model.run_with_cache(ids, dial)
    info = model.partition_info(ids)
    pats = [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(model.cfg.n_layers)]
    assert np.array_equal(a.patterns, torch.stack([p[0] for p in pats]).half().numpy())
    assert np.array_equal(a.block_ids, info.block_ids[0].numpy())
    assert np.array_equal(a.anchor_mask, info.anchor_mask[0].numpy())
    assert np.array_equal(a.block_anchors, info.block_anchors[0].numpy())
    per_layer = attention_summary(model, ids, pats, info.block_ids)
    assert a.metrics["pointer_fidelity_lift"]["per_head"] == [
        m["pointer_fidelity_lift"][0].mean(-1).tolist() for m in per_layer]


def test_the_recruitment_trace_uses_the_models_own_recruited_partition(tiny_model_cfg,
                                                                      tiny_corpus):
    """Whatever partition the model was trained with, the trace cuts the text where the
    recruited partition of its config (its α and C) does."""
    import dataclasses

    from localist_core.analysis.inspection import recruitment_trace
    from localist_core.experiments.train import make_model
    from localist_core.model.blocks import make_partition
    cfg = dataclasses.replace(tiny_model_cfg, recruit_alpha=3.0, boundary_bits=1.0)
    model = make_model(cfg, tiny_corpus).eval()
    tok = tiny_corpus.tokenizer
    trace = recruitment_trace(model, tok, TEXT)
    assert (trace.alpha, trace.boundary_bits) == (3.0, 1.0)
    ids = torch.tensor([tok.encode(TEXT)])
    want = make_partition(dataclasses.replace(cfg, partition="recruited")).block_ids(ids)[0]
    assert trace.block_ids.tolist() == want.tolist()
    assert len(trace.boundaries()) == int(want[-1])


def test_one_head_reduction_serves_patterns_and_entropies(trained_tiny, tiny_corpus):
    """A mean of attention rows is an attention row: every reduction of the patterns sums to 1
    over visible keys; the entropy reduction is the plain mean of the per-head values."""
    from localist_core.analysis.inspection import reduce_heads
    a = analyze(trained_tiny, tiny_corpus.tokenizer, TEXT)
    n_layers, n_heads, n, _ = a.patterns.shape
    for layer in (None, 0, n_layers - 1):
        for head in (None, 0, n_heads - 1):
            view = reduce_heads(a.patterns, layer, head)
            assert view.shape == (n, n) and view.dtype == np.float32
            np.testing.assert_allclose(view.sum(-1), 1.0, atol=5e-3)   # fp16 patterns
            assert np.all(np.triu(view, 1) == 0)                      # still causal
    np.testing.assert_allclose(reduce_heads(a.entropy, None, None),
                               a.entropy.astype(np.float32).mean((0, 1)), rtol=1e-6)
    assert np.array_equal(reduce_heads(a.entropy, 1, 0), a.entropy[1, 0])


# -- the bigram trace and the tables it reads --------------------------------------------------

def _bigram_model(tiny_model_cfg, tiny_corpus, **kw):
    import dataclasses

    from localist_core.experiments.train import make_model
    cfg = dataclasses.replace(tiny_model_cfg, partition="bigram", bigram_pairs=1024, **kw)
    return make_model(cfg, tiny_corpus).eval()


def test_the_bigram_trace_reads_the_models_own_table_and_states_every_term(tiny_model_cfg,
                                                                           tiny_corpus):
    from localist_core.analysis.inspection import analyze, recruitment_trace
    model = _bigram_model(tiny_model_cfg, tiny_corpus, bigram_boundary_bits=0.5,
                          max_block_size=6)
    tok = tiny_corpus.tokenizer
    text = TEXT + " . the cat follows a red house in 1990 . my sister loves the law"
    trace = recruitment_trace(model, tok, text, "bigram")
    assert trace.partition == "bigram" and trace.table == "the model's own table"
    assert (trace.boundary_bits, trace.max_block_size) == (0.5, 6) and not trace.missing
    ids = torch.tensor([tok.encode(text)])
    assert trace.block_ids.tolist() == model.partition_info(ids).block_ids[0].tolist()
    assert analyze(model, tok, text).block_ids.tolist() == trace.block_ids.tolist()
    bounds = trace.boundaries()
    assert bounds and all(bits > 0 for _, _, bits in bounds)
    gain, t = trace.gain_bits[1:], {k: v[1:] for k, v in trace.terms.items()}
    ok = np.isfinite(gain)
    np.testing.assert_allclose(gain[ok], (t["l_continue"] - t["l_new"] - 0.5)[ok], atol=1e-4)
    assert (~ok).sum() == sum(np.isinf(b) for _, _, b in bounds)        # the full blocks
    assert np.isnan(trace.terms["pmi"][0]) and trace.gain_bits[0] == 0


def test_a_checkpoint_without_a_table_for_its_vocabulary_gets_no_bigram_trace(trained_tiny,
                                                                              tiny_corpus):
    """The shipped table is for WikiText-2's vocabulary, not the tiny corpus's: the trace says
    why it is missing, and re-blocking with bigram keeps the trained blocks with a notice."""
    from localist_core.analysis.inspection import analyze, recruitment_trace
    tok = tiny_corpus.tokenizer
    trace = recruitment_trace(trained_tiny, tok, TEXT, "bigram")
    assert not trace.labels and "another vocabulary" in trace.missing
    assert "carries none" in trace.missing
    a = analyze(trained_tiny, tok, TEXT, partition="bigram")
    assert a.partition == trained_tiny.cfg.partition
    assert a.block_ids.tolist() == analyze(trained_tiny, tok, TEXT).block_ids.tolist()
    assert any("keeps the checkpoint's own blocks" in n and "another vocabulary" in n
               for n in a.notices)
    with pytest.raises(ValueError, match="partition must be one of"):
        recruitment_trace(trained_tiny, tok, TEXT, "fixed")


def test_a_table_file_is_checked_before_it_is_read(tmp_path, tiny_model_cfg, tiny_corpus,
                                                   trained_tiny, monkeypatch):
    """A table file for this vocabulary serves any checkpoint; one that is too big, too long,
    for another vocabulary or out of order is refused by name, the first three unread."""
    from localist_core.analysis.inspection import bigram_tables_for, recruitment_trace
    from localist_core.model import bigram
    from localist_core.model.config import MODEL_SIZE_LIMITS
    tok = tiny_corpus.tokenizer
    own = _bigram_model(tiny_model_cfg, tiny_corpus).bigram_tables()
    good = tmp_path / "table.safetensors"
    bigram.write_table_file(good, own, tok.words, {"source": "tiny"})
    tables, where = bigram_tables_for(trained_tiny, tok, good)
    assert where.startswith("the shipped") and torch.equal(tables.codes, own.codes)
    monkeypatch.setattr(bigram, "load_file", None)                  # reading would fail
    with pytest.raises(bigram.UnsafeFileError, match="another vocabulary"):
        bigram.read_table_file(good, tok.words[:-1] + ["zzz"])
    monkeypatch.setitem(MODEL_SIZE_LIMITS, "bigram_pairs", 100)
    with pytest.raises(bigram.UnsafeFileError, match="at most 100 pairs"):
        bigram.read_table_file(good, tok.words)
    monkeypatch.setattr(bigram, "MAX_TABLE_FILE_BYTES", 1000)
    with pytest.raises(bigram.UnsafeFileError, match="refused unread"):
        bigram.read_table_file(good, tok.words)
    monkeypatch.undo()
    shuffled = bigram.BigramTables(own.codes.flip(0).contiguous(), own.log2_pair,
                                   own.log2_backoff, own.log2_cont, own.log2_uni)
    bad = tmp_path / "bad.safetensors"
    bigram.write_table_file(bad, shuffled, tok.words, {})
    assert "sorted" in bigram_tables_for(trained_tiny, tok, bad)[1]
    assert recruitment_trace(trained_tiny, tok, TEXT, "bigram").missing     # the shipped one


@pytest.mark.skipif(not (Path(__file__).parents[1] / "assets" / "checkpoints" / "dial"
                         / "vocab.json").is_file(), reason="no shipped dial model")
def test_the_shipped_table_serves_the_shipped_checkpoints():
    """The shipped table is exactly what training builds for WikiText-2's vocabulary (its
    size is the config's default), and a shipped checkpoint gets a bigram trace from it."""
    from localist_core import load_model
    from localist_core.analysis.inspection import bigram_tables_for, recruitment_trace
    from localist_core.paths import BIGRAM_TABLE, CHECKPOINT_DIR
    model, tok = load_model(CHECKPOINT_DIR / "dial")
    assert BIGRAM_TABLE.stat().st_size <= 1.5e6
    tables, where = bigram_tables_for(model, tok)
    assert tables is not None and "shipped" in where
    assert len(tables.codes) == model.cfg.bigram_pairs
    trace = recruitment_trace(model, tok, "The old castle stood on a hill above the river . "
                              "It was built in the 12th century by the Duke of York .", "bigram")
    assert trace.labels and trace.table == where and trace.boundaries()
