"""Interventions (docs/design.md, "Interventions"): cut a head's cross-block attention (two
variants) beside a control that cuts as much in-block attention at random; patch activations
from a clean prompt into a corrupted one; read the residual stream after each layer through the
model's own head (the logit lens). Each is built on ``run_with_hooks`` and returns numbers.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.attention import visible_keys
from ..model.blocks import same_block
from ..model.dial import Dial

# renormalise: the head's cross-block keys are masked before the softmax, so its attention is
# renormalised inside the query's block (what λ_f = 1 does, for this head alone).
# zero: the head's cross-block weights are set to 0 after the softmax and the rest is kept, so
# its rows sum to the in-block mass.
VARIANTS = ("renormalise", "zero")
TOP_K = 5
MAX_LENS_K = 20
MAX_RESAMPLES = 100_000


def check_heads(model, heads: Iterable) -> list[tuple[int, int]]:
    """``heads`` as a sorted list of distinct ``(layer, head)`` pairs of ``model``; a ValueError
    says what is wrong (at most every head of the model, each once)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    most = n_layers * n_heads
    if isinstance(heads, (str, bytes)):
        raise ValueError("heads must be (layer, head) pairs, e.g. [(0, 1), (1, 3)]")
    pairs = list(itertools.islice(iter(heads), most + 1))    # a huge list is refused unread
    if not pairs:
        raise ValueError("choose at least one (layer, head)")
    if len(pairs) > most:
        raise ValueError(f"more than {most} heads; this model has {n_layers} layers of "
                         f"{n_heads} heads")
    out = []
    for p in pairs:
        if (not isinstance(p, (tuple, list)) or len(p) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in p)):
            raise ValueError(f"a head is a (layer, head) pair of integers, got {p!r:.60}")
        layer, head = p
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(f"head ({layer}, {head}) is outside layers 0..{n_layers - 1} and "
                             f"heads 0..{n_heads - 1}")
        out.append((layer, head))
    if len(set(out)) != len(out):
        raise ValueError("a (layer, head) is repeated")
    return sorted(out)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r:.40}")


def _by_layer(model, heads: list[tuple[int, int]]) -> dict[int, Tensor]:
    """layer → ``[1, H, 1, 1]`` bool selecting the chosen heads of that layer."""
    out: dict[int, Tensor] = {}
    for layer, head in heads:
        sel = out.setdefault(layer, torch.zeros(model.cfg.n_heads, dtype=torch.bool))
        sel[head] = True
    dev = model.tok_emb.weight.device
    return {layer: sel.to(dev).view(1, -1, 1, 1) for layer, sel in out.items()}


def cross_block_hooks(model, heads, block_ids: Tensor, variant: str = "renormalise") -> list:
    """The forward hooks that cut the cross-block attention of ``heads`` (``check_heads``) on a
    batch with ``block_ids`` ``[B, T]``, as ``variant`` says (``VARIANTS``)."""
    _check_variant(variant)
    cross = ~same_block(block_ids).unsqueeze(1)                          # (B, 1, T, T)
    hooks = []
    for layer, sel in _by_layer(model, check_heads(model, heads)).items():
        cut = cross & sel                                                 # (B, H, T, T)
        if variant == "renormalise":    # −inf before the softmax: renormalised in the block
            hooks.append((f"blocks.{layer}.attn.hook_attn_scores",
                          lambda s, hook, cut=cut: s.masked_fill(cut, float("-inf"))))
        else:                           # 0 after the softmax: the in-block weights are kept
            hooks.append((f"blocks.{layer}.attn.hook_pattern",
                          lambda p, hook, cut=cut: p.masked_fill(cut, 0.0)))
    return hooks


class _Tally:
    """What a control removed against what it was asked to remove, summed over queries."""

    def __init__(self):
        self.wanted = 0.0
        self.removed = 0.0

    @property
    def matched(self) -> float:
        return 1.0 if self.wanted == 0 else self.removed / self.wanted


