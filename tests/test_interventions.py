"""Interventions (analysis/interventions.py and ``localist ablate``): cross-block ablation and
its control, activation patching and the logit lens, on the tiny model and the shipped dial
checkpoint."""
from __future__ import annotations

import pytest
import torch

from localist_core.analysis import interventions as iv
from localist_core.cli import main
from localist_core.model.attention import visible_keys
from localist_core.model.blocks import same_block
from localist_core.model.dial import Dial
from localist_core.paths import REPO

DIAL_CKPT = REPO / "assets" / "checkpoints" / "dial"
ALL_TINY = [(0, 0), (0, 1), (1, 0), (1, 1)]
TEXT = ("the river crosses the old city , and the army builds a bridge near the sea after "
        "the war . in 1990 the committee describes the long road to the castle , where a "
        "young king finds a letter from his sister")


@pytest.fixture(scope="module")
def shipped_dial():
    from localist_core import load_model
    model, tok = load_model(DIAL_CKPT)
    return model.eval(), torch.tensor([tok.encode(TEXT)])


def patterns(model, tokens, dial, hooks, layer=1):
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(tokens, dial, names_filter=name, fwd_hooks=hooks,
                                    return_type=None)
    return cache[name]


@pytest.mark.parametrize("variant", iv.VARIANTS)
def test_at_full_locality_cutting_cross_block_attention_changes_nothing(
        trained_tiny, tokens, shipped_dial, variant):
    for model, toks in ((trained_tiny, tokens), shipped_dial):
        heads = [(lay, h) for lay in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
        a = iv.cross_block_ablation(model, toks, heads, Dial(locality=1.0), variant=variant)
        assert torch.equal(a.nll_clean, a.nll_ablated)
        assert torch.equal(a.top_clean, a.top_ablated) and not a.top1_changed.any()
        assert not a.cross_mass.any()


def test_at_zero_locality_cutting_a_head_changes_the_shipped_dial_model(shipped_dial):
    model, toks = shipped_dial
    changes = [iv.cross_block_ablation(model, toks, [(lay, h)], Dial(locality=0.0))
               .loss_change.abs().max() for lay in range(2) for h in range(4)]
    assert max(changes) > 1e-2


def test_the_two_variants_do_what_they_say(trained_tiny, tokens):
    dial = Dial(locality=0.3)
    block_ids = trained_tiny.partition_of(tokens)
    cross = ~same_block(block_ids)
    clean = patterns(trained_tiny, tokens, dial, [])
    renorm = patterns(trained_tiny, tokens, dial,
                      iv.cross_block_hooks(trained_tiny, [(1, 1)], block_ids, "renormalise"))
    zero = patterns(trained_tiny, tokens, dial,
                    iv.cross_block_hooks(trained_tiny, [(1, 1)], block_ids, "zero"))
    assert torch.equal(renorm[:, 0], clean[:, 0]) and torch.equal(zero[:, 0], clean[:, 0])
    assert not renorm[:, 1][cross].any() and not zero[:, 1][cross].any()
    torch.testing.assert_close(renorm[:, 1].sum(-1), torch.ones(2, 32))
    in_block = clean[:, 1].masked_fill(cross, 0.0)
    assert torch.equal(zero[:, 1], in_block)                      # the rest kept as it was
    torch.testing.assert_close(renorm[:, 1], in_block / in_block.sum(-1, keepdim=True))


def test_the_control_removes_as_much_in_block_attention(trained_tiny, tokens):
    dial = Dial()
    block_ids = trained_tiny.partition_of(tokens)
    inblock = same_block(block_ids) & visible_keys(block_ids)
    both = patterns(trained_tiny, tokens, dial, [])
    got, tallies = {}, {}
    for variant in iv.VARIANTS:       # the same seed draws the same keys for both variants
        tallies[variant] = iv._Tally()
        got[variant] = patterns(trained_tiny, tokens, dial, iv.random_in_block_hooks(
            trained_tiny, [(1, 1)], block_ids, variant, torch.Generator().manual_seed(0),
            tallies[variant]))
        assert torch.equal(got[variant][:, 0], both[:, 0])      # the other head is untouched
    clean, kept = both[:, 1], got["zero"][:, 1]
    want = torch.minimum(clean.masked_fill(inblock, 0).sum((-2, -1)),      # per sequence
                         clean.masked_fill(~inblock, 0).sum((-2, -1)))
    removed = clean - kept
    assert not removed.masked_fill(inblock, 0).any()                  # cross-block kept as is
    torch.testing.assert_close(removed.sum((-2, -1)), want, atol=1e-4, rtol=1e-4)
    assert (kept >= -1e-6).all() and (removed >= -1e-6).all()
    assert tallies["zero"].wanted > 0 and 0 < tallies["zero"].matched <= 1
    renorm, sums = got["renormalise"][:, 1], kept.sum(-1, keepdim=True)
    lost = (removed.sum(-1, keepdim=True) > 0).expand_as(kept)
    torch.testing.assert_close(renorm[lost], torch.where(sums > 0, kept / sums, 0)
                               .expand_as(kept)[lost])
    assert torch.equal(renorm[~lost], clean[~lost])


def test_the_head_scan_and_its_interval(trained_tiny, tokens):
    x, y = tokens[:, :-1], tokens[:, 1:]
    at_one = iv.head_ablation_scan(trained_tiny, x, y, Dial(locality=1.0), batch_size=1)
    assert torch.equal(at_one.ablated, at_one.clean.expand(4, -1))
    assert torch.equal(at_one.control, at_one.clean.expand(4, -1))
    ticks = []
    scan = iv.head_ablation_scan(trained_tiny, x, y, heads=[(1, 0)], variant="zero",
                                 progress=ticks.append)
    assert scan.heads == ((1, 0),) and sum(ticks) == 2 * 3
    d = iv.perplexity_change_interval(scan.clean, scan.ablated[0], resamples=200)
    want = float(scan.ablated[0].mean().exp() - scan.clean.mean().exp())
    assert d["change"] == pytest.approx(want) and d["lo"] <= d["hi"]
    with pytest.raises(ValueError, match="two or more windows"):
        iv.perplexity_change_interval(scan.clean[:1], scan.ablated[0, :1])


@pytest.mark.parametrize("heads, match", [
    ([], "at least one"),
    ([(0, 0)] * 5, "more than 4 heads"),
    ((((0, 0),) for _ in range(10**9)), "more than 4 heads"),       # refused unread
    ([(2, 0)], "outside"),
    ([(0, -1)], "outside"),
    ([(0, 0), (0, 0)], "repeated"),
    ([(0, True)], "pair of integers"),
    ("0.1", "pairs"),
])
def test_head_lists_are_bounded(trained_tiny, tokens, heads, match):
    with pytest.raises(ValueError, match=match):
        iv.cross_block_ablation(trained_tiny, tokens, heads)


def test_the_logit_lens_at_the_last_layer_is_the_models_prediction(trained_tiny, tokens):
    lp, ids = iv.logit_lens(trained_tiny, tokens[:1], k=3, dial=Dial(locality=0.4))
    assert lp.shape == ids.shape == (2, 32, 3)
    hidden = trained_tiny.run_with_hooks(tokens[:1], Dial(locality=0.4), return_type="hidden")
    want_lp, want_ids = trained_tiny.top_k(hidden[0], 3)
    assert torch.equal(ids[-1], want_ids) and torch.equal(lp[-1], want_lp)
    assert torch.equal(ids[-1, :, 0], trained_tiny.predict(hidden)[0])
    with pytest.raises(ValueError, match="one prompt"):
        iv.logit_lens(trained_tiny, tokens)
    with pytest.raises(ValueError, match="k must be"):
        iv.logit_lens(trained_tiny, tokens[:1], k=10**6)


def test_patching_restores_exactly_where_the_prompts_differ(trained_tiny, tokens):
    clean = tokens[:1, :12].clone()
    corrupted = clean.clone()
    corrupted[0, 4] = (clean[0, 4] + 7) % trained_tiny.cfg.vocab_size
    p = iv.activation_patching(trained_tiny, clean, corrupted, answer=1, distractor=2)
    assert p.resid.shape == (2, 12) and p.heads.shape == (2, 2)
    # Layer 0's input at the changed word makes the corrupted run the clean one; elsewhere
    # the two inputs are the same, so nothing is restored (up to the rounding of a batched
    # run), and before the changed word nothing later in layer 1 can matter either.
    assert p.resid[0, 4].item() == pytest.approx(1.0, abs=1e-4)
    assert p.resid[0].abs().sum() - p.resid[0, 4].abs() < 1e-4
    assert p.resid[1, :4].abs().max() < 1e-4 and torch.isfinite(p.heads).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"corrupted": "short"}, "same length"),
    ({"clean": "batch"}, "one prompt"),
    ({"answer": 1, "distractor": 1}, "same word"),
    ({"answer": 10**9, "distractor": 1}, "outside the vocabulary"),
    ({"position": 99}, "outside the prompt"),
    ({"corrupted": "same", "answer": 1, "distractor": 2}, "nothing to restore"),
])
def test_patching_inputs_are_checked(trained_tiny, tokens, kwargs, match):
    args = {"clean": tokens[:1, :8], "corrupted": tokens[1:, :8], "answer": 1, "distractor": 2}
    args.update(kwargs)
    args["clean"] = tokens[:, :8] if args["clean"] == "batch" else args["clean"]
    args["corrupted"] = {"short": tokens[1:, :7], "same": tokens[:1, :8]}.get(
        args["corrupted"], args["corrupted"]) if isinstance(args["corrupted"], str) \
        else args["corrupted"]
    clean, corrupted = args.pop("clean"), args.pop("corrupted")
    with pytest.raises(ValueError, match=match):
        iv.activation_patching(trained_tiny, clean, corrupted, **args)


def test_the_ablate_command_on_a_tiny_checkpoint(tiny_dial_root, tiny_data_dir, capsys):
    ckpt = str(tiny_dial_root / "tiny-dial")
    assert main(["ablate", "--checkpoint", ckpt, "--data-dir", str(tiny_data_dir),
                 "--windows", "3", "--variant", "zero"]) == 0
    out = capsys.readouterr().out
    assert "3 validation windows of 32 tokens" in out and "bootstrap" in out
    rows = [line.split() for line in out.splitlines() if line[:5].strip() in
            ("0.0", "0.1", "1.0", "1.1")]
    assert len(rows) == 4


@pytest.mark.parametrize("argv, match", [
    (["--heads", "5.0"], "outside layers"),
    (["--windows", "1000"], "the validation split holds"),
])
def test_the_ablate_command_refuses_in_one_line(tiny_dial_root, tiny_data_dir, capsys, argv,
                                                match):
    ckpt = str(tiny_dial_root / "tiny-dial")
    assert main(["ablate", "--checkpoint", ckpt, "--data-dir", str(tiny_data_dir),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1
