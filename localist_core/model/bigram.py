"""Block recruitment that reads the words: the Kneser–Ney bigram tables of a training split and
the ``bigram`` partition they drive (docs/design.md, "Blocks, partitions and anchors").

The tables travel with a model as persistent buffers (``TABLE_NAMES``), so a checkpoint needs
nothing else; ``read_table_file`` reads the same tensors from a file of their own (the shipped
table of the WikiText-2 vocabulary, ``scripts/bigram_table.py``), bounded before it is read.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from .config import BIGRAM_MAX_VOCAB, MODEL_SIZE_LIMITS
from .files import (
    UnsafeFileError,
    atomic_write,
    check_safetensors_file,
    checked_size,
    safetensors_writer,
)

# Interpolated Kneser–Ney's absolute discount (Chen & Goodman's usual value).
KN_DISCOUNT = 0.75
# Pairs seen fewer times in training are not stored (their discounted mass moves to the
# backoff weight, so each context still sums to 1): WikiText-2 has 619,592 distinct bigrams,
# 205,744 of them seen at least twice.
BIGRAM_MIN_COUNT = 2
# The code of an empty slot: above every pair code, since prev·V + next < V² ≤ 2³¹ − 1 for
# V ≤ BIGRAM_MAX_VOCAB, so the codes stay sorted and no lookup ever lands on a slot.
PAD_CODE = 2**31 - 1
# The tensors of a table, as the model's buffers and a table file name them:
# sorted pair codes prev·V + next [P] int32; log2 P_KN(next | prev) of each stored pair [P];
# log2 of each word's backoff weight [V]; log2 P_cont [V]; log2 P_uni [V] (float32).
TABLE_NAMES = ("bigram_codes", "bigram_log2_pair", "bigram_log2_backoff", "bigram_log2_cont",
               "bigram_log2_uni")
# Limits (README "Limits"): a table file is refused unread above this size (the shipped one is
# 1.4 MB; one of MODEL_SIZE_LIMITS["bigram_pairs"] pairs and BIGRAM_MAX_VOCAB words is 8.6 MB).
MAX_TABLE_FILE_BYTES = 16 * 2**20
# The metadata key of a table file's safetensors header (``write_table_file``).
TABLE_META = "localist_bigram_table"


@dataclass(frozen=True)
class BigramTables:
    """An interpolated Kneser–Ney bigram model of a training split, as lookup tables.

    P_KN(v | w) = max(c(w,v) − D, 0)/c(w) + γ(w)·P_cont(v) for a stored pair (w, v), and
    γ(w)·P_cont(v) for any other; a word never seen as a predecessor has γ = 1 (P_cont alone).
    ``log2_pair`` holds the first, ``log2_backoff`` log2 γ, ``log2_cont`` log2 P_cont and
    ``log2_uni`` log2 P_uni, the add-one unigram (``kn_bigram_tables`` states each term).
    """

    codes: Tensor          # [P] int32, sorted; PAD_CODE marks an empty slot
    log2_pair: Tensor      # [P] float32
    log2_backoff: Tensor   # [V] float32
    log2_cont: Tensor      # [V] float32
    log2_uni: Tensor       # [V] float32

    @property
    def vocab_size(self) -> int:
        return int(self.log2_uni.shape[0])

    def tensors(self) -> dict[str, Tensor]:
        """The tables by their buffer names (``TABLE_NAMES``)."""
        return dict(zip(TABLE_NAMES, (self.codes, self.log2_pair, self.log2_backoff,
                                      self.log2_cont, self.log2_uni)))

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], where: str = "the bigram table") -> BigramTables:
        """Tables from tensors named as ``TABLE_NAMES``, checked: dtypes, shapes, sorted codes
        in range, finite log-probabilities ≤ 0. Raises ValueError naming ``where``."""
        missing = [n for n in TABLE_NAMES if n not in t]
        if missing:
            raise ValueError(f"{where}: missing tensors {missing}")
        tab = cls(*(t[n] for n in TABLE_NAMES))
        problem = tab._problem()
        if problem:
            raise ValueError(f"{where}: {problem}")
        return tab

    def _problem(self) -> str | None:
        v, codes = self.vocab_size, self.codes
        if codes.dtype != torch.int32 or codes.dim() != 1:
            return "pair codes must be a 1-D int32 tensor"
        if self.log2_pair.shape != codes.shape:
            return f"{len(self.log2_pair)} pair log-probabilities for {len(codes)} pair codes"
        for name in ("log2_pair", "log2_backoff", "log2_cont", "log2_uni"):
            x = getattr(self, name)
            if x.dtype != torch.float32 or x.dim() != 1:
                return f"{name} must be a 1-D float32 tensor"
            if not bool(torch.isfinite(x).all()) or bool((x > 1e-4).any()):
                return f"{name} must hold finite log-probabilities ≤ 0"
        if self.log2_backoff.shape != (v,) or self.log2_cont.shape != (v,):
            return "the per-word tables must all have one entry per word"
        if not 4 <= v <= BIGRAM_MAX_VOCAB:
            return f"vocabulary of {v:,} words; the pair codes need 4 ≤ V ≤ {BIGRAM_MAX_VOCAB:,}"
        c64 = codes.long()
        steps = (c64[1:] > c64[:-1]) | ((c64[1:] == PAD_CODE) & (c64[:-1] == PAD_CODE))
        if not bool(steps.all()):
            return "pair codes must be sorted and distinct"
        real = codes[codes != PAD_CODE]
        if len(real) and (int(real.min()) < 0 or int(real.max()) >= v * v):
            return "a pair code lies outside the vocabulary"
        return None

    def log2_kn(self, prev: Tensor, nxt: Tensor) -> Tensor:
        """log2 P_KN(nxt | prev), elementwise (any shape, long ids): a binary search of the
        sorted pair codes, and the backoff γ(prev)·P_cont(nxt) where the pair is not stored."""
        dev = prev.device
        query = (prev * self.vocab_size + nxt).to(torch.int32)
        backoff = self.log2_backoff.to(dev)[prev] + self.log2_cont.to(dev)[nxt]
        if self.codes.numel() == 0:
            return backoff
        codes = self.codes.to(dev)
        idx = torch.searchsorted(codes, query.flatten()).clamp(max=len(codes) - 1)
        idx = idx.view_as(query)
        hit = codes[idx] == query
        return torch.where(hit, self.log2_pair.to(dev)[idx], backoff)

    def log2_unigram(self, ids: Tensor) -> Tensor:
        """log2 P_uni, elementwise."""
        return self.log2_uni.to(ids.device)[ids]

    def is_set(self) -> bool:
        """False for the placeholder a model holds before its tables are built or loaded (all
        zeros: no real table gives any word P_uni = 1)."""
        return bool((self.log2_uni < 0).all())


def kn_bigram_tables(ids: np.ndarray | Tensor, vocab_size: int, capacity: int | None = None,
                     discount: float = KN_DISCOUNT,
                     min_count: int = BIGRAM_MIN_COUNT) -> BigramTables:
    """The interpolated Kneser–Ney bigram model of a token stream (a training split), vectorised.

    With c(w, v) the count of the pair "w then v", c(w) = Σ_v c(w, v), N1+(w•) the number of
    distinct successors of w, N1+(•v) the number of distinct predecessors of v, N1+(••) the
    number of distinct pairs and T the number of words with N1+(•v) > 0:

    - P_KN(v | w) = max(c(w,v) − D, 0)/c(w) + γ(w)·P_cont(v), with D = ``discount`` and the
      backoff weight γ(w) = D·N1+(w•)/c(w), the mass the discount took from w's pairs;
    - P_cont(v) = (max(N1+(•v) − D, 0) + D·T/V)/N1+(••): the continuation probability, itself
      discounted towards the uniform 1/V as interpolated KN's recursion does, so no word has
      probability 0 (a word never seen after another would otherwise cost infinite bits);
    - a word never seen as a predecessor has γ = 1: P_KN(v | w) = P_cont(v);
    - P_uni(v) = (c(v) + 1)/(N + V), the add-one unigram over the N tokens, codes a word at the
      start of a fresh block.

    Pruning: only pairs seen at least ``min_count`` times are stored, and at most ``capacity``
    of them: when more qualify, those seen more often than the first pair past the cap in
    order of count. Pairs seen equally often are kept or dropped together, so the cap may store
    fewer than ``capacity``, but the counts alone decide: a consistent relabelling of the
    vocabulary stores the same pairs, relabelled, and changes no partition. Breaking the tie
    by pair code, as this did before, let the word ids decide. On WikiText-2 the default cap
    falls among the pairs seen twice: it keeps the 117,081 seen three times or more. A
    pruned pair is treated as unseen: it gets γ'(w)·P_cont(v), where γ'(w) = (D·#stored(w) +
    Σ_pruned c(w,v))/c(w) takes in the whole count of w's pruned pairs, so every P_KN(· | w)
    still sums to 1 (with nothing pruned γ' = γ).
    The codes are padded with PAD_CODE up to ``capacity``, the fixed size a model's config
    implies.
    """
    v = int(vocab_size)
    if not 4 <= v <= BIGRAM_MAX_VOCAB:
        raise ValueError(f"the bigram tables need 4 ≤ vocab_size ≤ {BIGRAM_MAX_VOCAB:,} (pair "
                         f"codes are int32), got {v:,}")
    if not 0.0 < discount < 1.0:
        raise ValueError(f"the discount D must lie in (0, 1), got {discount}")
    if capacity is not None and capacity < 1:
        raise ValueError(f"capacity must be ≥ 1, got {capacity}")
    x = np.asarray(ids, dtype=np.int64)
    if x.ndim != 1 or len(x) < 2 or x.min() < 0 or x.max() >= v:
        raise ValueError(f"ids must be a 1-D stream of at least 2 ids in [0, {v})")
    n_tok = len(x)
    uni = np.bincount(x, minlength=v).astype(np.float64)
    log2_uni = np.log2((uni + 1.0) / (n_tok + v))
    pairs, cnt = np.unique(x[:-1] * v + x[1:], return_counts=True)
    prev, nxt = pairs // v, pairs % v
    c_w = np.bincount(prev, weights=cnt, minlength=v)                   # c(w)
    n1_after = np.bincount(nxt, minlength=v).astype(np.float64)          # N1+(•v)
    seen = int((n1_after > 0).sum())                                      # T
    cont = (np.maximum(n1_after - discount, 0.0) + discount * seen / v) / len(pairs)
    keep = cnt >= min_count
    if capacity is not None and keep.sum() > capacity:
        # The count of the first pair past the cap: keep only those seen more often, so a tie
        # is never split and no word id decides which pairs are stored.
        first_out = np.sort(cnt[keep])[::-1][capacity]
        keep &= cnt > first_out
    stored_w = np.bincount(prev[keep], minlength=v).astype(np.float64)
    pruned_w = np.bincount(prev[~keep], weights=cnt[~keep], minlength=v)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(c_w > 0, (discount * stored_w + pruned_w) / c_w, 1.0)
    p, q, k = prev[keep], nxt[keep], cnt[keep]
    pair_p = np.maximum(k - discount, 0.0) / c_w[p] + gamma[p] * cont[q]
    size = len(p) if capacity is None else capacity
    codes = np.full(size, PAD_CODE, dtype=np.int32)
    codes[:len(p)] = pairs[keep]
    log2_pair = np.zeros(size, dtype=np.float32)
    log2_pair[:len(p)] = np.log2(pair_p)
    f32 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    return BigramTables(torch.from_numpy(codes), torch.from_numpy(log2_pair),
                        f32(np.log2(gamma)), f32(np.log2(cont)), f32(log2_uni))


def placeholder_tables(vocab_size: int, capacity: int) -> BigramTables:
    """The all-zero tables a model holds until its own are built or loaded (``is_set`` is
    False; loading a checkpoint fills them)."""
    return BigramTables(torch.zeros(capacity, dtype=torch.int32), torch.zeros(capacity),
                        torch.zeros(vocab_size), torch.zeros(vocab_size), torch.zeros(vocab_size))


class BigramTrace(NamedTuple):
    """Every term of the bigram partition's test at each position, ``[batch, pos]`` each."""

    block_ids: Tensor
    gain: Tensor          # bits; 0 at position 0, +inf where the block was full
    l_continue: Tensor    # bits; NaN at position 0 (no block to continue)
    l_new: Tensor         # bits
    pmi: Tensor           # log2 P_KN(x_s | x_{s−1}) / P_uni(x_s); NaN at position 0


class BigramPartition:
    """Blocks recruited left to right by a description-length test under a Kneser–Ney bigram
    model of the training split: the test reads the words (docs/design.md).

    Reading a sequence, the current block runs from its start b to s − 1. At position s > b,
    with n = s − b tokens in the block and c the number of copies of x_s among them:

        gain(s) = L_continue(s) − L_new(s) − C,   and gain(s) = +∞ when n = ``max_block_size``

    - **L_continue(s) = −log2[(c + α·P_KN(x_s | x_{s−1})) / (n + α)]**: the bits to code x_s
      inside the current block with the block's own adaptive code, a Dirichlet–multinomial
      (Pólya urn) with concentration α (``recruit_alpha``) whose base measure is the bigram
      model. x_{s−1} is always in the block (it is its last token).
    - **L_new(s) = −log2 P_uni(x_s)**: the bits to code x_s as the first token of a fresh block,
      which has no context: the add-one unigram (P_uni(v) = (c(v) + 1)/(N + V)).
    - **P_KN**: interpolated Kneser–Ney with absolute discount D = 0.75 from the training split
      (``kn_bigram_tables`` states each term and what pruned pairs get).
    - **C** (``bigram_boundary_bits``): the price of a boundary, in bits.
    - **+∞ at the cap**: a block that already holds ``max_block_size`` tokens cannot be
      continued, so that boundary too has a positive gain under the formula.

    A block starts at s exactly when gain(s) > 0. For a word new to the block (c = 0),

        gain(s) = log2((n + α)/α) − PMI_KN(x_{s−1}; x_s) − C,
        PMI_KN = log2[P_KN(x_s | x_{s−1}) / P_uni(x_s)]:

    the length threshold of the ``recruited`` partition, moved by how strongly the word is
    predicted by the one before it: strongly associated neighbours stay together, a word its
    predecessor does not predict starts a block sooner. A repeated word (c > 0) is cheap to
    continue, as in ``recruited``.

    Causal: whether s starts a block depends on tokens ≤ s only (b and c come from earlier
    decisions and tokens; P_KN reads x_{s−1} and x_s), so the leak test holds.

    Trained on the cycle 0 → 1 → 2 → 3 → 0, the cycle holds together; once it breaks, each
    pair the training split never showed starts a block:

    >>> t = kn_bigram_tables([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2], 4)
    >>> p = BigramPartition(t, alpha=1.0, boundary_bits=0.5, max_block_size=8)
    >>> p.block_ids(torch.tensor([[0, 1, 2, 3, 0, 1, 3, 2, 0, 2, 1]])).tolist()
    [[0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]]
    """

    name = "bigram"

    def __init__(self, tables: BigramTables, alpha: float, boundary_bits: float,
                 max_block_size: int):
        if not alpha > 0:
            raise ValueError(f"recruit_alpha (α) must be > 0, got {alpha}")
        if not boundary_bits >= 0:
            raise ValueError(f"bigram_boundary_bits (C) must be ≥ 0, got {boundary_bits}")
        if max_block_size < 1:
            raise ValueError(f"max_block_size must be ≥ 1, got {max_block_size}")
        self.tables = tables
        self.alpha = float(alpha)
        self.boundary_bits = float(boundary_bits)
        self.max_block_size = int(max_block_size)

    def trace_terms(self, tokens: Tensor) -> BigramTrace:
        """Block ids and every term of the test at every position (see the class docstring)."""
        if not self.tables.is_set():
            raise ValueError(NO_TABLES)
        batch, n = tokens.shape
        dev = tokens.device
        log2_new = self.tables.log2_unigram(tokens).double()             # log2 P_uni(x_s)
        log2_kn = torch.full((batch, n), math.nan, dtype=torch.float64, device=dev)
        if n > 1:
            log2_kn[:, 1:] = self.tables.log2_kn(tokens[:, :-1], tokens[:, 1:]).double()
        p_kn = log2_kn.exp2()
        eq = tokens.unsqueeze(-1) == tokens.unsqueeze(-2)                 # [B, s, j]
        pos = torch.arange(n, device=dev)
        ids = torch.zeros(batch, n, dtype=torch.long, device=dev)
        gain = torch.zeros(batch, n, dtype=torch.float64, device=dev)
        cont = torch.full((batch, n), math.nan, dtype=torch.float64, device=dev)
        start = torch.zeros(batch, dtype=torch.long, device=dev)
        cur = torch.zeros(batch, dtype=torch.long, device=dev)
        a = self.alpha
        for s in range(1, n):
            in_block = pos[:s].unsqueeze(0) >= start.unsqueeze(1)         # [B, s]
            c = (eq[:, s, :s] & in_block).sum(-1).double()
            length = s - start
            cont[:, s] = -torch.log2((c + a * p_kn[:, s]) / (length.double() + a))
            g = cont[:, s] + log2_new[:, s] - self.boundary_bits
            g = torch.where(length >= self.max_block_size, math.inf, g)
            gain[:, s] = g
            split = g > 0
            cur = cur + split
            start = torch.where(split, torch.full_like(start, s), start)
            ids[:, s] = cur
        return BigramTrace(ids, gain.float(), cont.float(), (-log2_new).float(),
                           (log2_kn - log2_new).float())

    def trace(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(block_ids, gain)``, as ``RecruitedPartition.trace``."""
        t = self.trace_terms(tokens)
        return t.block_ids, t.gain

    def block_ids(self, tokens: Tensor) -> Tensor:
        return self.trace_terms(tokens).block_ids

    def __repr__(self) -> str:
        return (f"BigramPartition(alpha={self.alpha}, boundary_bits={self.boundary_bits}, "
                f"max_block_size={self.max_block_size})")


NO_TABLES = ("the bigram partition needs the Kneser–Ney bigram tables of its training split, "
             "and this model has none: training builds them (make_model), a checkpoint trained "
             "with partition=bigram carries them, or pass kn_bigram_tables(train_ids, "
             "vocab_size, capacity=cfg.bigram_pairs) as LocalistLM(cfg, bigram=…)")


# -- the table as a file of its own (the shipped WikiText-2 table) -----------------------------

def vocab_fingerprint(words: list[str]) -> str:
    """A short hash of a vocabulary (its words in id order): a table fits a model only when
    both were built over the same vocabulary."""
    return hashlib.sha256(json.dumps(list(words)).encode()).hexdigest()[:16]


def write_table_file(path: Path, tables: BigramTables, words: list[str], meta: dict) -> None:
    """Write ``tables`` as safetensors, atomically. The header's one metadata entry,
    ``TABLE_META``, is a JSON object (sorted keys, so the same tables give the same bytes) of
    ``meta`` and the vocabulary's fingerprint (``vocab``)."""
    if len(words) != tables.vocab_size:
        raise ValueError(f"{len(words)} words for a table of {tables.vocab_size}")
    header = {TABLE_META: json.dumps({**meta, "vocab": vocab_fingerprint(words)},
                                     sort_keys=True)}
    tensors = {k: t.contiguous() for k, t in tables.tensors().items()}
    atomic_write(Path(path), safetensors_writer(tensors, header))


def table_file_meta(header: dict) -> dict:
    """The ``TABLE_META`` object of a table file's (checked) safetensors header; {} when it has
    none or it is not a JSON object."""
    try:
        meta = json.loads(header.get("__metadata__", {}).get(TABLE_META, ""))
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def read_table_file(path: Path, words: list[str],
                    error: type[Exception] = UnsafeFileError) -> BigramTables:
    """The tables in ``path``, read only after every check: the file's size (stat), the
    safetensors header (names, dtypes, shapes: at most MODEL_SIZE_LIMITS["bigram_pairs"] pairs
    and one entry per word of ``words``) and the vocabulary's fingerprint; then the values
    (``BigramTables.from_tensors``). Raises ``error`` naming the file."""
    path = Path(path)
    checked_size(path, MAX_TABLE_FILE_BYTES, error)
    header = check_safetensors_file(path, error)
    if table_file_meta(header).get("vocab") != vocab_fingerprint(words):
        raise error(f"{path}: built for another vocabulary than this model's "
                    f"({len(words):,} words)")
    want = {"bigram_codes": "I32", **{n: "F32" for n in TABLE_NAMES[1:]}}
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if set(tensors) != set(want):
        raise error(f"{path}: expected the tensors {list(want)}, found {sorted(tensors)[:6]}")
    limit = MODEL_SIZE_LIMITS["bigram_pairs"]
    for name, dtype in want.items():
        shape = tensors[name]["shape"]
        size = limit if name in TABLE_NAMES[:2] else len(words)
        if tensors[name]["dtype"] != dtype or len(shape) != 1 or shape[0] > size or (
                name not in TABLE_NAMES[:2] and shape[0] != size):
            raise error(f"{path}: tensor {name} is {tensors[name]['dtype']} {shape}; expected "
                        f"{dtype} of " + (f"at most {limit:,} pairs (MODEL_SIZE_LIMITS)"
                                          if size == limit else f"{size:,} words"))
    try:
        return BigramTables.from_tensors(load_file(str(path)), str(path))
    except ValueError as e:
        raise error(str(e)) from None
