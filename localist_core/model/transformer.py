"""The localist decoder (docs/design.md, "The model"): word embeddings + learned positions, pre-LN
blocks with locality-dial attention and a GELU MLP, and an adaptive-softmax output over the full
vocabulary.

``run_with_cache`` follows TransformerLens: it returns ``(log_probs, cache)``, the cache keyed by
hook name with TransformerLens's shapes (``blocks.0.attn.hook_pattern`` is
``[batch, head_index, query_pos, key_pos]``) and holding activations only. Block ids and anchors
come from ``partition_info``. ``run_with_hooks`` and ``hooks`` let hook functions replace
activations (``hooks.py``).
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import HookPoint, LocalityAttention, off_block_attention_penalty
from .bigram import TABLE_NAMES, BigramTables, placeholder_tables
from .blocks import anchor_mask, block_anchors, boundary_mask, make_partition
from .config import ModelConfig
from .dial import Dial
from .hooks import attached, name_hook_points


@dataclass(frozen=True)
class PartitionInfo:
    """Where the blocks and anchors of a batch fall (``LocalistLM.partition_info``)."""

    block_ids: Tensor       # (B, T) long, from 0, non-decreasing along a sequence
    anchor_mask: Tensor     # (B, T, T) bool: key j anchors query t's block, as t can see it
    block_anchors: Tensor   # (B, T) bool: each whole block's anchors (for display)


@dataclass
class ForwardOutput:
    hidden: Tensor                  # (B, T, d) after the final LayerNorm
    patterns: list[Tensor]          # per layer, (B, H, T, T)
    block_ids: Tensor               # (B, T)
    attention_penalty: Tensor       # Σ_l Σ_h mean_i ‖A[X_i, ¬X_i]‖_F (0 unless asked for)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(self.fc(x))                    # [batch, pos, d_mlp], before GELU
        post = self.hook_post(F.gelu(pre))                 # [batch, pos, d_mlp]
        return self.dropout(self.proj(post))


class TransformerBlock(nn.Module):
    """Pre-LN: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = LocalityAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_resid_mid, self.hook_mlp_out = HookPoint(), HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x, block_ids, dial, anchors, score_bias=None):
        # Every residual hook is [batch, pos, d_model].
        x = self.hook_resid_pre(x)
        a, pattern = self.attn(self.ln1(x), block_ids, dial, anchors, score_bias)
        x = self.hook_resid_mid(x + self.hook_attn_out(a))
        x = self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))
        return x, pattern


