"""WikiText articles as documents, and the base model's final hidden states of every token of
them, computed once (docs/design.md "Model-level recruitment"; ``experiments.experts``).

A document is read as its own sequence behind an ``<eos>``, so its first word is coded too and no
context crosses an article boundary. A document longer than n_ctx is read in windows of n_ctx
tokens that advance by ``stride`` (default n_ctx/2): a token after the first window comes from the
window where it has at least n_ctx − stride earlier tokens of its document as context.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..model.dial import Dial
from .data import encode_lines

# A WikiText article starts at a line " = Title = " (one "="); " = = Section = = " does not.
HEADING = re.compile(r"^\s*=\s+(?!=)(.*?\S)\s+=\s*$")
MIN_DOC_TOKENS = 64          # shorter articles are left out (the held-out rest needs ≥ 32)
PREFIX_FRACTION, MIN_PREFIX = 0.25, 32


@dataclass(frozen=True)
class Document:
    title: str
    tokens: Tensor           # [n] long: the article's words, one <eos> per line


def articles(lines: list[str], tokenizer, min_tokens: int = MIN_DOC_TOKENS,
             max_tokens: int | None = None) -> list[Document]:
    """The articles of a split's ``lines`` in file order, each from its heading line to the next
    (lines before the first heading join the first article). Kept: articles of at least
    ``min_tokens`` tokens, each cut to its first ``max_tokens``."""
    starts = [i for i, line in enumerate(lines) if HEADING.match(line)]
    if not starts:
        return []
    bounds = [0] + starts[1:] + [len(lines)]
    docs = []
    for s, a, b in zip(starts, bounds, bounds[1:]):
        tokens = encode_lines(tokenizer, lines[a:b])[:max_tokens]
        if len(tokens) >= min_tokens:
            docs.append(Document(HEADING.match(lines[s]).group(1), tokens))
    return docs


# -- the base's hidden states, once ------------------------------------------------------------

@dataclass
class StateCache:
    """The base's final hidden states of many documents, one row per token, documents one after
    another: document i is rows ``offsets[i]:offsets[i+1]``."""

    hidden: Tensor           # [N, d] fp16: the state that predicts each token
    targets: Tensor          # [N] long: the token itself
    offsets: Tensor          # [D + 1] long
    titles: list[str]

    @property
    def n_docs(self) -> int:
        return len(self.titles)

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def rows(self, docs: Tensor, part: str = "all") -> Tensor:
        """Row indices of ``docs`` in order: their ``"all"``, ``"first"`` half (⌊n/2⌋ tokens),
        ``"second"`` half, ``"prefix"`` (routing part of a held-out document) or ``"rest"``."""
        if part not in ("all", "first", "second", "prefix", "rest"):
            raise ValueError(f"part must be all, first, second, prefix or rest, got {part!r}")
        start, n = self.offsets[docs], self.lengths[docs]
        cut = {"first": n // 2, "second": n // 2, "prefix": prefix_length(n),
               "rest": prefix_length(n)}.get(part, torch.zeros_like(n))
        if part in ("first", "prefix"):
            return ranges(start, start + cut)
        return ranges(start + cut, start + n)


def prefix_length(n: Tensor) -> Tensor:
    """Tokens a held-out document is routed by: 25% of ``n``, at least 32, and never all."""
    return torch.minimum(torch.clamp(torch.ceil(n * PREFIX_FRACTION).long(), min=MIN_PREFIX),
                         n - 1)


def ranges(starts: Tensor, ends: Tensor) -> Tensor:
    """The concatenation of ``arange(s, e)`` for each pair, without a Python loop.

    >>> ranges(torch.tensor([0, 10]), torch.tensor([2, 13])).tolist()
    [0, 1, 10, 11, 12]
    """
    lens = (ends - starts).clamp(min=0)
    shift = starts - (torch.cumsum(lens, 0) - lens)       # start minus the flat position
    return torch.repeat_interleave(shift, lens) + torch.arange(int(lens.sum()))


def segment_sums(values: Tensor, lens: Tensor) -> Tensor:
    """Sums of consecutive segments of ``values`` of lengths ``lens``, in float64."""
    seg = torch.repeat_interleave(torch.arange(len(lens)), lens)
    return torch.zeros(len(lens), dtype=torch.float64).index_add_(0, seg, values.double())


def windows(n: int, n_ctx: int, stride: int) -> tuple[int, Tensor]:
    """How a document of ``n`` tokens is read: (number of windows, the flat positions
    ``window·n_ctx + j`` whose states are kept, one per token in order). Window w starts at token
    w·stride; the first keeps all its positions, each later one its last ``stride``."""
    count = 1 if n <= n_ctx else 1 + math.ceil((n - n_ctx) / stride)
    first = torch.arange(min(n, n_ctx))
    w = torch.arange(1, count).repeat_interleave(stride)
    j = torch.arange(n_ctx - stride, n_ctx).repeat(count - 1)
    later = w * n_ctx + j
    return count, torch.cat([first, later[: n - len(first)]])


@torch.no_grad()
def document_states(model, docs: list[Document], eos: int, stride: int | None = None,
                    batch: int = 32, progress: bool = False, desc: str = "hidden states"
                    ) -> StateCache:
    """The base's final hidden states of every token of ``docs`` (see the module docstring for
    the windows; ``eos`` is the tokenizer's ``<eos>`` id), in batches of ``batch`` windows at
    ``Dial()``."""
    n_ctx = model.cfg.n_ctx
    stride = stride or max(1, n_ctx // 2)
    if not 1 <= stride <= n_ctx:
        raise ValueError(f"stride must be in [1, {n_ctx}], got {stride}")
    if not docs or any(len(d.tokens) == 0 for d in docs):
        raise ValueError("document_states needs documents of at least one token")
    wins, keep, base = [], [], 0
    for doc in docs:
        n = len(doc.tokens)
        count, kept = windows(n, n_ctx, stride)
        inputs = torch.cat([torch.tensor([eos]), doc.tokens[:-1]])        # [n]: <eos> first
        padded = torch.full((n_ctx + (count - 1) * stride,), eos)
        padded[:n] = inputs                                               # right padding: causal
        wins.append(padded.unfold(0, n_ctx, stride))                      # [count, n_ctx]
        keep.append(kept + base * n_ctx)
        base += count
    all_wins, keep = torch.cat(wins), torch.cat(keep)                     # keep is ascending
    out = torch.empty(len(keep), model.cfg.d_model, dtype=torch.float16)
    done = 0
    for b in tqdm(range(0, len(all_wins), batch), disable=not progress, desc=desc, unit="batch"):
        h, _ = model.run_with_cache(all_wins[b:b + batch], Dial(), return_type="hidden",
                                    names_filter=[])                      # [B, n_ctx, d]
        lo, hi = torch.searchsorted(keep, torch.tensor([b * n_ctx, (b + batch) * n_ctx]))
        out[done:done + hi - lo] = h.reshape(-1, h.shape[-1])[keep[lo:hi] - b * n_ctx].half()
        done += int(hi - lo)
    lens = torch.tensor([len(d.tokens) for d in docs], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lens, 0)])
    return StateCache(out, torch.cat([d.tokens for d in docs]), offsets, [d.title for d in docs])
