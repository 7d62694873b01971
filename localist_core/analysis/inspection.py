"""Inspecting one text at one dial setting: the attention, metrics, perplexity and top-k that
the dashboard shows, computed in one place.

Pages never do tensor maths: they call ``analyze`` (through a cache) and render the plain numpy
arrays and numbers of the returned ``Analysis``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model.bigram import BigramTables, read_table_file
from ..model.blocks import make_partition
from ..model.config import PARTITIONS, TEMPERATURE_RANGE
from ..model.dial import Dial
from ..model.files import UnsafeFileError
from ..model.tokenizer import dropped_characters
from ..paths import BIGRAM_TABLE
from .evaluate import attention_summary, head_summary
from .rules import Rule, RuleError, make_rule, rule_bias, rule_fidelity, rule_pairs

# Limits (README "Limits"): what one request may cost the server.
MAX_TEXT_CHARS = 20_000   # longer text is cut before tokenising (a notice says so)
MAX_TOKENS = 256          # tokens per live request, whatever the model's n_ctx (a notice says so)
TOP_K = 5
# The τ values the theory report sweeps, from one end of the dial's range to the other.
THEORY_TEMPERATURES = (TEMPERATURE_RANGE[0], 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, TEMPERATURE_RANGE[1])


@dataclass
class Analysis:
    """Everything a page renders for one (checkpoint, text, dial); numpy arrays only."""

    labels: list[str]                 # one per token, <unk> visible
    token_ids: list[int]
    patterns: np.ndarray              # [layer, head, query, key] float16; future keys are 0
    block_ids: np.ndarray             # [T]
    block_anchors: np.ndarray         # [T] bool: each whole block's anchors (markers)
    anchor_mask: np.ndarray           # [query, key] bool: anchors each query can see
    entropy: np.ndarray               # [layer, head, query] bits
    metrics: dict[str, dict]          # name → {"mean", "per_layer", "per_head"}
    perplexity: float | None          # of the text (None with fewer than 2 tokens)
    token_nll: np.ndarray             # [T-1] nats, target t+1 given ≤ t
    hidden: np.ndarray                # [T, d_model] final hidden states: ``next_words`` reads them
    dial: Dial
    notices: list[str] = field(default_factory=list)
    partition: str = "fixed"          # the partition the blocks came from
    rule: str | None = None           # the rule applied, described; None without one
    rule_pairs: np.ndarray | None = None   # [query, key] bool: the pairs the rule favours
    rule_fidelity: float | None = None     # mass from the rule's queries onto its targets

    def nbytes(self) -> int:
        """Bytes held by the arrays (what a cached entry costs, give or take the labels)."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))


def analysis_bytes_bound(cfg) -> int:
    """An upper bound on ``Analysis.nbytes()`` for a model config: the fp16 patterns
    (L·H·T²·2 bytes) dominate, then the [query, key] anchor mask, per-head entropies and
    per-token arrays (up to d_model floats a token) and a rule's [query, key] pairs; T is at
    most min(n_ctx, MAX_TOKENS)."""
    t, lh = min(cfg.n_ctx, MAX_TOKENS), cfg.n_layers * cfg.n_heads
    return lh * t * t * 2 + 2 * t * t + lh * t * 4 + t * (4 * cfg.d_model + 64)


def cut_text(text: str, what: str = "The text") -> tuple[str, list[str]]:
    """``text`` cut to MAX_TEXT_CHARS, with the notice that says so (none when it fits). The app
    cuts before the text reaches any cache; ``prepare_text`` cuts again for other callers.

    >>> cut_text("abc")
    ('abc', [])
    """
    if len(text) <= MAX_TEXT_CHARS:
        return text, []
    return text[:MAX_TEXT_CHARS], [f"{what} has {len(text):,} characters; only the first "
                                   f"{MAX_TEXT_CHARS:,} were read."]


