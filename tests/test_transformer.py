"""The decoder: hook names, the leak test, exact log-probabilities and input checks."""
import dataclasses

import pytest
import torch

from localist_core.analysis.evaluate import leak_test
from localist_core.model.dial import Dial
from localist_core.model.transformer import LocalistLM, adaptive_nll

SETTINGS = [Dial(lam, tau, gam)
            for lam in (0.0, 0.4, 0.9, 1.0) for tau in (0.05, 1.0, 10.0) for gam in (0.0, 3.0)]

# Every hook of the tiny model on the 2 × 32 test batch, in the order the forward pass meets
# them, with TransformerLens's names and shapes: batch 2, pos 32, d_model 32, 2 heads of
# d_head 16, d_mlp 64. hook_q_x / hook_k_x are our cross-block channel.
TINY_HOOKS = {
    "hook_embed": (2, 32, 32),                          # [batch, pos, d_model]
    "hook_pos_embed": (2, 32, 32),
    "blocks.0.hook_resid_pre": (2, 32, 32),
    "blocks.0.attn.hook_q": (2, 32, 2, 16),             # [batch, pos, head_index, d_head]
    "blocks.0.attn.hook_k": (2, 32, 2, 16),
    "blocks.0.attn.hook_v": (2, 32, 2, 16),
    "blocks.0.attn.hook_q_x": (2, 32, 2, 16),
    "blocks.0.attn.hook_k_x": (2, 32, 2, 16),
    "blocks.0.attn.hook_attn_scores": (2, 2, 32, 32),   # [batch, head_index, query_pos, key_pos]
    "blocks.0.attn.hook_pattern": (2, 2, 32, 32),
    "blocks.0.attn.hook_z": (2, 32, 2, 16),
    "blocks.0.hook_attn_out": (2, 32, 32),
    "blocks.0.hook_resid_mid": (2, 32, 32),
    "blocks.0.mlp.hook_pre": (2, 32, 64),               # [batch, pos, d_mlp]
    "blocks.0.mlp.hook_post": (2, 32, 64),
    "blocks.0.hook_mlp_out": (2, 32, 32),
    "blocks.0.hook_resid_post": (2, 32, 32),
    "blocks.1.hook_resid_pre": (2, 32, 32),
    "blocks.1.attn.hook_q": (2, 32, 2, 16),
    "blocks.1.attn.hook_k": (2, 32, 2, 16),
    "blocks.1.attn.hook_v": (2, 32, 2, 16),
    "blocks.1.attn.hook_q_x": (2, 32, 2, 16),
    "blocks.1.attn.hook_k_x": (2, 32, 2, 16),
    "blocks.1.attn.hook_attn_scores": (2, 2, 32, 32),
    "blocks.1.attn.hook_pattern": (2, 2, 32, 32),
    "blocks.1.attn.hook_z": (2, 32, 2, 16),
    "blocks.1.hook_attn_out": (2, 32, 32),
    "blocks.1.hook_resid_mid": (2, 32, 32),
    "blocks.1.mlp.hook_pre": (2, 32, 64),
    "blocks.1.mlp.hook_post": (2, 32, 64),
    "blocks.1.hook_mlp_out": (2, 32, 32),
    "blocks.1.hook_resid_post": (2, 32, 32),
}


def test_every_hook_name_and_shape_literally(tiny_model, tokens):
    assert tokens.shape == (2, 32)
    assert sorted(tiny_model.hook_names()) == sorted(TINY_HOOKS)
    order = []
    handles = [m.register_forward_hook(lambda *_, n=n: order.append(n))
               for n, m in tiny_model.named_modules() if n in TINY_HOOKS]
    try:
        lp, cache = tiny_model.run_with_cache(tokens)
    finally:
        for h in handles:
            h.remove()
    assert order == list(TINY_HOOKS)                    # the order the forward pass meets them
    assert {name: tuple(t.shape) for name, t in cache.items()} == TINY_HOOKS
    assert lp.shape == (2, 32, tiny_model.cfg.vocab_size)


def test_the_cache_holds_activations_and_partition_info_the_rest(tiny_model, tokens):
    _, cache = tiny_model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    assert list(cache) == ["blocks.0.attn.hook_pattern"]
    info = tiny_model.partition_info(tokens)
    assert info.block_ids.shape == (2, 32) and info.block_anchors.shape == (2, 32)
    assert info.anchor_mask.shape == (2, 32, 32)
    assert torch.equal(info.block_ids, tiny_model(tokens).block_ids)


