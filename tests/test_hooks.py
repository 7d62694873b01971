"""Hooks that write (model/hooks.py, LocalistLM.run_with_hooks and hooks()): TransformerLens's
semantics, removal on every way out, refusal of a replacement that cannot stand in, and a
replaced pattern that reaches the output."""
from __future__ import annotations

import threading

import pytest
import torch

from localist_core.analysis.inspection import inference_partition
from localist_core.model.attention import HookPoint
from localist_core.model.dial import Dial
from localist_core.model.hooks import HookReplacementError

DIALS = [Dial(), Dial(locality=0.5), Dial(locality=1.0), Dial(attn_temperature=0.5),
         Dial(locality=0.3, rule_strength=2.0)]


def no_hooks_left(model) -> bool:
    return all(not m._forward_hooks for m in model.modules() if isinstance(m, HookPoint))


@pytest.mark.parametrize("dial", DIALS, ids=str)
def test_an_identity_hook_leaves_log_probs_bit_identical(trained_tiny, tokens, dial):
    ref, _ = trained_tiny.run_with_cache(tokens, dial)
    keep = trained_tiny.run_with_hooks(tokens, dial, fwd_hooks=[(lambda n: True,
                                                                 lambda a, h: None)])
    same = trained_tiny.run_with_hooks(tokens, dial, fwd_hooks=[(lambda n: True,
                                                                 lambda a, h: a.clone())])
    assert torch.equal(ref, keep) and torch.equal(ref, same)
    assert no_hooks_left(trained_tiny)


def test_a_hook_sees_its_name_and_a_predicate_picks_hooks(trained_tiny, tokens):
    seen = []
    trained_tiny.run_with_hooks(tokens, fwd_hooks=[
        (lambda n: n.endswith("hook_pattern"), lambda a, h: seen.append((h.name, a.shape))),
        ("hook_embed", lambda a, h: seen.append((h.name, a.shape)))], return_type=None)
    assert seen == [("hook_embed", (2, 32, 32)),
                    ("blocks.0.attn.hook_pattern", (2, 2, 32, 32)),
                    ("blocks.1.attn.hook_pattern", (2, 2, 32, 32))]


def test_hooks_are_gone_after_the_call_and_after_an_exception(trained_tiny, tokens):
    ref, _ = trained_tiny.run_with_cache(tokens)

    def boom(a, h):
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError, match="inside a hook"):
        trained_tiny.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_post", boom)])
    assert no_hooks_left(trained_tiny)
    with pytest.raises(RuntimeError, match="inside a hook"):
        with trained_tiny.hooks(fwd_hooks=[("blocks.0.attn.hook_z", boom)]):
            trained_tiny.run_with_cache(tokens)
    assert no_hooks_left(trained_tiny)
    assert torch.equal(trained_tiny.run_with_cache(tokens)[0], ref)


def test_the_context_manager_spans_runs_and_the_cache_holds_the_replacement(trained_tiny,
                                                                            tokens):
    zero_z = [("blocks.1.attn.hook_z", lambda a, h: torch.zeros_like(a))]
    with trained_tiny.hooks(fwd_hooks=zero_z):
        a, cache = trained_tiny.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")
        b = trained_tiny.run_with_hooks(tokens)
    assert torch.equal(a, b)
    assert not cache["blocks.1.attn.hook_z"].any()
    assert not torch.equal(a, trained_tiny.run_with_cache(tokens)[0])
    assert no_hooks_left(trained_tiny)


@pytest.mark.parametrize("bad, match", [
    (lambda a: a[:, :-1], "returned shape"),
    (lambda a: a.double(), "returned dtype"),
    (lambda a: a.tolist(), "returned a list"),
])
def test_a_replacement_that_cannot_stand_in_is_refused(trained_tiny, tokens, bad, match):
    with pytest.raises(HookReplacementError, match=match):
        trained_tiny.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern",
                                                        lambda a, h: bad(a))])
    assert no_hooks_left(trained_tiny)


@pytest.mark.parametrize("fwd_hooks, match", [
    ([("blocks.9.hook_resid_post", lambda a, h: None)], "no hook named"),
    ([("hook_embed", "not a function")], "not callable"),
    ([("hook_embed",)], "pair"),
    ([(3, lambda a, h: None)], "name or by a predicate"),
    ("hook_embed", "list of"),
    ([("hook_embed", lambda a, h: None)] * 5000, "at most"),
])
def test_malformed_hooks_are_refused_before_running(trained_tiny, tokens, fwd_hooks, match):
    with pytest.raises(ValueError, match=match):
        trained_tiny.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    assert no_hooks_left(trained_tiny)


def test_patching_the_last_resid_post_reproduces_the_source_prompt(trained_tiny, tokens):
    source, target = tokens[:1], tokens[1:]
    want, cache = trained_tiny.run_with_cache(source, names_filter="blocks.1.hook_resid_post")
    got = trained_tiny.run_with_hooks(target, fwd_hooks=[
        ("blocks.1.hook_resid_post", lambda a, h: cache[h.name].clone())])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.allclose(trained_tiny.run_with_hooks(target), want)


@pytest.mark.parametrize("dial", DIALS, ids=str)
@pytest.mark.parametrize("partition", [None, "fixed3"])
def test_a_replaced_pattern_changes_the_output(trained_tiny, tiny_corpus, tokens, dial,
                                               partition):
    part = (inference_partition(trained_tiny, tiny_corpus.tokenizer, "fixed", 3)
            if partition else None)
    ref, _ = trained_tiny.run_with_cache(tokens, dial, partition=part)

    def first_key(a, h):        # every query attends to the first token only
        out = torch.zeros_like(a)
        out[..., 0] = 1.0
        return out

    got = trained_tiny.run_with_hooks(tokens, dial, partition=part,
                                      fwd_hooks=[("blocks.1.attn.hook_pattern", first_key)])
    assert (got - ref).abs().max() > 1e-3


def test_a_hook_acts_only_in_the_thread_that_attached_it(trained_tiny, tokens):
    ref = trained_tiny(tokens).hidden
    other = {}
    with trained_tiny.hooks(fwd_hooks=[("blocks.1.hook_resid_post",
                                        lambda a, h: torch.zeros_like(a))]):
        thread = threading.Thread(target=lambda: other.setdefault("h", trained_tiny(tokens)))
        thread.start()
        thread.join()
        mine = trained_tiny(tokens).hidden
    assert torch.equal(other["h"].hidden, ref)
    assert not torch.equal(mine, ref)
