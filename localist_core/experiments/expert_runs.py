"""One model-level recruitment run as it is stored: the pool grown on the stream, the
same-compute single adapter, both and the base on held-out articles (routed by their prefix,
scored on the rest), what each expert took and its most over-represented words; and the routing
of a visitor's text (``experiments.experts`` has the design)."""
from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from .documents import Document, StateCache, document_states, prefix_length, segment_sums
from .experts import RecruitConfig, code_rows, recruit, train_single

TOP_WORDS = 12


def totals(bits: float, tokens: int) -> dict:
    """Total bits, bits per token and perplexity (2^(bits per token))."""
    bpt = bits / tokens if tokens else float("nan")
    return {"bits": bits, "tokens": tokens, "bits_per_token": bpt, "perplexity": 2.0 ** bpt}


def route(model, cache: StateCache, deltas: Tensor, part: str = "prefix") -> Tensor:
    """The expert (index into ``deltas``) that codes each document's ``part`` in fewest bits."""
    docs = torch.arange(cache.n_docs)
    lens = cache.lengths
    n = prefix_length(lens) if part == "prefix" else lens
    bits = code_rows(model, cache, cache.rows(docs, part), deltas)            # [K, rows]
    per_doc = torch.stack([segment_sums(b, n) for b in bits])                  # [K, D]
    return per_doc.argmin(0)


def heldout_bits(model, cache: StateCache, deltas: Tensor, routes: Tensor) -> float:
    """Bits of every held-out document's rest (after its prefix), each under its routed expert."""
    total = 0.0
    for k in routes.unique().tolist():
        rows = cache.rows((routes == k).nonzero().squeeze(1), "rest")
        total += float(code_rows(model, cache, rows, deltas[k:k + 1]).double().sum())
    return total


def over_represented(cache: StateCache, assign: Tensor, n_experts: int, words: list[str],
                     k: int = TOP_WORDS, prior: float = 1000.0) -> list[list[dict]]:
    """Each expert's ``k`` most over-represented words in its documents against the rest of the
    stream: the log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn
    2008; α_w = ``prior`` × the word's stream frequency), divided by its standard error
    (z-score). Words it uses fewer than twice are left out."""
    vocab = len(words)
    row_expert = assign.repeat_interleave(cache.lengths)
    y = torch.bincount(row_expert * vocab + cache.targets,
                       minlength=n_experts * vocab).view(n_experts, vocab).double()   # [K, V]
    everything = y.sum(0)
    alpha = prior * (everything + 0.01) / (everything.sum() + 0.01 * vocab)          # [V]
    rest = everything - y
    n, n_rest = y.sum(1, keepdim=True), rest.sum(1, keepdim=True)
    log_odds = (torch.log((y + alpha) / (n + prior - y - alpha))
                - torch.log((rest + alpha) / (n_rest + prior - rest - alpha)))
    z = log_odds / torch.sqrt(1 / (y + alpha) + 1 / (rest + alpha))
    z[y < 2] = -math.inf
    top = z.topk(min(k, vocab), dim=1)
    return [[{"word": words[int(i)], "z": float(v), "count": int(y[e, i])}
             for v, i in zip(top.values[e], top.indices[e]) if math.isfinite(v)]
            for e in range(n_experts)]


def lineage_deltas(parents: list[int | None], adapters: list[tuple[Tensor, Tensor] | None],
                   d_model: int) -> Tensor:
    """``[K, d, d]``: Σ A_a B_a over each expert's lineage, from each expert's parent (None for
    the base, which comes first) and its own (A, B) (None for the base)."""
    out: list[Tensor] = []
    for k, (parent, ab) in enumerate(zip(parents, adapters)):
        if parent is None:
            out.append(torch.zeros(d_model, d_model))
        else:
            if not 0 <= parent < k:
                raise ValueError(f"expert {k}'s parent {parent} does not come before it")
            out.append(out[parent] + ab[0] @ ab[1])
    return torch.stack(out)


MAX_ROUTE_TOKENS = 1024   # tokens of a visitor's text that are routed (README "Limits")