class LocalistLM(nn.Module):
    """Causal decoder-only localist language model."""

    def __init__(self, cfg: ModelConfig, local_entropy: Tensor | None = None,
                 words: list[str] | None = None, bigram: BigramTables | None = None):
        super().__init__()
        self.cfg = cfg
        if cfg.partition == "bigram":
            # The Kneser–Ney tables travel with the weights too, at the size the config names
            # (so a checkpoint's header is checked against it before anything is read). Without
            # them the model holds all-zero placeholders, which loading fills; a forward pass
            # before that says what is missing (bigram.NO_TABLES).
            tables = (bigram if bigram is not None
                      else placeholder_tables(cfg.vocab_size, cfg.bigram_pairs))
            if tables.codes.shape != (cfg.bigram_pairs,) or tables.vocab_size != cfg.vocab_size:
                raise ValueError(f"bigram tables of {len(tables.codes):,} pairs and "
                                 f"{tables.vocab_size:,} words for a config of bigram_pairs="
                                 f"{cfg.bigram_pairs:,} and vocab_size={cfg.vocab_size:,}")
            for name, t in tables.tensors().items():
                self.register_buffer(name, t.clone(), persistent=True)
            self.partition = make_partition(cfg, bigram=self.bigram_tables())
        elif cfg.partition == "punctuation":
            # Which ids end a block travels with the weights, so a checkpoint needs nothing else.
            mask = boundary_mask(words) if words is not None else torch.zeros(cfg.vocab_size,
                                                                             dtype=torch.bool)
            if mask.shape != (cfg.vocab_size,):
                raise ValueError(f"{len(mask)} words for a vocabulary of {cfg.vocab_size}")
            self.register_buffer("boundary_token", mask, persistent=True)
            self.partition = make_partition(cfg, boundary=self.boundary_token)
        else:
            self.partition = make_partition(cfg)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.head = nn.AdaptiveLogSoftmaxWithLoss(cfg.d_model, cfg.vocab_size, list(cfg.cutoffs),
                                                  div_value=cfg.div_value)
        # The anchor table: H(next | w) in bits per vocabulary item, set by the warm-up pass.
        if local_entropy is None:
            local_entropy = torch.zeros(cfg.vocab_size)
        self.register_buffer("local_entropy", local_entropy.float().clone(), persistent=True)
        # run_with_cache, run_with_hooks and hooks() attach hooks to shared modules: one caller
        # at a time, so that sessions sharing one cached model never see each other's
        # activations or interventions.
        self._run_lock = threading.RLock()
        self.apply(self._init_weights)
        for blk in self.blocks:
            blk.attn.equalize_channels()
        name_hook_points(self)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # -- forward -----------------------------------------------------------------------------

    def check_tokens(self, tokens) -> Tensor:
        """Accept a list, 1-D or 2-D tensor of ids; return ``[batch, pos]`` long or raise."""
        t = torch.as_tensor(tokens, dtype=torch.long, device=self.tok_emb.weight.device)
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.dim() != 2 or t.shape[1] == 0:
            raise ValueError(f"tokens must be a non-empty [batch, pos] array, got shape "
                             f"{tuple(t.shape)}")
        if t.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"{t.shape[1]} tokens exceed the model's context of {self.cfg.n_ctx}")
        if int(t.min()) < 0 or int(t.max()) >= self.cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size}), "
                             f"got [{int(t.min())}, {int(t.max())}]")
        return t

    def partition_of(self, tokens: Tensor, partition=None) -> Tensor:
        """``[batch, pos]`` block ids of ``tokens`` under ``partition``, or the trained one."""
        if partition is not None:
            return partition.block_ids(tokens)
        if self.cfg.partition == "punctuation":
            self.partition.boundary = self.boundary_token   # follows .to() and load_state_dict
        elif self.cfg.partition == "bigram":
            self.partition.tables = self.bigram_tables()    # the same
        return self.partition.block_ids(tokens)

    def bigram_tables(self) -> BigramTables | None:
        """The Kneser–Ney tables this model carries (partition=bigram), or None."""
        if self.cfg.partition != "bigram":
            return None
        return BigramTables(*(getattr(self, name) for name in TABLE_NAMES))

    def anchors_for(self, tokens: Tensor, block_ids: Tensor) -> Tensor:
        """``[batch, query, key]`` anchor mask of each query's block (causal unless diagnostic)."""
        return anchor_mask(block_ids, self.local_entropy[tokens], self.cfg.anchors_per_block,
                           causal=not self.cfg.noncausal_diagnostic)

    def partition_info(self, tokens, partition=None) -> PartitionInfo:
        """Block ids and anchors of ``tokens`` under the trained partition, or under
        ``partition`` (as in ``run_with_cache``)."""
        tokens = self.check_tokens(tokens)
        block_ids = self.partition_of(tokens, partition)
        k = self.cfg.anchors_per_block
        return PartitionInfo(block_ids, self.anchors_for(tokens, block_ids),
                             block_anchors(block_ids, self.local_entropy[tokens], k))

    def forward(self, tokens: Tensor, dial: Dial = Dial(), attention_penalty: bool = False,
                partition=None, score_bias: Tensor | None = None) -> ForwardOutput:
        """Run the decoder at ``dial``. ``partition`` overrides the trained one (an
        inference-time experiment); ``score_bias`` ``[B or 1, T, T]`` is added to every layer's
        and head's attention scores (a rule, see ``rules.rule_bias``), inside the causal
        mask."""
        if not isinstance(dial, Dial):
            raise TypeError(f"dial must be a Dial, e.g. Dial(locality=0.6), got {dial!r}")
        batch, n = tokens.shape
        if score_bias is not None:
            if score_bias.dim() != 3 or score_bias.shape[-2:] != (n, n) or \
                    score_bias.shape[0] not in (1, batch):
                raise ValueError(f"score_bias must be [1 or {batch}, {n}, {n}], got "
                                 f"{tuple(score_bias.shape)}")
            if not bool(torch.isfinite(score_bias).all()):
                raise ValueError("score_bias holds NaN or inf")
        block_ids = self.partition_of(tokens, partition)
        anchors = self.anchors_for(tokens, block_ids) if dial.rule_strength != 0.0 else None
        pos_emb = self.pos_emb(torch.arange(n, device=tokens.device)).expand(batch, n, -1)
        # [batch, pos, d_model] each (the positions a broadcast view of the [pos, d_model] rows)
        x = self.hook_embed(self.tok_emb(tokens)) + self.hook_pos_embed(pos_emb)
        x = self.drop(x)
        patterns, penalty = [], x.new_zeros((), dtype=torch.float32)
        for blk in self.blocks:
            x, pattern = blk(x, block_ids, dial, anchors, score_bias)
            patterns.append(pattern)
            if attention_penalty:
                penalty = penalty + off_block_attention_penalty(pattern, block_ids)
        return ForwardOutput(self.ln_final(x), patterns, block_ids, penalty)

    def _head_ctx(self):
        # torch's adaptive forward fails under bf16 autocast, so the exact paths run it in
        # fp32 (training's bf16 head goes through adaptive_nll instead).
        return torch.autocast(self.tok_emb.weight.device.type, enabled=False)

    def token_nll(self, hidden: Tensor, targets: Tensor, bf16_matmuls: bool = False) -> Tensor:
        """Per-token negative log-likelihood (nats), shaped like ``targets``.

        By default this is torch's adaptive softmax in exact fp32. ``bf16_matmuls`` (training
        under bf16) runs the head's and tails' matmuls in bf16 and every softmax in fp32; see
        ``adaptive_nll``.
        """
        flat, tgt = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
        if bf16_matmuls:
            return adaptive_nll(self.head, flat, tgt, matmul_dtype=torch.bfloat16).view_as(targets)
        with self._head_ctx():
            out = self.head(flat.float(), tgt)
        return (-out.output).view_as(targets)

    def log_probs(self, hidden: Tensor) -> Tensor:
        """Exact, normalised log-probabilities over the whole vocabulary, ``[B, T, V]``."""
        with self._head_ctx():
            lp = self.head.log_prob(hidden.float().reshape(-1, hidden.shape[-1]))
        return lp.view(*hidden.shape[:-1], -1)

    def predict(self, hidden: Tensor, chunk: int = 2048) -> Tensor:
        """Most likely next token ``[B, T]``: the exact argmax of the full distribution
        (``top_k`` with k = 1, which never builds the full ``[N, V]`` log-probs)."""
        return self.top_k(hidden, 1, chunk)[1].squeeze(-1)

    def top_k(self, hidden: Tensor, k: int = 5, chunk: int = 2048) -> tuple[Tensor, Tensor]:
        """The exact ``k`` most likely next tokens: ``(log_probs, ids)``, each ``[..., k]``,
        best first: the adaptive head's one top-k scan (``predict`` is k = 1).

        A word's log-prob is its cluster's head log-prob + its logit − the logsumexp of the
        cluster's tail, and never exceeds its cluster's. So a cluster is scored only for rows
        where its head log-prob beats the current k-th best word, and the full ``[N, V]``
        log-probs are never built (torch's ``predict`` builds them for every token whose argmax
        is a cluster, which made evaluation 5× slower).
        """
        head = self.head
        short = head.shortlist_size
        if not 1 <= k <= short:
            raise ValueError(f"k must be in [1, {short}], got {k}")
        flat = hidden.float().reshape(-1, hidden.shape[-1])
        vals, ids = [], []
        with self._head_ctx():
            for h in flat.split(chunk):
                head_lp = torch.log_softmax(head.head(h), dim=-1)      # (n, shortlist + clusters)
                best_lp, best_id = head_lp[:, :short].topk(k, dim=-1)   # (n, k)
                for i, tail in enumerate(head.tail):
                    rows = (head_lp[:, short + i] > best_lp[:, -1]).nonzero().squeeze(-1)
                    if rows.numel() == 0:
                        continue
                    logits = tail(h[rows])                               # (rows, cluster size)
                    top, arg = logits.topk(min(k, logits.shape[-1]), dim=-1)
                    lp = (head_lp[rows, short + i].unsqueeze(-1) + top
                          - torch.logsumexp(logits, dim=-1, keepdim=True))
                    cand_lp = torch.cat([best_lp[rows], lp], -1)
                    cand_id = torch.cat([best_id[rows], head.cutoffs[i] + arg], -1)
                    v, j = cand_lp.topk(k, dim=-1)
                    best_lp[rows], best_id[rows] = v, cand_id.gather(-1, j)
                vals.append(best_lp)
                ids.append(best_id)
        shape = (*hidden.shape[:-1], k)
        return torch.cat(vals).view(shape), torch.cat(ids).view(shape)

    # -- penalties ---------------------------------------------------------------------------

    def cross_channel_group_norm(self) -> Tensor:
        """Σ_{l,h} (‖W_Q^x[h]‖_F + ‖W_K^x[h]‖_F): the papers' `weights` group lasso (before λ·c)."""
        total = self.tok_emb.weight.new_zeros(())
        heads, dh = self.cfg.n_heads, self.cfg.d_head
        for blk in self.blocks:
            w = blk.attn.channel_weights()
            for name in ("W_Q_x", "W_K_x"):
                sq = w[name].reshape(heads, dh, -1).pow(2).sum((1, 2))   # (H,)
                total = total + sq.clamp_min(1e-30).sqrt().sum()
        return total

    def value_sq_norm(self) -> Tensor:
        """Σ_l ‖W_V‖²_F (the L2 penalty on the value weights)."""
        return sum(blk.attn.channel_weights()["W_V"].pow(2).sum() for blk in self.blocks)

    # -- public analysis API -----------------------------------------------------------------

    @contextlib.contextmanager
    def hooks(self, fwd_hooks=()):
        """While inside, ``fwd_hooks`` act on every forward pass of this thread (``run_with_cache``
        and ``run_with_hooks`` included), and other callers of those wait. Each hook is a pair
        ``(name or predicate on names, fn)``; ``fn(activation, hook)`` returns a replacement of
        the same shape, dtype and device (anything else raises ``HookReplacementError``) or None
        to keep it, and ``hook.name`` is the hook's name. Every hook is removed on the way out,
        also after an exception.

        >>> with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", zero_head_0)]):  # doctest: +SKIP
        ...     a, _ = model.run_with_cache(tokens_a)
        ...     b, _ = model.run_with_cache(tokens_b)
        """
        with self._run_lock, attached(self, fwd_hooks):
            yield self

    def run_with_hooks(self, tokens, dial: Dial = Dial(), *, fwd_hooks=(), partition=None,
                       return_type: str | None = "log_probs",
                       score_bias: Tensor | None = None) -> Tensor | None:
        """Run in eval mode at ``dial`` with ``fwd_hooks`` attached for this call only
        (TransformerLens's ``run_with_hooks``; the hooks as in ``hooks``) and return what
        ``run_with_cache`` returns first: log-probs ``[B, T, V]``, the final hidden states
        (``return_type="hidden"``) or None. No gradients are kept."""
        return self.run_with_cache(tokens, dial, names_filter=_nothing, partition=partition,
                                   return_type=return_type, score_bias=score_bias,
                                   fwd_hooks=fwd_hooks)[0]

    @torch.no_grad()
    def run_with_cache(self, tokens, dial: Dial = Dial(), *, names_filter=None,
                       partition=None, return_type: str | None = "log_probs",
                       score_bias: Tensor | None = None, fwd_hooks=()
                       ) -> tuple[Tensor | None, dict]:
        """Run in eval mode at ``dial`` (default ``Dial()``: plain attention) and return
        ``(log_probs [B, T, V], cache)``.

        ``return_type="hidden"`` returns the final hidden states ``[B, T, d_model]`` instead
        (feed them to ``token_nll``, ``top_k`` or ``predict``: much cheaper than the full
        ``[B, T, V]`` log-probs) and ``None`` returns nothing but the cache.

        The cache maps each hook name (``hook_names()``; ``names_filter`` picks some: a name, a
        list or a predicate) to its activation, and holds nothing else. Block ids and anchors
        are ``partition_info(tokens, partition)``; what the dial clamped is ``dial.notices``.
        ``fwd_hooks`` (as in ``hooks``) act during this call, and the cache holds what they
        returned.
        """
        if return_type not in ("log_probs", "hidden", None):
            raise ValueError(f"return_type must be 'log_probs', 'hidden' or None, got "
                             f"{return_type!r}")
        tokens = self.check_tokens(tokens)
        if names_filter is None:
            keep = lambda name: True  # noqa: E731
        elif callable(names_filter):
            keep = names_filter
        else:
            wanted = {names_filter} if isinstance(names_filter, str) else set(names_filter)
            keep = wanted.__contains__
        cache: dict[str, Tensor] = {}
        handles = []
        with self.hooks(fwd_hooks):
            was_training = self.training
            if was_training:      # train()/eval() walk every module: only when needed
                self.eval()
            try:
                # Registered after fwd_hooks, so the cache records their replacements.
                for name, mod in self.named_modules():
                    if isinstance(mod, HookPoint) and keep(name):
                        handles.append(mod.register_forward_hook(
                            lambda _m, _i, out, name=name: cache.__setitem__(name, out.detach())))
                out = self.forward(tokens, dial, partition=partition, score_bias=score_bias)
                if return_type == "log_probs":
                    result = self.log_probs(out.hidden)
                else:
                    result = out.hidden if return_type == "hidden" else None
            finally:
                for h in handles:
                    h.remove()
                if was_training:
                    self.train()
        return result, cache

    def hook_names(self) -> list[str]:
        """Every hook point's name, in module order."""
        return [n for n, m in self.named_modules() if isinstance(m, HookPoint)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _nothing(_name: str) -> bool:
    return False


def adaptive_nll(head: nn.AdaptiveLogSoftmaxWithLoss, hidden: Tensor, targets: Tensor,
                 matmul_dtype: torch.dtype = torch.float32) -> Tensor:
    """−log p(target) per row from ``head``'s own weights: the same sum as torch's
    ``AdaptiveLogSoftmaxWithLoss.forward`` (head log-prob of the word or of its cluster, plus
    the word's log-prob inside the cluster), with the matmuls in ``matmul_dtype`` and every
    log-softmax in fp32.

    Why not torch's forward under autocast: it fails there (``index_copy_`` meets a bf16 source
    in an fp32 output), and with bf16 input it takes the log-softmax in bf16 too. Why not fp32:
    the head's 4096 × 256 × 2002 matmuls were about a quarter of a bf16 training step
    (BENCHMARKS.md). ``matmul_dtype=float32`` gives torch's numbers (a test holds it to them).
    """
    low = matmul_dtype != torch.float32
    short = head.shortlist_size
    if int(targets.min()) < 0 or int(targets.max()) >= head.n_classes:
        raise ValueError(f"targets must lie in [0, {head.n_classes})")
    cluster = torch.bucketize(targets, torch.tensor(head.cutoffs[:-1], device=targets.device),
                              right=True)                     # 0 = shortlist, i = tail i − 1
    head_target = torch.where(cluster == 0, targets, short + cluster - 1)
    kind = hidden.device.type
    with torch.autocast(kind, dtype=matmul_dtype, enabled=low):
        head_logits = head.head(hidden)
    nll = -torch.log_softmax(head_logits, -1, dtype=torch.float32).gather(
        1, head_target.unsqueeze(1)).squeeze(1)
    for i, tail in enumerate(head.tail):
        rows = (cluster == i + 1).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        with torch.autocast(kind, dtype=matmul_dtype, enabled=low):
            logits = tail(hidden.index_select(0, rows))
        local = (targets.index_select(0, rows) - head.cutoffs[i]).unsqueeze(1)
        inner = torch.log_softmax(logits, -1, dtype=torch.float32).gather(1, local).squeeze(1)
        nll = nll.index_add(0, rows, -inner)
    return nll


@contextlib.contextmanager
def autocast_ctx(bf16: bool, device_type: str = "cpu"):
    """bf16 autocast on ``device_type`` ("cpu" or "cuda") when asked for, a no-op otherwise."""
    if bf16:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
    else:
        yield
