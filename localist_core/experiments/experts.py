"""Model-level recruitment (issue 18; docs/design.md "Model-level recruitment"): a pool of
specialised language models grown from one trained base as WikiText-2 articles arrive in order.

**Experts are low-rank adapters on a frozen shared base.** Expert k codes a token from the base's
final hidden state h (after ``ln_final``, at ``Dial()``: plain attention) through the base's own
adaptive-softmax head, applied to h_k = h + Σ_a B_a A_a h, the sum over k's own adapter and its
ancestors' (the base has none). Each adapter has rank r: A maps d → r, B maps r → d, so it holds
2·d·r numbers. B starts at zero, so a new expert codes exactly like its parent. Only the new
adapter trains; the base and its head stay frozen.

**The base's hidden states are computed once** (``documents.document_states``: each article on
its own behind an ``<eos>``, long ones in half-overlapping windows) and kept in memory in fp16.
Why this fits two CPU cores: the attention layers run once per token, ever. Coding a document
under every expert, or training one, costs only the adapter (2·d·r multiply-adds a token) and the
output head.

**Description cost** of an expert = 2·d·r × ``bits_per_param`` (the stored precision). The
shared base costs 0.

**Recruitment.** Documents are split into a first half (⌊n/2⌋ tokens) and a second half. The pool
starts as [base]. Each arriving document is coded by every expert (bits = Σ −log₂ p) and routed to
the one that codes it in the fewest bits (ties: the oldest). After every ``check_every``
documents, each expert p that existed at the check and holds ≥ ``min_docs`` documents D_p tries to
recruit a child c:
1. seed: C = {the document of D_p that p codes worst per token};
2. ``rounds`` times: train c's adapter for ``steps`` Adam steps on the first halves of C, then
   C = {d ∈ D_p : c codes d's first half in fewer bits than p};
3. savings = Σ_{d∈C} (bits_p − bits_c) on the second halves of C, which c never trained on;
4. c is recruited when savings > its description cost; then the documents of C are routed to it.
So the savings are a held-out estimate over half of the documents' tokens, never an overfit one.

**Evaluation** on held-out articles: route each by its prefix (the first 25% of its tokens, at
least 32) and score the rest, against the base alone and one adapter of the same form trained on
every stream document for as many Adam steps as all recruitment attempts used together.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .documents import StateCache, segment_sums

CODE_CHUNK = 8192            # rows coded at once (K experts × rows ≤ this)
# Limits (README "Limits"): what a config may ask for.
RANK_RANGE, STEPS_RANGE, ROUNDS_RANGE = (1, 64), (1, 10_000), (1, 8)
MAX_EXPERTS_RANGE, BITS_PER_PARAM_RANGE = (2, 64), (0.0, 1024.0)


# -- coding under experts ----------------------------------------------------------------------

@torch.no_grad()
def code_rows(model, cache: StateCache, rows: Tensor, deltas: Tensor) -> Tensor:
    """Bits of each of ``rows`` under each expert, ``[K, len(rows)]``: expert k codes from
    h + h·deltas[k], where ``deltas`` ``[K, d, d]`` holds Σ A_a B_a over each lineage (zeros for
    the base), through the base's exact fp32 adaptive softmax (``token_nll``)."""
    k = deltas.shape[0]
    out = torch.empty(k, len(rows))
    step = max(1, CODE_CHUNK // k)
    for lo in range(0, len(rows), step):
        r = rows[lo:lo + step]
        h = cache.hidden[r].float()                                   # [n, d]
        hk = h + torch.einsum("nd,kde->kne", h, deltas)               # [K, n, d]
        nll = model.token_nll(hk.reshape(-1, h.shape[1]), cache.targets[r].repeat(k))
        out[:, lo:lo + len(r)] = nll.view(k, -1) / math.log(2)
    return out


@contextlib.contextmanager
def _frozen(model):
    """The base's parameters without gradients while an adapter trains (restored after)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, was in flags:
            p.requires_grad_(was)


class AdapterTrainer:
    """One adapter (A ``[d, r]``, B ``[r, d]`` = 0) on top of ``under`` (its parent's Σ A B),
    trained with Adam on random batches of rows of a ``StateCache``."""

    def __init__(self, model, cache: StateCache, under: Tensor, cfg: RecruitConfig,
                 gen: torch.Generator):
        d = cache.hidden.shape[1]
        self.model, self.cache, self.under, self.cfg, self.gen = model, cache, under, cfg, gen
        self.A = (torch.randn(d, cfg.rank, generator=gen) / math.sqrt(d)).requires_grad_()
        self.B = torch.zeros(cfg.rank, d, requires_grad=True)
        self.opt = torch.optim.Adam([self.A, self.B], lr=cfg.lr)

    def train(self, rows: Tensor, steps: int) -> None:
        with _frozen(self.model):
            for _ in range(steps):
                pick = rows[torch.randint(len(rows), (self.cfg.batch_tokens,), generator=self.gen)]
                h = self.cache.hidden[pick].float()                   # [batch, d]
                out = h + h @ self.under + (h @ self.A) @ self.B
                loss = self.model.token_nll(out, self.cache.targets[pick]).mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()

    @property
    def delta(self) -> Tensor:
        """The child's Σ A B: its parent's plus its own."""
        return (self.under + self.A @ self.B).detach()


# -- recruitment -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecruitConfig:
    """How experts are grown (module docstring); ``seed`` sets every adapter's initialisation
    and batch order."""

    rank: int = 8
    bits_per_param: float = 16.0
    check_every: int = 20
    min_docs: int = 4
    steps: int = 50
    rounds: int = 2
    batch_tokens: int = 256
    lr: float = 3e-4           # higher rates overfit a seed article (README, measured)
    max_experts: int = 16
    seed: int = 1234

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise ValueError(f"{what}, got {getattr(self, what.split()[0])!r}")
        ints = ("rank", "check_every", "min_docs", "steps", "rounds", "batch_tokens",
                "max_experts", "seed")
        for name in ints:
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an integer")
        need(RANK_RANGE[0] <= self.rank <= RANK_RANGE[1], f"rank must be in {list(RANK_RANGE)}")
        need(STEPS_RANGE[0] <= self.steps <= STEPS_RANGE[1],
             f"steps must be in {list(STEPS_RANGE)}")
        need(ROUNDS_RANGE[0] <= self.rounds <= ROUNDS_RANGE[1],
             f"rounds must be in {list(ROUNDS_RANGE)}")
        need(MAX_EXPERTS_RANGE[0] <= self.max_experts <= MAX_EXPERTS_RANGE[1],
             f"max_experts must be in {list(MAX_EXPERTS_RANGE)}")
        need(1 <= self.check_every <= 10_000, "check_every must be in [1, 10000]")
        need(2 <= self.min_docs <= 10_000, "min_docs must be in [2, 10000]")
        need(1 <= self.batch_tokens <= 8192, "batch_tokens must be in [1, 8192]")
        need(0 <= self.seed < 2**32, "seed must be in [0, 2^32)")
        lo, hi = BITS_PER_PARAM_RANGE
        need(isinstance(self.lr, (int, float)) and 0 < self.lr <= 1, "lr must be in (0, 1]")
        need(isinstance(self.bits_per_param, (int, float)) and lo < self.bits_per_param <= hi,
             f"bits_per_param must be in ({lo:g}, {hi:g}]")

    def cost_bits(self, d_model: int) -> float:
        """An expert's description cost: its 2·d·r adapter numbers at ``bits_per_param``."""
        return 2 * d_model * self.rank * float(self.bits_per_param)


@dataclass
class Expert:
    id: int
    parent: int | None
    delta: Tensor                        # [d, d]: Σ A_a B_a over its lineage (0: the base)
    A: Tensor | None = None              # [d, r], its own adapter (None: the base)
    B: Tensor | None = None              # [r, d]
    recruited_at: int | None = None      # index of the stream document after which it came
    savings_bits: float = 0.0
    cost_bits: float = 0.0


@dataclass
class Attempt:
    """One try at a child: what it would take and save, with the rows behind the figures."""

    parent: int
    seed_doc: int
    candidates: int                      # the parent's documents at the check
    docs: Tensor                         # the documents the child takes (C)
    savings_bits: float                  # on their second halves
    steps: int                           # Adam steps spent
    A: Tensor
    B: Tensor
    trained_rows: Tensor                 # every row the child trained on (first halves)
    first_rows: Tensor                   # C's first halves, and the child's bits on them
    first_bits: Tensor
    scored_rows: Tensor                  # C's second halves (the savings), and its bits
    scored_bits: Tensor


def attempt(model, cache: StateCache, parent: Expert, docs: Tensor, routed: Tensor,
            cfg: RecruitConfig, gen: torch.Generator) -> Attempt:
    """Try to grow a child of ``parent`` from its documents ``docs`` (``routed``: the bits of
    every row under the expert it is routed to): a seed, ``cfg.rounds`` rounds of hard EM on
    first halves, savings on second halves (module docstring)."""
    lens = cache.lengths[docs]
    half = lens // 2
    first = cache.rows(docs, "first")
    parent_first = segment_sums(routed[first], half)
    seed = int(torch.argmax(segment_sums(routed[cache.rows(docs)], lens) / lens))
    chosen = torch.zeros(len(docs), dtype=torch.bool)
    chosen[seed] = True
    child = AdapterTrainer(model, cache, parent.delta, cfg, gen)
    trained, steps = [], 0
    for _ in range(cfg.rounds):
        rows = cache.rows(docs[chosen], "first")
        trained.append(rows)
        child.train(rows, cfg.steps)
        steps += cfg.steps
        child_first = code_rows(model, cache, first, child.delta[None])[0]
        chosen = segment_sums(child_first, half) < parent_first
        if not chosen.any():
            break
    moved = docs[chosen]
    scored = cache.rows(moved, "second")
    scored_bits = code_rows(model, cache, scored, child.delta[None])[0]
    savings = float(routed[scored].double().sum() - scored_bits.double().sum())
    keep = chosen.repeat_interleave(half)
    return Attempt(parent.id, int(docs[seed]), len(docs), moved, savings, steps, child.A.detach(),
                   child.B.detach(), torch.cat(trained).unique(), first[keep],
                   child_first[keep], scored, scored_bits)


@dataclass
class Recruitment:
    experts: list[Expert]
    assign: Tensor                       # [D] the expert of each stream document, at the end
    attempts: list[Attempt]
    recruited: list[bool]                # per attempt
    arrival_bits: Tensor                 # [D] what each document cost when it arrived
    base_bits: Tensor                    # [D] under the base alone
    final_bits: Tensor                   # [D] under its expert at the end
    index_bits: float                    # Σ log₂(pool size) over arrivals: naming the expert
    attempt_at: list[int] = field(default_factory=list)   # per attempt: the check's document

    @property
    def steps(self) -> int:
        """Adam steps of every attempt together (the single adapter gets as many)."""
        return sum(a.steps for a in self.attempts)


def _signature(pool: list[Expert]) -> tuple:
    return tuple((e.id, e.parent, e.recruited_at) for e in pool)


def recruit(model, cache: StateCache, cfg: RecruitConfig, *, memo: dict | None = None,
            progress: bool = False) -> Recruitment:
    """Route the documents of ``cache`` in order and grow the pool (module docstring).

    ``memo`` may be shared by runs whose configs differ only in ``bits_per_param``: while their
    pools agree, routing and attempts are the same computation, done once."""
    d = cache.hidden.shape[1]
    pool = [Expert(0, None, torch.zeros(d, d))]
    n_docs = cache.n_docs
    assign = torch.full((n_docs,), -1, dtype=torch.long)
    routed = torch.zeros(len(cache.targets))
    arrival = torch.zeros(n_docs, dtype=torch.float64)
    base = torch.zeros(n_docs, dtype=torch.float64)
    rec = Recruitment(pool, assign, [], [], arrival, base, arrival, 0.0)
    memo = {} if memo is None else memo
    same = (RecruitConfig.__name__, *[(k, v) for k, v in vars(cfg).items()
                                      if k != "bits_per_param"])
    cost = cfg.cost_bits(d)
    for i in tqdm(range(n_docs), disable=not progress, unit="doc",
                  desc=f"recruit (seed {cfg.seed}, {cfg.bits_per_param:g} bits/param)"):
        rows = cache.rows(torch.tensor([i]))
        key = (same, "route", i, _signature(pool))
        if key not in memo:
            memo[key] = code_rows(model, cache, rows, torch.stack([e.delta for e in pool]))
        totals = memo[key].double().sum(1)
        k = int(torch.argmin(totals))                                 # ties: the oldest
        assign[i], routed[rows] = k, memo[key][k]
        arrival[i], base[i] = totals[k], totals[0]
        rec.index_bits += math.log2(len(pool))
        if (i + 1) % cfg.check_every:
            continue
        for parent in list(pool):
            docs = (assign[:i + 1] == parent.id).nonzero().squeeze(1)
            if len(pool) >= cfg.max_experts or len(docs) < cfg.min_docs:
                continue
            key = (same, "attempt", i, parent.id, _signature(pool), tuple(docs.tolist()))
            if key not in memo:
                gen = torch.Generator().manual_seed(
                    (cfg.seed * 1_000_003 + i * 7_919 + parent.id) % 2**62)
                memo[key] = attempt(model, cache, parent, docs, routed, cfg, gen)
            a = memo[key]
            rec.attempts.append(a)
            rec.attempt_at.append(i)
            rec.recruited.append(a.savings_bits > cost)
            if rec.recruited[-1]:
                pool.append(Expert(len(pool), parent.id, parent.delta + a.A @ a.B, a.A, a.B, i,
                                   a.savings_bits, cost))
                assign[a.docs] = len(pool) - 1
                routed[a.first_rows], routed[a.scored_rows] = a.first_bits, a.scored_bits
    rec.final_bits = segment_sums(routed, cache.lengths)
    return rec


def train_single(model, cache: StateCache, cfg: RecruitConfig, steps: int) -> tuple[Tensor, Tensor]:
    """The same-compute control: one adapter of the same form on the base, trained for ``steps``
    Adam steps on every row of the stream (seeded by ``cfg.seed``); 0 steps leave it the base."""
    one = AdapterTrainer(model, cache, torch.zeros(cache.hidden.shape[1], cache.hidden.shape[1]),
                         cfg, torch.Generator().manual_seed(cfg.seed))
    one.train(torch.arange(len(cache.targets)), steps)
    return one.A.detach(), one.B.detach()