def prepare_text(tokenizer, text: str, n_ctx: int) -> tuple[list[int], list[str]]:
    """Token ids of ``text`` for the live view, with notices for what was cut or is missing:
    at most MAX_TEXT_CHARS characters are read and min(n_ctx, MAX_TOKENS) tokens kept."""
    n_ctx = min(n_ctx, MAX_TOKENS)
    if text is None or not str(text).strip():
        return [], ["The text is empty: type or pick a text to see its attention."]
    text, notices = cut_text(str(text))
    dropped = dropped_characters(text)
    if dropped:
        notices.append(f"{dropped} control or invisible character(s) (zero-width, direction "
                       f"marks, …) were removed.")
    ids = tokenizer.encode(text)
    if not ids:
        return [], notices + ["The text has no words after cleaning (only control or "
                              "invisible characters?)."]
    if len(ids) > n_ctx:
        notices.append(f"The text has {len(ids):,} tokens; the model reads {n_ctx} at a time, "
                       f"so only the first {n_ctx} are shown.")
        ids = ids[:n_ctx]
    unk = sum(1 for i in ids if i == tokenizer.unk_id)
    if unk:
        notices.append(f"{unk} word(s) are outside the vocabulary and show as <unk>.")
    return ids, notices


def inference_partition(model, tokenizer, kind: str | None = None,
                        block_size: int | None = None):
    """The partition to re-block a text with at inference, or None for the trained one.

    ``kind`` is one of ``config.PARTITIONS`` (None: as trained); ``block_size`` sets the fixed
    windows. Other settings (maximum length, α, C) come from the model's config; ``bigram``
    reads the tables of ``bigram_tables_for``."""
    cfg = model.cfg
    kind = kind or cfg.partition
    if kind not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}, got {kind!r}")
    size = int(block_size) if block_size is not None else cfg.block_size
    if kind == cfg.partition and (kind != "fixed" or size == cfg.block_size):
        return None
    tables = None
    if kind == "bigram":
        tables, why = bigram_tables_for(model, tokenizer)
        if tables is None:
            raise MissingTableError(why)
    return make_partition(dataclasses.replace(cfg, partition=kind, block_size=size),
                          words=tokenizer.words, bigram=tables)


class MissingTableError(ValueError):
    """No Kneser–Ney table fits the model, so its text cannot be re-blocked with bigram."""


def bigram_tables_for(model, tokenizer, table_file=BIGRAM_TABLE
                      ) -> tuple[BigramTables | None, str]:
    """The Kneser–Ney tables the bigram partition reads for ``model``, and where they come
    from: the model's own (a model trained with partition=bigram carries them), else the
    shipped table of WikiText-2 (``paths.BIGRAM_TABLE``) when it was built for the model's
    vocabulary; else ``(None, why not)``. The table file is checked before it is read
    (``bigram.read_table_file``)."""
    own = model.bigram_tables()
    if own is not None and own.is_set():
        return own, "the model's own table"
    try:
        return (read_table_file(table_file, tokenizer.words),
                "the shipped WikiText-2 table")
    except UnsafeFileError as e:
        return None, (f"the bigram partition needs a Kneser–Ney table: this checkpoint carries "
                      f"none (it was not trained with partition=bigram), and the shipped table "
                      f"cannot serve it: {e}")


@dataclass(frozen=True)
class _KnownBlocks:
    """A partition whose block ids are already known, so one analysis partitions its text once
    (the recruited partition is a left-to-right scan)."""

    ids: torch.Tensor
    name: str = "known"

    def block_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.ids


