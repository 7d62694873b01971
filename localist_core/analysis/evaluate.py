"""Evaluate a model at one dial setting: perplexity, accuracy and every attention metric
(docs/design.md, "Metrics and their controls"), averaged over all query positions, then over
heads and layers, keeping per-layer/head values; and the leak test.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor

from ..model.blocks import block_starts
from ..model.dial import Dial
from ..model.transformer import autocast_ctx
from .metrics import attention_metrics, causal_entropy_ceiling


def eval_windows(stream: Tensor, n_ctx: int, batch_size: int = 64):
    """Non-overlapping windows covering every target once; yields ``(inputs, targets)`` batches.

    The last, shorter window is yielded on its own so no token is dropped.
    """
    n_full = (len(stream) - 1) // n_ctx
    if n_full:
        x = stream[: n_full * n_ctx].view(n_full, n_ctx)
        y = stream[1: n_full * n_ctx + 1].view(n_full, n_ctx)
        for i in range(0, n_full, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
    rest = len(stream) - 1 - n_full * n_ctx
    if rest > 0:
        start = n_full * n_ctx
        yield (stream[start:start + rest].unsqueeze(0),
               stream[start + 1:start + rest + 1].unsqueeze(0))


def head_summary(per_head: Tensor) -> dict:
    """The one reduction of a metric's ``[layer, head]`` values (each already a mean over
    queries): ``{"mean", "per_layer", "per_head"}``, plain numbers for tables and JSON."""
    return {"mean": float(per_head.mean()), "per_layer": per_head.mean(1).tolist(),
            "per_head": per_head.tolist()}


class _Accumulator:
    """Running sums per metric, per layer and head."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, layer_metrics: list[dict[str, Tensor]]) -> None:
        for name in layer_metrics[0]:
            stacked = torch.stack([m[name].double().sum((0, 2)) for m in layer_metrics])  # (L, H)
            self.sums[name] = self.sums.get(name, 0) + stacked
        first = next(iter(layer_metrics[0].values()))
        self.count += first.shape[0] * first.shape[2]

    def result(self) -> dict[str, dict]:
        """Every metric's ``head_summary``, averaged over all queries added."""
        return {name: head_summary(s / max(self.count, 1)) for name, s in self.sums.items()}


def attention_summary(model, tokens: Tensor, patterns: list[Tensor], block_ids: Tensor,
                      block_size: int | None = None,
                      anchors: Tensor | None = None) -> list[dict[str, Tensor]]:
    """Per-layer metric dicts for one batch. ``block_size`` sets the width of the recent-b and
    shifted-block controls; ``anchors`` is ``model.anchors_for(tokens, block_ids)``, computed
    here unless the caller has it already."""
    if anchors is None:
        anchors = model.anchors_for(tokens, block_ids)
    b = block_size or model.cfg.block_size
    ncd = bool(model.cfg.noncausal_diagnostic)
    return [attention_metrics(p.float(), block_ids, anchors, b, noncausal_diagnostic=ncd)
            for p in patterns]