def random_in_block_hooks(model, heads, block_ids: Tensor, variant: str = "renormalise",
                          generator: torch.Generator | None = None,
                          tally: _Tally | None = None) -> list:
    """The control of ``cross_block_hooks``: from each sequence and chosen head, remove as much
    in-block attention as the head gives to other blocks over the whole sequence. In-block
    (query, key) weights are taken in a random order, each whole, the last in part, so the mass
    removed equals the cross-block mass (or all in-block mass where that is smaller; ``tally``
    sums both). ``zero`` keeps the rest as it is; ``renormalise`` rescales each row that lost
    something to sum to 1 (a row that lost all of it stays 0, as under ``zero``). Matched query
    by query instead, a head whose queries attend either almost all inside or almost all
    outside their block would have almost nothing to remove."""
    _check_variant(variant)
    inblock = (same_block(block_ids) & visible_keys(
        block_ids, model.cfg.noncausal_diagnostic)).unsqueeze(1)          # (B, 1, T, T)

    def hook(p: Tensor, _hook, sel: Tensor) -> Tensor:
        b, h, n, _ = p.shape
        flat, inside = p.reshape(b, h, n * n), inblock.reshape(-1, 1, n * n)
        target = flat.masked_fill(inside, 0.0).sum(-1, keepdim=True)     # (B, H, 1) cross mass
        w_in = flat.masked_fill(~inside, 0.0)                             # (B, H, T·T)
        u = torch.rand(flat.shape, generator=generator, device=p.device)
        order = u.masked_fill(~inside, 2.0).argsort(-1)                   # in-block pairs first
        w = w_in.gather(-1, order)
        before = w.cumsum(-1) - w                                          # mass taken earlier
        take = (target - before).clamp_min(0.0).minimum(w)
        removed = torch.zeros_like(flat).scatter(-1, order, take).view_as(p) * sel
        new = p - removed
        if variant == "renormalise":    # only rows that lost something: others stay exact
            touched = removed.sum(-1, keepdim=True) > 0
            left = new.sum(-1, keepdim=True)        # 0 where a row lost all its attention
            new = torch.where(touched, new / left.clamp_min(1e-30), p)
        if tally is not None:
            tally.wanted += float((target.unsqueeze(-1) * sel).sum())
            tally.removed += float(removed.sum())
        return new

    return [(f"blocks.{layer}.attn.hook_pattern",
             lambda p, h, sel=sel: hook(p, h, sel))
            for layer, sel in _by_layer(model, check_heads(model, heads)).items()]


def _targets(model, tokens: Tensor, targets) -> tuple[Tensor, Tensor]:
    """``(tokens, targets)``: the next tokens of ``tokens`` (the last position has none) when
    ``targets`` is None, else ``targets`` checked against the tokens' shape."""
    tokens = model.check_tokens(tokens)
    if targets is None:
        return tokens, tokens[:, 1:]
    targets = model.check_tokens(targets)
    if targets.shape != tokens.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must match tokens "
                         f"{tuple(tokens.shape)}")
    return tokens, targets


def _nll(model, hidden: Tensor, targets: Tensor) -> Tensor:
    return model.token_nll(hidden[:, :targets.shape[1]], targets)


@dataclass(frozen=True)
class Ablation:
    """One ablation of some heads' cross-block attention on a batch of text."""

    heads: tuple[tuple[int, int], ...]
    variant: str
    nll_clean: Tensor        # [B, T'] nats per target (T' = T − 1 for next-token targets)
    nll_ablated: Tensor      # [B, T']
    top_clean: Tensor        # [B, T, k] ids, best first
    top_ablated: Tensor      # [B, T, k]
    top_lp_clean: Tensor     # [B, T, k] their log-probs
    top_lp_ablated: Tensor   # [B, T, k]
    cross_mass: Tensor       # [n_heads] mean attention each head gave other blocks (clean run)

    @property
    def loss_change(self) -> Tensor:
        """``[B, T']`` nats: the ablated loss minus the clean loss, per target token."""
        return self.nll_ablated - self.nll_clean

    @property
    def top1_changed(self) -> Tensor:
        """``[B, T]`` bool: the most likely next word changed."""
        return self.top_clean[..., 0] != self.top_ablated[..., 0]