def test_leak_test_passes_for_causal_model_at_every_dial(trained_tiny, tokens):
    res = leak_test(trained_tiny, tokens, SETTINGS)
    assert res["passed"], res
    assert res["checked"] >= len(SETTINGS)


def test_leak_test_fails_for_noncausal_diagnostic(trained_tiny, tokens):
    """The diagnostic mode sees later tokens of its block, so the same test must catch it."""
    cfg = dataclasses.replace(trained_tiny.cfg, noncausal_diagnostic=True)
    leaky = LocalistLM(cfg, trained_tiny.local_entropy)
    leaky.load_state_dict(trained_tiny.state_dict())
    res = leak_test(leaky.eval(), tokens, SETTINGS[:4])
    assert not res["passed"]
    assert res["max_abs_diff"] > 1e-3


def test_log_probs_normalised_over_whole_vocabulary(trained_tiny, tokens):
    lp, _ = trained_tiny.run_with_cache(tokens)
    total = lp.double().exp().sum(-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    # The adaptive head's per-target log-probs agree with the full distribution.
    out = trained_tiny(tokens)
    nll = trained_tiny.token_nll(out.hidden, tokens)
    assert torch.allclose(-nll, lp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), atol=1e-4)
    assert torch.equal(trained_tiny.predict(out.hidden), lp.argmax(-1))


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("tau", [0.05, 0.5, 1.0, 10.0])
def test_log_probs_finite_on_grid(trained_tiny, tokens, lam, tau):
    lp, _ = trained_tiny.run_with_cache(tokens, Dial(lam, tau, rule_strength=5.0))
    assert torch.isfinite(lp).all()


def test_bad_tokens_give_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="non-empty"):
        tiny_model.run_with_cache([])
    with pytest.raises(ValueError, match="exceed"):
        tiny_model.run_with_cache(list(range(tiny_model.cfg.n_ctx + 1)))
    with pytest.raises(ValueError, match="token ids"):
        tiny_model.run_with_cache([0, tiny_model.cfg.vocab_size])


def _cluster_winning_hidden(model) -> torch.Tensor:
    """``[3, 50, d]`` hidden states pointed at the head's cluster rows, so tail words often win
    over the shortlist (where a scan that stops at the shortlist would go wrong)."""
    g = torch.Generator().manual_seed(1)
    rows = model.head.head.weight[model.head.shortlist_size:].detach()     # (clusters, d)
    pick = torch.randint(0, len(rows), (150,), generator=g)
    scale = torch.rand(150, 1, generator=g) * 30
    return (scale * rows[pick] / rows[pick].norm(dim=-1, keepdim=True)
            + torch.randn(150, rows.shape[1], generator=g)).view(3, 50, -1)


def test_predict_is_the_exact_argmax_even_when_clusters_win(trained_tiny):
    """Hidden states pointed at the head's cluster rows make tail words win; predict must
    still agree with the argmax of the full distribution."""
    hidden = _cluster_winning_hidden(trained_tiny)
    full = trained_tiny.log_probs(hidden).argmax(-1)
    assert (full >= trained_tiny.cfg.cutoffs[0]).float().mean() > 0.2
    assert (full < trained_tiny.cfg.cutoffs[0]).float().mean() > 0.05
    assert torch.equal(trained_tiny.predict(hidden, chunk=17), full)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_k_is_the_exact_top_k_even_when_clusters_win(trained_tiny, k):
    """The hidden states of the predict test (pointed at the cluster rows) make tail words
    win; top_k must still equal the top-k of the full distribution."""
    hidden = _cluster_winning_hidden(trained_tiny)
    with torch.no_grad():
        full = trained_tiny.log_probs(hidden).topk(k, dim=-1)
        lp, ids = trained_tiny.top_k(hidden, k, chunk=13)
    tail = ids[..., 0] >= trained_tiny.head.shortlist_size
    assert tail.float().mean() > 0.2                                   # tail words do win
    assert torch.equal(ids, full.indices)
    torch.testing.assert_close(lp, full.values, atol=1e-5, rtol=1e-5)


def test_run_with_cache_return_types(trained_tiny, tokens):
    lp, cache = trained_tiny.run_with_cache(tokens, Dial(0.5))
    hidden, cache_h = trained_tiny.run_with_cache(tokens, Dial(0.5), return_type="hidden")
    none, _ = trained_tiny.run_with_cache(tokens, Dial(0.5), return_type=None)
    assert none is None and hidden.shape == (*tokens.shape, trained_tiny.cfg.d_model)
    torch.testing.assert_close(trained_tiny.log_probs(hidden), lp)
    assert torch.equal(cache["blocks.1.attn.hook_pattern"], cache_h["blocks.1.attn.hook_pattern"])
    with pytest.raises(ValueError, match="return_type"):
        trained_tiny.run_with_cache(tokens, return_type="logits")