@torch.no_grad()
def evaluate_stream(model, stream: Tensor, dial: Dial = Dial(), *, max_tokens: int | None = None,
                    batch_size: int = 64, with_attention: bool = True,
                    by_position_in_block: bool = False, progress=None, bf16: bool = False,
                    partition=None, block_size: int | None = None) -> dict:
    """Perplexity, accuracy and attention metrics of ``model`` on a token stream at ``dial``.

    ``max_tokens`` evaluates a prefix (for quick looks); ``progress`` is an optional callable
    taking the number of targets just scored (e.g. a tqdm ``update``). ``bf16`` runs the
    decoder under bf16 autocast (the adaptive head stays fp32); the default is exact fp32, and
    ``bench.evaluate`` measures what bf16 costs in perplexity. ``partition`` re-blocks the text
    at inference (see ``inspection.inference_partition``); None keeps the trained one.
    ``block_size`` sets the recent-b and shifted-block controls (default: the model's).
    The windows go to the model's device; every figure comes back as a plain number.
    """
    if max_tokens is not None:
        stream = stream[: max_tokens + 1]
    was_training = model.training
    model.eval()
    nll_sum, correct, count = 0.0, 0, 0
    pos_nll, pos_correct, pos_count = defaultdict(float), defaultdict(int), defaultdict(int)
    acc = _Accumulator()
    n_ctx = model.cfg.n_ctx
    device = model.tok_emb.weight.device
    try:
        for x, y in eval_windows(stream, n_ctx, batch_size):
            x, y = x.to(device), y.to(device)
            with autocast_ctx(bf16, device.type):
                out = model(x, dial, partition=partition)
            nll = model.token_nll(out.hidden, y)
            pred = model.predict(out.hidden)  # exact argmax; tails only where needed
            hit = pred == y
            nll_sum += float(nll.double().sum())
            correct += int(hit.sum())
            count += y.numel()
            if by_position_in_block:
                pib = _position_in_block(out.block_ids)
                for p in pib.unique().tolist():
                    sel = pib == p
                    pos_nll[p] += float(nll[sel].double().sum())
                    pos_correct[p] += int(hit[sel].sum())
                    pos_count[p] += int(sel.sum())
            if with_attention:
                acc.add(attention_summary(model, x, out.patterns, out.block_ids, block_size))
            if progress is not None:
                progress(y.numel())
    finally:
        model.train(was_training)
    mean_nll = nll_sum / max(count, 1)
    result = {
        "dial": dial.as_dict(),
        "notices": list(dial.notices),
        "tokens": count,
        "nll": mean_nll,
        "perplexity": math.exp(mean_nll),
        "accuracy": correct / max(count, 1),
        "entropy_ceiling_bits": causal_entropy_ceiling(n_ctx),
    }
    if with_attention:
        result["attention"] = acc.result()
    if by_position_in_block:
        result["by_position_in_block"] = {
            int(p): {"tokens": pos_count[p], "perplexity": math.exp(pos_nll[p] / pos_count[p]),
                     "accuracy": pos_correct[p] / pos_count[p]} for p in sorted(pos_count)}
    return result


def _position_in_block(block_ids: Tensor) -> Tensor:
    """0 for the first token of each block, 1 for the next, …, ``[B, T]``."""
    n = block_ids.shape[-1]
    pos = torch.arange(n, device=block_ids.device).expand_as(block_ids)
    starts = block_starts(block_ids)
    start_pos = torch.where(starts, pos, torch.zeros_like(pos)).cummax(-1).values
    return pos - start_pos


@torch.no_grad()
def leak_test(model, tokens: Tensor, settings: list[Dial] | None = None,
              cut_points: list[int] | None = None, atol: float = 1e-5, seed: int = 0) -> dict:
    """The leak test: replace every token after position t by random tokens; log-probs and patterns
    at positions ≤ t must not change (to ``atol``) for every dial setting.

    Returns ``{"passed", "max_abs_diff", "checked"}``; a causal model passes, the non-causal
    diagnostic mode fails.
    """
    tokens = model.check_tokens(tokens)
    n = tokens.shape[1]
    settings = settings or [Dial(lam, tau, gam) for lam in (0.0, 0.5, 1.0)
                            for tau in (0.25, 1.0, 4.0) for gam in (0.0, 2.0)]
    cut_points = cut_points or sorted({0, n // 3, n // 2, n - 2} - {-1})
    gen = torch.Generator().manual_seed(seed)
    changed_after = []                      # (t, tokens with every one after t replaced)
    for t in cut_points:
        if not 0 <= t < n - 1:
            continue
        changed = tokens.clone()
        changed[:, t + 1:] = torch.randint(0, model.cfg.vocab_size, changed[:, t + 1:].shape,
                                           generator=gen)
        changed_after.append((t, changed))
    only = lambda name: name.endswith("hook_pattern")  # noqa: E731
    worst, checked = 0.0, 0
    for dial in settings if changed_after else ():
        lp_a, ca = model.run_with_cache(tokens, dial, names_filter=only)   # once per setting
        for t, changed in changed_after:
            lp_b, cb = model.run_with_cache(changed, dial, names_filter=only)
            diffs = [(lp_a[:, : t + 1] - lp_b[:, : t + 1]).abs().max()]
            for name in ca:                                 # (B, H, T, T) each
                diffs.append((ca[name][:, :, : t + 1] - cb[name][:, :, : t + 1]).abs().max())
            worst = max(worst, float(torch.stack(diffs).max()))
            checked += 1
    return {"passed": worst <= atol, "max_abs_diff": worst, "checked": checked}