def cross_mass(model, tokens: Tensor, heads, dial: Dial = Dial(), partition=None,
               return_type: str | None = None) -> tuple[Tensor, Tensor | None]:
    """``[n_heads]``: the mean over queries of the attention each head of ``heads`` gives to
    keys in other blocks; beside it what ``run_with_cache`` returns for ``return_type``."""
    heads = check_heads(model, heads)
    names = {f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads}
    out, cache = model.run_with_cache(tokens, dial, names_filter=names, partition=partition,
                                      return_type=return_type)
    cross = ~same_block(model.partition_of(model.check_tokens(tokens), partition))
    return torch.stack([(cache[f"blocks.{layer}.attn.hook_pattern"][:, head] * cross)
                        .sum(-1).mean() for layer, head in heads]), out


@torch.no_grad()
def cross_block_ablation(model, tokens, heads, dial: Dial = Dial(), *,
                         variant: str = "renormalise", targets=None, partition=None,
                         k: int = TOP_K) -> Ablation:
    """Cut the cross-block attention of ``heads`` (``(layer, head)`` pairs) on ``tokens`` at
    ``dial``, as ``variant`` says, and compare with the clean run: the loss of every target
    (the next tokens unless ``targets`` ``[B, T]`` is given) and the top-``k`` next words at
    every position."""
    heads = check_heads(model, heads)
    if not 1 <= k <= MAX_LENS_K:
        raise ValueError(f"k must be in [1, {MAX_LENS_K}], got {k}")
    tokens, targets = _targets(model, tokens, targets)
    block_ids = model.partition_of(tokens, partition)
    mass, clean = cross_mass(model, tokens, heads, dial, partition, return_type="hidden")
    hooks = cross_block_hooks(model, heads, block_ids, variant)
    cut = model.run_with_hooks(tokens, dial, fwd_hooks=hooks, partition=partition,
                               return_type="hidden")
    lp_c, id_c = model.top_k(clean, k)
    lp_a, id_a = model.top_k(cut, k)
    return Ablation(tuple(heads), variant, _nll(model, clean, targets), _nll(model, cut, targets),
                    id_c, id_a, lp_c, lp_a, mass)


@dataclass(frozen=True)
class HeadScan:
    """Each head's cross-block ablation and its random in-block control, window by window."""

    heads: tuple[tuple[int, int], ...]
    variant: str
    clean: Tensor            # [W] mean NLL (nats) of each window
    ablated: Tensor          # [n_heads, W]
    control: Tensor          # [n_heads, W]
    cross_mass: Tensor       # [n_heads] mean cross-block attention per query, what both remove
    control_matched: Tensor  # [n_heads] the share of it the control found in-block to remove


@torch.no_grad()
def head_ablation_scan(model, inputs: Tensor, targets: Tensor, dial: Dial = Dial(), *,
                       heads=None, variant: str = "renormalise", batch_size: int = 16,
                       seed: int = 0, partition=None,
                       progress: Callable[[int], None] | None = None) -> HeadScan:
    """Ablate each head's cross-block attention alone (``heads``, default every head) on the
    windows ``inputs`` / ``targets`` ``[W, T]``, and beside it the control
    (``random_in_block_hooks``, drawn with ``seed``). ``progress`` is called with the number
    of windows just run, three times per window and head plus once per window."""
    _check_variant(variant)
    heads = check_heads(model, heads if heads is not None else itertools.product(
        range(model.cfg.n_layers), range(model.cfg.n_heads)))
    inputs, targets = _targets(model, inputs, targets)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    tick = progress or (lambda _n: None)
    gen = torch.Generator(device=inputs.device).manual_seed(seed)
    n, w = len(heads), inputs.shape[0]
    clean = torch.empty(w, dtype=torch.float64)
    ablated = torch.empty(n, w, dtype=torch.float64)
    control = torch.empty(n, w, dtype=torch.float64)
    mass = torch.zeros(n, dtype=torch.float64)
    tallies = [_Tally() for _ in heads]
    for lo in range(0, w, batch_size):
        x, y = inputs[lo:lo + batch_size], targets[lo:lo + batch_size]
        rows = slice(lo, lo + x.shape[0])
        block_ids = model.partition_of(x, partition)

        def nll(hooks, hidden=None, x=x, y=y):
            if hidden is None:
                hidden = model.run_with_hooks(x, dial, fwd_hooks=hooks, partition=partition,
                                              return_type="hidden")
            tick(x.shape[0])
            return model.token_nll(hidden, y).double().mean(-1)

        batch_mass, hidden = cross_mass(model, x, heads, dial, partition, return_type="hidden")
        mass += batch_mass.double() * x.shape[0]
        clean[rows] = nll([], hidden)
        for i, head in enumerate(heads):
            ablated[i, rows] = nll(cross_block_hooks(model, [head], block_ids, variant))
            control[i, rows] = nll(random_in_block_hooks(model, [head], block_ids, variant,
                                                         gen, tallies[i]))
    matched = torch.tensor([t.matched for t in tallies], dtype=torch.float64)
    return HeadScan(tuple(heads), variant, clean, ablated, control, mass / w, matched)


