"""Streamed evaluation: the windows it reads cover every target exactly once, and the results
carry every named metric."""
import math

import torch

from localist_core.analysis.evaluate import eval_windows, evaluate_stream, leak_test
from localist_core.analysis.metrics import METRIC_NAMES
from localist_core.model.dial import Dial


def test_eval_windows_cover_every_target_once():
    stream = torch.arange(1000)
    targets = torch.cat([y.flatten() for _, y in eval_windows(stream, 64, batch_size=4)])
    assert torch.equal(targets, stream[1:])


def test_evaluate_stream_records_the_fidelity_controls(trained_tiny, tiny_corpus):
    """The results carry every metric of METRIC_NAMES, the new controls included, each with its
    per-layer and per-head values; at λ = 1 (every mass in-block) lift = fidelity − baseline."""
    cfg = trained_tiny.cfg
    res = evaluate_stream(trained_tiny, tiny_corpus.valid, Dial(1.0), max_tokens=4 * cfg.n_ctx)
    att = res["attention"]
    assert tuple(att) == METRIC_NAMES
    for name in ("visible_in_block_keys", "uniform_pointer_fidelity", "pointer_fidelity_lift"):
        m = att[name]
        assert math.isfinite(m["mean"]) and len(m["per_layer"]) == cfg.n_layers
        assert len(m["per_head"]) == cfg.n_layers and len(m["per_head"][0]) == cfg.n_heads
    assert math.isclose(att["in_block_mass"]["mean"], 1.0, abs_tol=1e-5)
    assert math.isclose(att["pointer_fidelity_lift"]["mean"],
                        att["pointer_fidelity_mass"]["mean"]
                        - att["uniform_pointer_fidelity"]["mean"], abs_tol=1e-5)
    # The pattern-free controls are the same for every head.
    for name in ("visible_in_block_keys", "uniform_pointer_fidelity"):
        flat = [v for layer in att[name]["per_head"] for v in layer]
        assert max(flat) - min(flat) < 1e-9
    if cfg.partition == "fixed":       # windows of n_ctx, each with its partial last block
        b, n = cfg.block_size, cfg.n_ctx
        sizes = [b] * (n // b) + ([n % b] if n % b else [])
        want = sum(s * (s + 1) / 2 for s in sizes) / n
        assert math.isclose(att["visible_in_block_keys"]["mean"], want, rel_tol=1e-6)


def test_leak_test_runs_the_unchanged_tokens_once_per_setting(trained_tiny, tokens, monkeypatch):
    """Each dial setting runs the original tokens once and each cut point's changed copy once;
    a changed copy differs from the original only after its cut."""
    inputs = []
    real = trained_tiny.run_with_cache

    def counting(toks, dial, **kwargs):
        inputs.append(toks.clone())
        return real(toks, dial, **kwargs)
    monkeypatch.setattr(trained_tiny, "run_with_cache", counting)
    settings, cuts = [Dial(), Dial(0.5, 0.25, 2.0)], [0, 7, 20]
    res = leak_test(trained_tiny, tokens, settings, cuts)
    assert res["passed"] and res["checked"] == len(settings) * len(cuts)
    assert len(inputs) == len(settings) * (1 + len(cuts))
    original = [x for x in inputs if torch.equal(x, tokens)]
    assert len(original) == len(settings)
    changed = [x for x in inputs if not torch.equal(x, tokens)]
    for x, t in zip(changed, cuts * len(settings)):
        assert torch.equal(x[:, : t + 1], tokens[:, : t + 1])
        assert not torch.equal(x[:, t + 1:], tokens[:, t + 1:])