def route_text(model, tokenizer, text: str, deltas: Tensor) -> dict | None:
    """Which expert codes ``text`` (its first MAX_ROUTE_TOKENS tokens) in the fewest bits: the
    bits and bits per token under each, and the winner; None when it has no tokens."""
    ids = tokenizer.encode(text)
    cut = len(ids) > MAX_ROUTE_TOKENS
    ids = ids[:MAX_ROUTE_TOKENS]
    if not ids:
        return None
    cache = document_states(model, [Document("text", torch.tensor(ids))], tokenizer.eos_id)
    bits = code_rows(model, cache, torch.arange(len(ids)), deltas).double().sum(1)
    return {"tokens": len(ids), "cut": cut, "bits": bits.tolist(),
            "bits_per_token": (bits / len(ids)).tolist(), "expert": int(bits.argmin())}


# -- one run, as stored --------------------------------------------------------------------------

def run_recruitment(model, words: list[str], stream: StateCache, held: StateCache,
                    cfg: RecruitConfig, *, memo: dict | None = None, progress: bool = False
                    ) -> tuple[dict, dict[str, Tensor]]:
    """Recruit on ``stream``, train the same-compute single adapter, evaluate both and the base
    on ``held``, and say what each expert took. Returns the run as plain JSON values and its
    adapters (``expert.<id>.A``/``.B``, ``single.A``/``.B``) as tensors."""
    start = time.perf_counter()
    memo = {} if memo is None else memo
    rec = recruit(model, stream, cfg, memo=memo, progress=progress)
    single = train_single(model, stream, cfg, rec.steps)
    d = stream.hidden.shape[1]
    deltas = torch.stack([e.delta for e in rec.experts])
    routes = route(model, held, deltas)
    everyone = torch.zeros(held.n_docs, dtype=torch.long)
    if ("heldout-base", held.n_docs) not in memo:
        memo[("heldout-base", held.n_docs)] = heldout_bits(model, held, deltas[:1], everyone)
    rest_tokens = int((held.lengths - prefix_length(held.lengths)).sum())
    heldout = {"docs": held.n_docs, "prefix_tokens": int(prefix_length(held.lengths).sum()),
               "titles": held.titles, "routes": routes.tolist(),
               "base": totals(memo[("heldout-base", held.n_docs)], rest_tokens),
               "single": totals(heldout_bits(model, held, (single[0] @ single[1])[None],
                                             everyone), rest_tokens),
               "pool": totals(heldout_bits(model, held, deltas, routes), rest_tokens)}
    top = over_represented(stream, rec.assign, len(rec.experts), words)
    experts = []
    for e in rec.experts:
        mine = (rec.assign == e.id).nonzero().squeeze(1)
        experts.append({
            "id": e.id, "parent": e.parent, "recruited_at_doc": e.recruited_at,
            "savings_bits": e.savings_bits, "cost_bits": e.cost_bits,
            "params": 0 if e.A is None else 2 * d * cfg.rank, "docs": mine.tolist(),
            "titles": [stream.titles[i] for i in mine.tolist()],
            "tokens": int(stream.lengths[mine].sum()),
            "stream_bits": float(rec.final_bits[mine].sum()),
            "heldout_docs": int((routes == e.id).sum()), "top_words": top[e.id]})
    attempts, child = [], 0
    for a, at, ok in zip(rec.attempts, rec.attempt_at, rec.recruited):
        child += ok
        attempts.append({"doc_index": at, "parent": a.parent, "seed_doc": a.seed_doc,
                         "seed_title": stream.titles[a.seed_doc], "candidates": a.candidates,
                         "docs_moved": len(a.docs), "tokens_scored": len(a.scored_rows),
                         "savings_bits": a.savings_bits, "cost_bits": cfg.cost_bits(d),
                         "recruited": bool(ok), "child": child if ok else None,
                         "steps": a.steps})
    result = {
        "seed": cfg.seed, "bits_per_param": cfg.bits_per_param,
        "stream": {"docs": stream.n_docs, "tokens": len(stream.targets)},
        "experts": experts, "attempts": attempts,
        "stream_code": {"base_bits": float(rec.base_bits.sum()),
                        "arrival_bits": float(rec.arrival_bits.sum()),
                        "final_bits": float(rec.final_bits.sum()), "index_bits": rec.index_bits,
                        "model_bits": sum(e.cost_bits for e in rec.experts)},
        "single": {"steps": rec.steps}, "heldout": heldout,
        "seconds": time.perf_counter() - start}
    tensors = {"single.A": single[0], "single.B": single[1]}
    for e in rec.experts[1:]:
        tensors[f"expert.{e.id}.A"], tensors[f"expert.{e.id}.B"] = e.A, e.B
    return result, {k: v.float().contiguous() for k, v in tensors.items()}