@torch.no_grad()
def analyze(model, tokenizer, text: str, dial: Dial = Dial(), *, block_size: int | None = None,
            partition: str | None = None, rule: Rule | tuple | None = None) -> Analysis:
    """Run the model on ``text`` at ``dial``. Bad text, what the dial clamped
    (``dial.notices``) or a rule that cannot run give notices (and, for no text, an empty
    Analysis), never an exception. ``partition`` and ``block_size`` re-block the text at
    inference (None keeps the trained partition); ``rule`` (a Rule, or the plain values
    ``make_rule`` takes) adds its score bias and reports its fidelity. Re-blocking with
    ``bigram`` where no table fits the model keeps the trained blocks, with a notice."""
    ids, notices = prepare_text(tokenizer, text, model.cfg.n_ctx)
    notices += dial.notices
    if not ids:
        return Analysis([], [], np.zeros((0, 0, 0, 0)), np.zeros(0, int), np.zeros(0, bool),
                        np.zeros((0, 0), bool), np.zeros((0, 0, 0)), {}, None, np.zeros(0),
                        np.zeros((0, model.cfg.d_model), np.float32), dial, notices,
                        partition=partition or model.cfg.partition)
    try:
        part = inference_partition(model, tokenizer, partition, block_size)
    except MissingTableError as e:
        notices.append(f"The text keeps the checkpoint's own blocks: {e}.")
        part, partition = None, None
    labels = tokenizer.labels(ids)
    pairs, bias = None, None
    if rule is not None:
        try:
            if not isinstance(rule, Rule):
                rule = make_rule(*rule)
            pairs = rule_pairs(rule, labels)
            bias = rule_bias(rule, pairs=pairs) if rule.strength else None
        except RuleError as e:
            notices.append(f"The rule was not applied: {e}.")
            rule = None
        else:
            if not pairs.any():
                notices.append(f"The rule {rule.describe()} matches no (query, target) pair in "
                               f"this text, so it changes nothing.")
    tokens = torch.tensor([ids])
    info = model.partition_info(tokens, part)       # the blocks once: the forward reuses them
    hidden, cache = model.run_with_cache(
        tokens, dial, names_filter=lambda n: n.endswith("hook_pattern"),
        partition=_KnownBlocks(info.block_ids), return_type="hidden", score_bias=bias)
    pats = [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(model.cfg.n_layers)]
    per_layer = attention_summary(model, tokens, pats, info.block_ids,
                                  block_size or model.cfg.block_size, anchors=info.anchor_mask)
    metrics = {name: head_summary(torch.stack([m[name][0].mean(-1) for m in per_layer]))
               for name in per_layer[0]}                  # each [layer, head], mean over queries
    nll = (model.token_nll(hidden[:, :-1], tokens[:, 1:])[0] if len(ids) > 1
           else torch.zeros(0))                                            # (T-1,)
    patterns = torch.stack([p[0] for p in pats])
    return Analysis(
        labels=labels, token_ids=ids,
        patterns=patterns.half().numpy(),   # half the cache memory
        block_ids=info.block_ids[0].numpy(),
        block_anchors=info.block_anchors[0].numpy(),
        anchor_mask=info.anchor_mask[0].numpy(),
        entropy=torch.stack([m["entropy_bits"][0] for m in per_layer]).numpy(),
        metrics=metrics,
        perplexity=float(nll.mean().exp()) if len(ids) > 1 else None,
        token_nll=nll.numpy(),
        hidden=hidden[0].numpy(),
        dial=dial, notices=notices,
        partition=partition or model.cfg.partition,
        rule=rule.describe() if rule is not None else None,
        rule_pairs=pairs,
        rule_fidelity=rule_fidelity(patterns, pairs) if pairs is not None else None)


# The partitions whose block starts a split test decides, each with its trace.
TRACED_PARTITIONS = ("bigram", "recruited")