@pytest.fixture(scope="module", params=["punctuation", "recruited", "bigram"])
def adaptive_tiny(request, tiny_model_cfg, tiny_corpus):
    """A tiny model trained a few steps with an adaptive partition and the attention penalty
    (the bigram one builds its Kneser–Ney table from the training split as it starts)."""
    from localist_core.experiments.train import train
    from localist_core.model.config import TrainConfig, preset
    # The synthetic text repeats a few phrases, so most of its word pairs are well predicted:
    # a bigram boundary that costs nothing (C = 0) still leaves blocks of several words.
    mcfg = dataclasses.replace(tiny_model_cfg, partition=request.param, boundary_bits=1.5,
                               bigram_boundary_bits=0.0)
    tcfg = TrainConfig(**{**preset("tiny").train, "locality": 0.6, "max_steps": 8})
    res = train(mcfg, tcfg, tiny_corpus, progress=False)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in res.history
               if "train_loss" in h)
    return res.model.eval()


def test_adaptive_partitions_train_and_pass_the_leak_test(adaptive_tiny, tokens):
    res = leak_test(adaptive_tiny, tokens, SETTINGS[::5])
    assert res["passed"], res
    ids = adaptive_tiny.partition_info(tokens).block_ids
    # Adaptive blocks differ from one sequence to the next and are not fixed windows.
    assert not torch.equal(ids[0], ids[1])


def test_adaptive_model_blocks_follow_their_rule_on_real_text(adaptive_tiny, tokens, tiny_corpus):
    """Punctuation: every full stop ends its block. Recruited and bigram: a block starts exactly
    where the split test gains bits."""
    ids = adaptive_tiny.partition_info(tokens).block_ids
    starts = torch.zeros_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    if adaptive_tiny.cfg.partition == "punctuation":
        stop = tiny_corpus.tokenizer.index["."]
        where = torch.nonzero(tokens[:, :-1] == stop)
        assert len(where) > 0
        for b, t in where.tolist():
            assert starts[b, t + 1]
    else:
        _, gain = adaptive_tiny.partition.trace(tokens)
        assert starts.any()
        assert torch.equal(starts[:, 1:], gain[:, 1:] > 0)


def test_adaptive_models_save_and_reload_with_identical_outputs(adaptive_tiny, tokens, tmp_path,
                                                                tiny_corpus):
    """The bigram model's table travels in its checkpoint (kept fp32 in an fp16 export too)."""
    from localist_core.model.checkpoint import load_model, save_checkpoint
    want, _ = adaptive_tiny.run_with_cache(tokens, Dial(0.6))
    path = save_checkpoint(tmp_path / "fp32", adaptive_tiny, tiny_corpus.tokenizer)
    loaded, _ = load_model(path)
    got, _ = loaded.run_with_cache(tokens, Dial(0.6))
    assert torch.equal(got, want)
    half, _ = load_model(save_checkpoint(tmp_path / "fp16", adaptive_tiny, tiny_corpus.tokenizer,
                                         precision="fp16"))
    assert torch.equal(half.partition_info(tokens).block_ids,
                       adaptive_tiny.partition_info(tokens).block_ids)
    if adaptive_tiny.cfg.partition == "bigram":
        for name, t in adaptive_tiny.bigram_tables().tensors().items():
            assert torch.equal(getattr(half, name), t), name


@pytest.fixture()
def bigram_folder(tmp_path, tiny_model_cfg, tiny_corpus):
    """A saved tiny bigram model whose table holds 512 pair slots."""
    from localist_core.experiments.train import make_model
    from localist_core.model.checkpoint import save_checkpoint
    cfg = dataclasses.replace(tiny_model_cfg, partition="bigram", bigram_pairs=512)
    model = make_model(cfg, tiny_corpus).eval()
    return save_checkpoint(tmp_path / "bigram", model, tiny_corpus.tokenizer)