def perplexity_change_interval(base: Tensor, changed: Tensor, *, resamples: int = 2000,
                               level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """exp(mean ``changed``) − exp(mean ``base``), the change in perplexity, from per-window
    mean NLLs ``[W]`` (windows of equal length), with a paired percentile-bootstrap interval:
    windows drawn with replacement ``resamples`` times, the same draw for both."""
    base, changed = base.double().flatten(), changed.double().flatten()
    if base.shape != changed.shape or base.numel() < 2:
        raise ValueError("an interval over windows needs two or more windows, paired")
    if not 1 <= resamples <= MAX_RESAMPLES or not 0 < level < 1:
        raise ValueError(f"resamples must be in [1, {MAX_RESAMPLES}] and level in (0, 1)")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, base.numel(), (resamples, base.numel()), generator=gen)
    boot = changed[idx].mean(1).exp() - base[idx].mean(1).exp()
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(boot, q).tolist()
    return {"change": float(changed.mean().exp() - base.mean().exp()), "lo": lo, "hi": hi,
            "windows": base.numel(), "resamples": resamples, "level": level}


# -- activation patching ----------------------------------------------------------------------

@dataclass(frozen=True)
class Patching:
    """How much of the clean prompt's logit difference each patched activation restores in
    the corrupted run: 0 is the corrupted run, 1 the clean one."""

    answer: int              # the word the clean prompt predicts
    distractor: int          # the word the corrupted prompt predicts
    position: int            # where the logit difference is read
    clean_diff: float        # log p(answer) − log p(distractor), clean run
    corrupted_diff: float    # the same, corrupted run
    resid: Tensor            # [L, T] blocks.l.hook_resid_pre at one position patched
    heads: Tensor            # [L, H] blocks.l.attn.hook_z of one head, every position, patched


def _one_prompt(model, tokens, what: str) -> Tensor:
    t = model.check_tokens(tokens)
    if t.shape[0] != 1:
        raise ValueError(f"the {what} must be one prompt, got a batch of {t.shape[0]}")
    return t