@dataclass
class RecruitTrace:
    """Where a recruiting partition (``recruited`` or ``bigram``) starts blocks in a text, and
    the bits each test gained."""

    labels: list[str]
    block_ids: np.ndarray      # [T]
    gain_bits: np.ndarray      # [T] the split test at each position (0 at position 0; +inf
                               # where a bigram block was full)
    alpha: float
    boundary_bits: float
    notices: list[str] = field(default_factory=list)
    partition: str = "recruited"
    # bigram only: each term of the test, [T] bits each (NaN at position 0): "l_continue",
    # "l_new" and "pmi" (BigramPartition's docstring states them).
    terms: dict[str, np.ndarray] = field(default_factory=dict)
    max_block_size: int | None = None   # bigram: the cap (a full block cannot continue)
    table: str = ""                     # bigram: where its Kneser–Ney table came from
    missing: str = ""                   # bigram: why there is no trace (no table to read)

    def boundaries(self) -> list[tuple[int, str, float]]:
        """(position, word, bits saved) of every recruited block start after the first (bits
        saved is +inf where the block before was full)."""
        return [(i, self.labels[i], float(self.gain_bits[i]))
                for i in range(1, len(self.labels)) if self.block_ids[i] != self.block_ids[i - 1]]


def recruitment_trace(model, tokenizer, text: str, partition: str = "recruited") -> RecruitTrace:
    """Run a recruiting partition (``TRACED_PARTITIONS``) over ``text`` with the model's α, C
    and cap. ``bigram`` reads ``bigram_tables_for``'s tables; without any, the trace is empty
    and its ``missing`` says why."""
    if partition not in TRACED_PARTITIONS:
        raise ValueError(f"partition must be one of {TRACED_PARTITIONS}, got {partition!r}")
    ids, notices = prepare_text(tokenizer, text, model.cfg.n_ctx)
    cfg = dataclasses.replace(model.cfg, partition=partition)
    table, where = (bigram_tables_for(model, tokenizer) if partition == "bigram"
                    else (None, ""))
    empty = RecruitTrace([], np.zeros(0, int), np.zeros(0, np.float32), cfg.recruit_alpha,
                         cfg.boundary_bits, notices, partition)
    if partition == "bigram":
        empty.boundary_bits, empty.max_block_size = cfg.bigram_boundary_bits, cfg.max_block_size
        if table is None:
            empty.missing = where
            return empty
        empty.table = where
    if not ids:
        return empty
    part = make_partition(cfg, bigram=table)
    tokens = torch.tensor([ids])
    if partition == "recruited":
        block_ids, gain = part.trace(tokens)
        return RecruitTrace(tokenizer.labels(ids), block_ids[0].numpy(), gain[0].numpy(),
                            part.alpha, part.boundary_bits, notices)
    t = part.trace_terms(tokens)
    return RecruitTrace(tokenizer.labels(ids), t.block_ids[0].numpy(), t.gain[0].numpy(),
                        part.alpha, part.boundary_bits, notices, partition,
                        {"l_continue": t.l_continue[0].numpy(), "l_new": t.l_new[0].numpy(),
                         "pmi": t.pmi[0].numpy()}, part.max_block_size, where)


@torch.no_grad()
def next_words(model, tokenizer, a: Analysis, pos: int, k: int = TOP_K
               ) -> tuple[list[str], np.ndarray]:
    """The ``k`` most likely words after position ``pos`` of an analysis, with probabilities.

    Only the chosen position is scored (the exact top-k of the adaptive softmax), so the live
    path never builds the full ``[T, V]`` distribution.
    """
    if not 0 <= pos < len(a.labels):
        raise ValueError(f"position {pos} is outside the text (0..{len(a.labels) - 1})")
    lp, ids = model.top_k(torch.from_numpy(a.hidden[pos:pos + 1]), k)
    return tokenizer.labels(ids[0].tolist()), lp[0].exp().numpy()


def reduce_heads(values: np.ndarray, layer: int | None, head: int | None) -> np.ndarray:
    """The one head reduction of what a page draws: ``[layer, head, ...]`` → ``[...]`` float32
    of one head, a layer's head mean, or the mean over layers (of one head index, or of all
    heads). None means "the mean". An analysis's or a stored map's ``patterns``
    ``[layer, head, T, T]`` give the ``[query, key]`` matrix to draw; ``Analysis.entropy``
    ``[layer, head, query]`` gives the per-query entropy in bits."""
    v = values.mean(0, dtype=np.float32) if layer is None else values[layer]
    return (v.mean(0, dtype=np.float32) if head is None else v[head]).astype(np.float32)