def test_an_oversized_bigram_table_is_refused_before_it_is_read(bigram_folder, monkeypatch):
    """A config asking for more pairs than MODEL_SIZE_LIMITS, or a weights file whose table is
    bigger than its config says, is refused by name from the config and the header alone."""
    import json

    from safetensors.torch import load_file, save_file

    from localist_core.model import checkpoint
    from localist_core.model.checkpoint import CONFIG, WEIGHTS, CheckpointError, load_model
    tensors = load_file(str(bigram_folder / WEIGHTS))
    config = json.loads((bigram_folder / CONFIG).read_text())
    monkeypatch.setattr(checkpoint, "load_file", None)      # reading the weights would fail
    checkpoint.expected_shapes.cache_clear()
    huge = {**config, "model": {**config["model"], "bigram_pairs": 10**9}}
    (bigram_folder / CONFIG).write_text(json.dumps(huge))
    with pytest.raises(CheckpointError, match="bigram_pairs: 1,000,000,000 is over"):
        load_model(bigram_folder)
    (bigram_folder / CONFIG).write_text(json.dumps(config))
    tensors["bigram_codes"] = torch.full((4096,), 2**31 - 1, dtype=torch.int32)
    tensors["bigram_log2_pair"] = torch.zeros(4096)
    save_file(tensors, str(bigram_folder / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"bigram_codes has shape \[4096\], the config "
                                              r"implies \[512\]"):
        load_model(bigram_folder)


def test_a_bigram_table_out_of_order_is_refused(bigram_folder):
    from safetensors.torch import load_file, save_file

    from localist_core.model.checkpoint import WEIGHTS, CheckpointError, load_model
    tensors = load_file(str(bigram_folder / WEIGHTS))
    tensors["bigram_codes"] = tensors["bigram_codes"].flip(0).contiguous()
    save_file(tensors, str(bigram_folder / WEIGHTS))
    with pytest.raises(CheckpointError, match="sorted"):
        load_model(bigram_folder)


def test_a_bigram_model_without_its_table_says_what_is_missing(tiny_model_cfg, tokens):
    cfg = dataclasses.replace(tiny_model_cfg, partition="bigram", bigram_pairs=64)
    model = LocalistLM(cfg).eval()
    with pytest.raises(ValueError, match="needs the Kneser–Ney bigram tables"):
        model(tokens)
    with pytest.raises(ValueError, match="bigram tables of 64 pairs"):
        from localist_core.model.bigram import placeholder_tables
        LocalistLM(dataclasses.replace(cfg, bigram_pairs=65),
                   bigram=placeholder_tables(cfg.vocab_size, 64))


def _zipf_targets(n_classes: int, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, n_classes + 1, dtype=torch.float64)
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def test_adaptive_nll_in_fp32_is_torchs_adaptive_softmax():
    """The training head gives torch's per-target log-probs and gradients, every cluster hit."""
    torch.manual_seed(0)
    head = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 300, [20, 100], div_value=2.0)
    hidden = torch.randn(400, 16, requires_grad=True)
    y = _zipf_targets(300, 400)
    assert {int(c) for c in torch.bucketize(y, torch.tensor([20, 100]), right=True)} == {0, 1, 2}
    ref = -head(hidden, y).output
    ours = adaptive_nll(head, hidden, y)
    assert torch.equal(ours, ref)
    g_ref = torch.autograd.grad(ref.sum(), [hidden, *head.parameters()])
    g_ours = torch.autograd.grad(ours.sum(), [hidden, *head.parameters()])
    for a, b in zip(g_ref, g_ours):
        assert torch.allclose(a, b, atol=1e-6)


def test_adaptive_nll_bf16_matmuls_keep_softmax_in_fp32():
    torch.manual_seed(1)
    head = torch.nn.AdaptiveLogSoftmaxWithLoss(64, 3000, [200, 1000])
    hidden = torch.randn(512, 64)
    y = _zipf_targets(3000, 512, seed=1)
    with torch.no_grad():
        ref = -head(hidden, y).output
        low = adaptive_nll(head, hidden, y, matmul_dtype=torch.bfloat16)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05              # bf16 logits, fp32 normalisation
    assert abs(float(low.mean() - ref.mean())) < 2e-3
    assert not torch.equal(low, ref)                   # the matmuls really ran in bf16


def test_adaptive_nll_with_one_cluster_only_and_bad_targets():
    head = torch.nn.AdaptiveLogSoftmaxWithLoss(8, 50, [10, 30], div_value=2.0)
    hidden = torch.randn(5, 8)
    y = torch.tensor([0, 1, 2, 3, 9])                  # every target in the shortlist
    assert torch.equal(adaptive_nll(head, hidden, y), -head(hidden, y).output)
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        adaptive_nll(head, hidden, torch.tensor([0, 1, 2, 3, 50]))


def test_token_nll_bf16_matmuls_close_to_exact(trained_tiny, tokens):
    out = trained_tiny(tokens)
    exact = trained_tiny.token_nll(out.hidden, tokens)
    low = trained_tiny.token_nll(out.hidden, tokens, bf16_matmuls=True)
    assert low.shape == exact.shape == tokens.shape
    assert (low - exact).abs().max() < 0.05