@torch.no_grad()
def activation_patching(model, clean, corrupted, *, answer: int | None = None,
                        distractor: int | None = None, position: int = -1,
                        dial: Dial = Dial(), partition=None, batch_size: int = 32) -> Patching:
    """Patch the clean prompt's activations into the corrupted one, one at a time: the residual
    stream entering each layer at each position, and each head's ``hook_z`` at every
    position, and report the share of the logit difference ``log p(answer) − log
    p(distractor)`` at ``position`` that each restores. By default ``answer`` is the clean
    run's most likely word there and ``distractor`` the corrupted run's."""
    clean, corrupted = _one_prompt(model, clean, "clean prompt"), \
        _one_prompt(model, corrupted, "corrupted prompt")
    n = clean.shape[1]
    if corrupted.shape[1] != n:
        raise ValueError(f"the clean prompt has {n} tokens and the corrupted one "
                         f"{corrupted.shape[1]}; patching needs the same length")
    if not -n <= position < n:
        raise ValueError(f"position {position} is outside the prompt (0..{n - 1})")
    pos = position % n
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = [f"blocks.{lay}.hook_resid_pre" for lay in range(layers)] + \
        [f"blocks.{lay}.attn.hook_z" for lay in range(layers)]
    h_clean, cache = model.run_with_cache(clean, dial, names_filter=names, partition=partition,
                                          return_type="hidden")
    h_corr = model.run_with_hooks(corrupted, dial, partition=partition, return_type="hidden")
    answer = int(model.predict(h_clean[:, pos])[0]) if answer is None else answer
    distractor = int(model.predict(h_corr[:, pos])[0]) if distractor is None else distractor
    for word, what in ((answer, "answer"), (distractor, "distractor")):
        if not 0 <= word < model.cfg.vocab_size:
            raise ValueError(f"the {what} id {word} is outside the vocabulary")
    if answer == distractor:
        raise ValueError("the answer and the distractor are the same word; give both")

    def diff(hidden: Tensor) -> Tensor:                                 # [rows]
        lp = model.log_probs(hidden[:, pos:pos + 1])[:, 0]
        return (lp[:, answer] - lp[:, distractor]).double()

    d_clean, d_corr = float(diff(h_clean)), float(diff(h_corr))
    if abs(d_clean - d_corr) < 1e-6:
        raise ValueError("the two prompts give the same logit difference; nothing to restore")

    def patched(name: str, n_rows: int, edit) -> Tensor:
        """Share restored by each of ``n_rows`` patched copies of the corrupted prompt."""
        out = []
        for lo in range(0, n_rows, batch_size):
            rows = torch.arange(lo, min(lo + batch_size, n_rows))
            hook = (name, lambda act, _h, rows=rows: edit(act.clone(), rows))
            h = model.run_with_hooks(corrupted.expand(len(rows), n), dial, fwd_hooks=[hook],
                                     partition=partition, return_type="hidden")
            out.append((diff(h) - d_corr) / (d_clean - d_corr))
        return torch.cat(out)

    def put_position(act, rows, src):        # row i gets the clean activation at position i
        act[torch.arange(len(rows)), rows] = src[0, rows]
        return act

    def put_head(act, rows, src):            # row i gets the clean head i at every position
        act[torch.arange(len(rows)), :, rows] = src[0, :, rows].transpose(0, 1)
        return act

    resid = torch.stack([patched(f"blocks.{lay}.hook_resid_pre", n, lambda a, r, lay=lay:
                                 put_position(a, r, cache[f"blocks.{lay}.hook_resid_pre"]))
                         for lay in range(layers)])
    heads = torch.stack([patched(f"blocks.{lay}.attn.hook_z", n_heads, lambda a, r, lay=lay:
                                 put_head(a, r, cache[f"blocks.{lay}.attn.hook_z"]))
                         for lay in range(layers)])
    return Patching(answer, distractor, pos, d_clean, d_corr, resid, heads)


# -- the logit lens ---------------------------------------------------------------------------

@torch.no_grad()
def logit_lens(model, tokens, k: int = TOP_K, dial: Dial = Dial(), partition=None
               ) -> tuple[Tensor, Tensor]:
    """The top-``k`` next words read from the residual stream after each layer of one prompt,
    through the final LayerNorm and the model's own adaptive head: ``(log_probs, ids)``, each
    ``[layer, pos, k]``, best first. The last layer's row is the model's own prediction."""
    tokens = _one_prompt(model, tokens, "prompt")
    if not 1 <= k <= MAX_LENS_K:
        raise ValueError(f"k must be in [1, {MAX_LENS_K}], got {k}")
    names = [f"blocks.{lay}.hook_resid_post" for lay in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, dial, names_filter=names, partition=partition,
                                    return_type=None)
    lps, ids = zip(*(model.top_k(model.ln_final(cache[name][0]), k) for name in names))
    return torch.stack(lps), torch.stack(ids)