def cross_block_share(view: np.ndarray, block_ids: np.ndarray) -> np.ndarray:
    """``[query]`` float32: the share of each query's attention that leaves its block, 1 − its
    in-block mass, of a ``[query, key]`` view (``reduce_heads``). Distributed attention spread
    thin over many keys is hard to see cell by cell; summed per row it is not.

    >>> v = np.array([[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]], np.float32)
    >>> cross_block_share(v, np.array([0, 0, 1])).round(2).tolist()
    [0.0, 0.0, 0.5]
    """
    v = np.asarray(view, dtype=np.float32)
    ids = np.asarray(block_ids)
    same = ids[:, None] == ids[None, :]
    return np.clip(1.0 - (v * same).sum(-1), 0.0, 1.0).astype(np.float32)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b − a of two ``[query, key]`` views of the same text."""
    return np.asarray(b, dtype=np.float32) - np.asarray(a, dtype=np.float32)


def attention_table(a: Analysis) -> list[dict]:
    """Long-format rows (layer, head, query, key, words, weight) for CSV export; masked (future)
    keys are left out rather than written as −inf or 0."""
    rows = []
    n_layers, n_heads, n, _ = a.patterns.shape
    for layer in range(n_layers):
        for head in range(n_heads):
            for q in range(n):
                for k in range(n):
                    if k > q and a.patterns[layer, head, q, k] == 0:
                        continue  # a masked future key (the diagnostic mode can see some)
                    rows.append({"layer": layer, "head": head, "query_pos": q,
                                 "query_word": a.labels[q], "key_pos": k,
                                 "key_word": a.labels[k],
                                 "weight": float(a.patterns[layer, head, q, k])})
    return rows


def metrics_json(a: Analysis, checkpoint: str) -> dict:
    """The live metrics as a JSON-ready dict (finite numbers only)."""
    return {"checkpoint": checkpoint, "dial": a.dial.as_dict(), "tokens": a.labels,
            "perplexity": a.perplexity, "metrics": a.metrics,
            "entropy_per_query_bits": a.entropy.tolist(), "notices": a.notices}


def theory_report(model, tokenizer, text: str, dial: Dial, layer: int,
                  temperatures: tuple[float, ...] = THEORY_TEMPERATURES, *,
                  partition: str | None = None, block_size: int | None = None) -> dict | None:
    """Estimated threshold-formula inputs at ``dial`` and the sweep over ``temperatures``
    (in place of the dial's τ) of measured, bounded and estimated cross-block mass, as plain
    numbers; None when the text is too short to have two blocks.

    ``exactly_local`` is True when no query sees a cross-block key (λ = 1 masks them): the
    cross-block mass is then exactly 0, the bound 0 and the threshold 0, whatever the
    formula's other inputs. ``partition`` and ``block_size`` re-block the text as the sidebar's
    "Blocks" does (``inference_partition``; None keeps the trained partition)."""
    from .theory import estimate_threshold_inputs, predicted_vs_measured

    ids, _ = prepare_text(tokenizer, text, model.cfg.n_ctx)
    if len(ids) < 2:
        return None
    tokens = torch.tensor([ids])
    part = inference_partition(model, tokenizer, partition, block_size)
    if int(model.partition_of(tokens, part).max()) < 1:   # one block: nothing crosses a boundary
        return None
    inputs = estimate_threshold_inputs(model, tokens, dial, layer=layer, partition=part)
    rows = predicted_vs_measured(model, tokens, dial, list(temperatures), layer=layer,
                                 partition=part)
    return {"inputs": inputs.as_dict(), "rows": rows, "exactly_local": inputs.exactly_local}
