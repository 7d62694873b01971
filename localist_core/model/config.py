"""Frozen configuration dataclasses and the named presets (docs/design.md, "Configs, limits and
checkpoints").

Every config validates itself in ``__post_init__`` so that a bad value fails where it is made,
with a message that names the field, not deep inside a forward pass.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import InitVar, dataclass, field

from .files import short_repr as _r

PARTITIONS = ("fixed", "punctuation", "recruited", "bigram", "random")
# The bigram partition codes a word pair as prev·V + next in int32: V ≤ ⌊√(2³¹ − 1)⌋.
BIGRAM_MAX_VOCAB = 46_340
PENALTY_FORMS = ("none", "weights", "attention")
PROTOCOLS = ("penalty", "dial")
# Compute precision and device of training and evaluation (model/precision.py decides what
# "auto" means on this machine).
COMPUTE_PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# Punctuation's block lengths on the WikiText-2 training split (max_block_size 8), the random
# partition's default: P(length = 1), P(2), …, P(8), to four decimals.
PUNCTUATION_BLOCK_LENGTHS = (0.1266, 0.0832, 0.0752, 0.0706, 0.0633, 0.0635, 0.0584, 0.4591)


# Train fields that say where a run is computed, not what: changing one never renames a run,
# never moves its checkpoint folder and never makes a finished run count as unfinished. The
# thread count changes only the order of floating-point sums (two one-thread runs side by side
# use two cores better than one two-thread run beside other work: BENCHMARKS.md).
WHERE_FIELDS = ("device", "threads")


# Model fields added after runs were trained with their default behaviour: a run's identity
# (its checkpoint folder's hash) leaves one out while it holds its default, so adding a field
# never renames a finished or interrupted run, and its checkpoint is still found and resumed.
LATER_MODEL_FIELDS = ("bigram_boundary_bits", "bigram_pairs", "random_block_lengths")


def model_identity(model: dict) -> dict:
    """A stored model config less ``LATER_MODEL_FIELDS`` that hold their default."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    return {k: v for k, v in model.items()
            if not (k in LATER_MODEL_FIELDS
                    and (v == defaults[k] or isinstance(v, list) and tuple(v) == defaults[k]))}


def what_is_computed(train: dict) -> dict:
    """A stored train config less ``WHERE_FIELDS``: the part that decides the numbers."""
    return {k: v for k, v in train.items() if k not in WHERE_FIELDS}

# Every limit of the dial, in one place. ``dial.Dial`` clamps a value outside its range to the
# nearest edge, with a notice; the sidebar, deep links, training and benchmarks import these.
LOCALITY_RANGE = (0.0, 1.0)          # λ_f: 0 is plain attention, 1 keeps each query in its block
TEMPERATURE_RANGE = (0.05, 10.0)     # τ; the models were trained at τ = 1
ANCHOR_STRENGTH_RANGE = (0.0, 20.0)  # γ, added to the score of each block's anchors
# The sidebar's γ slider shows only [0, 5] of that range, in steps of 0.25. A deep link may not ask
# for more than 5: a slider cannot hold a value past its maximum.
ANCHOR_STRENGTH_SLIDER_MAX = 5.0
# Not a dial limit: the strength of a user's rule (analysis.rules.RULE_STRENGTH_MAX) is its own
# knob, a bias on the pairs a rule names.


# Limits (README "Limits"): the largest model this server builds or loads. ModelConfig refuses
# more, so a checkpoint's config.json cannot make the server build (even on the meta device) or
# allocate an absurd model. The shipped models use vocab 33,278, d_model 256, 2 layers, 4 heads,
# d_ff 1024, n_ctx 128 and 2 cutoffs; the papers' size is d_model 512, 8 heads, n_ctx 256.
MODEL_SIZE_LIMITS = {"vocab_size": 1_000_000, "d_model": 8192, "n_layers": 64, "n_heads": 128,
                     "d_ff": 32768, "n_ctx": 8192, "block_size": 8192, "max_block_size": 8192,
                     "cutoffs": 16,   # cutoffs: how many (one tail cluster each)
                     # the bigram partition's stored word pairs (8 bytes each: ≤ 8 MB)
                     "bigram_pairs": 1_000_000}


class ConfigError(ValueError):
    """A configuration value is out of range, of the wrong type, or unknown."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def is_integer(v) -> bool:
    """An integer, not a bool (JSON's true would otherwise pass as 1)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_finite_number(v) -> bool:
    """A finite real number, not a bool; an integer too large for a float is not finite."""
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _check_types(cfg, ints: tuple[str, ...], numbers_: tuple[str, ...],
                 bools: tuple[str, ...] = (), strs: tuple[str, ...] = ()) -> None:
    """Refuse a field of the wrong type before any range check compares it (a None or a string
    would raise TypeError there, not ConfigError)."""
    for name in ints:
        v = getattr(cfg, name)
        _check(is_integer(v), f"{name} must be an integer, got {_r(v)}")
    for name in numbers_:
        v = getattr(cfg, name)
        _check(is_finite_number(v), f"{name} must be a finite number, got {_r(v)}")
    for name in bools:
        v = getattr(cfg, name)
        _check(isinstance(v, bool), f"{name} must be true or false, got {_r(v)}")
    for name in strs:
        v = getattr(cfg, name)
        _check(isinstance(v, str), f"{name} must be a string, got {_r(v)}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and attention settings of a localist decoder; stored beside every checkpoint."""

    vocab_size: int
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 1024
    n_ctx: int = 128
    dropout: float = 0.1
    block_size: int = 5
    partition: str = "fixed"
    # punctuation and bigram: the longest block; a block that reaches it ends there.
    # The defaults give both adaptive partitions a mean block length near the fixed default (5), so
    # a sweep compares where blocks fall, not how long they are (REPRODUCTION.md).
    max_block_size: int = 8
    # recruited: α of the block code and C, the bits one new boundary costs. With α=1,
    # C=2.5 a block of new words ends after 5 tokens; repeated words extend it.
    recruit_alpha: float = 1.0
    boundary_bits: float = 2.5
    # bigram (blocks.py, bigram.py): α is recruit_alpha; C is its own, since its gain also
    # holds the words' association. The default puts its visible in-block keys on WikiText-2
    # valid near punctuation's 3.91 (scripts/block_lengths.py). bigram_pairs: how many word
    # pairs its Kneser–Ney table stores (the size of the table a checkpoint carries).
    bigram_boundary_bits: float = 3.75
    bigram_pairs: int = 131_072
    # random (blocks.RandomPartition), the control for where punctuation puts boundaries: the
    # share of blocks of length 1, 2, … that punctuation makes on the WikiText-2 training split
    # with max_block_size 8 (counts 47,389, 31,132, 28,153, 26,436, 23,707, 23,784, 21,859 and
    # 171,815; tests/test_blocks.py measures them again), placed at random.
    random_block_lengths: tuple[float, ...] = PUNCTUATION_BLOCK_LENGTHS
    anchors_per_block: int = 3
    # β in b(λ_f) = β·log(1-λ_f): how sharply the dial pushes cross-block scores down.
    barrier_sharpness: float = 4.0
    # Adaptive softmax cluster boundaries (Grave et al. 2017); ids are sorted by frequency.
    cutoffs: tuple[int, ...] = (2000, 10000)
    div_value: float = 4.0
    # The leak the papers' figures need: attention to later tokens of the same block. Never default.
    noncausal_diagnostic: bool = False

    def __post_init__(self) -> None:
        _check(is_integer(self.vocab_size) and self.vocab_size >= 4,
               f"vocab_size must be an integer ≥ 4, got {_r(self.vocab_size)}")
        for name in ("d_model", "n_layers", "n_heads", "d_ff", "n_ctx", "block_size",
                     "max_block_size", "bigram_pairs"):
            v = getattr(self, name)
            _check(is_integer(v) and v >= 1, f"{name} must be a positive integer, got {_r(v)}")
        _check_types(self, ("anchors_per_block",), ("dropout", "recruit_alpha", "boundary_bits",
                                                    "bigram_boundary_bits", "barrier_sharpness",
                                                    "div_value"),
                     ("noncausal_diagnostic",), ("partition",))
        _check(isinstance(self.cutoffs, (tuple, list)) and all(map(is_integer, self.cutoffs)),
               f"cutoffs must be a list of integers, got {_r(self.cutoffs)}")
        for name, limit in MODEL_SIZE_LIMITS.items():
            v = len(self.cutoffs) if name == "cutoffs" else getattr(self, name)
            _check(v <= limit, f"{name}: {v:,} is over this server's limit of {limit:,} "
                               f"(MODEL_SIZE_LIMITS)")
        _check(self.d_model % self.n_heads == 0,
               f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {_r(self.dropout)}")
        _check(self.partition in PARTITIONS,
               f"partition must be one of {PARTITIONS}, got {_r(self.partition)}")
        _check(math.isfinite(self.recruit_alpha) and self.recruit_alpha > 0,
               f"recruit_alpha (α) must be > 0, got {_r(self.recruit_alpha)}")
        _check(math.isfinite(self.boundary_bits) and self.boundary_bits >= 0,
               f"boundary_bits (C) must be ≥ 0, got {_r(self.boundary_bits)}")
        _check(math.isfinite(self.bigram_boundary_bits) and self.bigram_boundary_bits >= 0,
               f"bigram_boundary_bits (C) must be ≥ 0, got {_r(self.bigram_boundary_bits)}")
        _check(self.partition != "bigram" or self.vocab_size <= BIGRAM_MAX_VOCAB,
               f"partition bigram needs vocab_size ≤ {BIGRAM_MAX_VOCAB:,} (its word-pair codes "
               f"are int32), got {self.vocab_size:,}")
        _check(1 <= self.anchors_per_block <= 5,
               f"anchors_per_block must be in 1..5, got {_r(self.anchors_per_block)}")
        _check(math.isfinite(self.barrier_sharpness) and self.barrier_sharpness > 0,
               f"barrier_sharpness (β) must be > 0, got {_r(self.barrier_sharpness)}")
        cut = tuple(int(c) for c in self.cutoffs)   # a list (from JSON) becomes a tuple
        object.__setattr__(self, "cutoffs", cut)
        _check(all(0 < a < b for a, b in zip(cut, cut[1:])) and (not cut or cut[0] > 0),
               f"cutoffs must be increasing and positive, got {_r(cut)}")
        _check(not cut or cut[-1] < self.vocab_size - 1,
               f"last cutoff {cut[-1] if cut else None} must be < vocab_size - 1 "
               f"({self.vocab_size - 1})")
        lengths = self.random_block_lengths
        _check(isinstance(lengths, (tuple, list)) and 1 <= len(lengths) <= 64
               and all(is_finite_number(x) and x >= 0 for x in lengths) and sum(lengths) > 0,
               f"random_block_lengths must be 1 to 64 shares ≥ 0 with a positive sum, got "
               f"{_r(lengths)}")
        object.__setattr__(self, "random_block_lengths", tuple(float(x) for x in lengths))
        # The tail clusters' widths are d_model // div_value**(i+1): a huge div_value overflows
        # that power (OverflowError while the model is built) and leaves the tails empty anyway.
        _check(1.0 <= self.div_value <= 1000.0,
               f"div_value must be in [1, 1000], got {_r(self.div_value)}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained: protocol, penalty form and optimisation budget."""

    protocol: str = "penalty"        # "penalty": λ as a training penalty; "dial": λ_f per batch
    penalty_form: str = "attention"  # "weights" (papers' text), "attention" (ours) or "none"
    locality: float = 0.0            # λ of the penalty protocol
    penalty_scale: float = 0.1       # c in λ·c·Σ ‖·‖_F
    value_l2: float = 1e-4           # μ in μ‖W_V‖²
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int = 100_000
    # A safety stop only: a run that reaches it ends early and records stopped="time_budget".
    # max_steps is the bound of a reproducible run.
    time_budget_s: float = 720.0
    # Let the cosine schedule follow the time budget when it runs out before max_steps. Off in
    # every preset: with it, the weights depend on the machine's speed.
    lr_by_time: bool = False
    eval_interval: int = 500
    ckpt_interval: int = 200
    seed: int = 1234
    # "auto": bf16 autocast only where the hardware runs bf16 natively, else fp32
    # (model/precision.py); "bf16": CPU autocast, head matmuls bf16, its softmax fp32.
    precision: str = "auto"
    # "auto": cuda when torch sees a CUDA device, else cpu; the run records what it chose and why.
    device: str = "auto"
    threads: int = 2
    # Deprecated input, kept so configs written before `precision` load: bf16=true/false means
    # precision="bf16"/"fp32". Not a field: it is never stored, `precision` is.
    bf16: InitVar[bool | None] = None

    def __post_init__(self, bf16: bool | None = None) -> None:
        if bf16 is not None:
            _check(isinstance(bf16, bool), f"bf16 must be true or false, got {_r(bf16)}")
            legacy = "bf16" if bf16 else "fp32"
            _check(self.precision in ("auto", legacy),
                   f"bf16={str(bf16).lower()} (deprecated) contradicts "
                   f"precision={_r(self.precision)}; give precision only")
            object.__setattr__(self, "precision", legacy)
        _check_types(self, ("batch_size", "max_steps", "eval_interval", "ckpt_interval", "threads",
                            "warmup_steps", "seed"),
                     ("locality", "penalty_scale", "value_l2", "lr", "min_lr_ratio", "weight_decay",
                      "grad_clip", "time_budget_s"), ("lr_by_time",),
                     ("protocol", "penalty_form", "precision", "device"))
        _check(self.precision in COMPUTE_PRECISIONS,
               f"precision must be one of {COMPUTE_PRECISIONS}, got {_r(self.precision)}")
        _check(self.device in DEVICES, f"device must be one of {DEVICES}, got {_r(self.device)}")
        _check(self.protocol in PROTOCOLS,
               f"protocol must be one of {PROTOCOLS}, got {_r(self.protocol)}")
        _check(self.penalty_form in PENALTY_FORMS,
               f"penalty_form must be one of {PENALTY_FORMS}, got {_r(self.penalty_form)}")
        lo, hi = LOCALITY_RANGE      # λ of the penalty: refused, not clamped (a config fails)
        _check(lo <= self.locality <= hi,
               f"locality (λ) must be in [{lo:g}, {hi:g}], got {_r(self.locality)}")
        for name in ("penalty_scale", "value_l2", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            _check(math.isfinite(v) and v >= 0, f"{name} must be a finite number ≥ 0, got {_r(v)}")
        _check(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {_r(self.lr)}")
        _check(0.0 <= self.min_lr_ratio <= 1.0,
               f"min_lr_ratio must be in [0, 1], got {_r(self.min_lr_ratio)}")
        for name in ("batch_size", "max_steps", "eval_interval", "ckpt_interval", "threads"):
            v = getattr(self, name)
            _check(v >= 1, f"{name} must be a positive integer, got {_r(v)}")
        _check(self.warmup_steps >= 0,
               f"warmup_steps must be an integer ≥ 0, got {_r(self.warmup_steps)}")
        _check(self.time_budget_s > 0, f"time_budget_s must be > 0, got {_r(self.time_budget_s)}")
        # torch's generators take a 64-bit seed, and training derives seed·1,000,003 + step
        # from it (train.step_generator): a 20-digit seed ended in "Overflow when unpacking
        # long long".
        _check(0 <= self.seed <= SEED_MAX,
               f"seed must be a whole number in 0..{SEED_MAX:,} (2³² − 1), got {_r(self.seed)}")


SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Preset:
    """A named pair of configs; ``vocab_size=None`` means "take it from the corpus"."""

    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # Tests: seconds on a CPU.
    "tiny": Preset(
        model=dict(d_model=32, n_layers=2, n_heads=2, d_ff=64, n_ctx=32, dropout=0.0,
                   cutoffs=(20, 60)),
        train=dict(batch_size=8, max_steps=30, warmup_steps=5, eval_interval=10, ckpt_interval=10,
                   time_budget_s=120.0, precision="fp32", lr=3e-3),
    ),
    # Shipped checkpoints and sweeps: 2000 steps, a step-based schedule (the same weights on
    # any machine); the time budget only stops a run early, and the run records it.
    "cpu-ref": Preset(
        model=dict(d_model=256, n_layers=2, n_heads=4, d_ff=1024, n_ctx=128, dropout=0.1,
                   cutoffs=(2000, 10000)),
        train=dict(batch_size=32, time_budget_s=720.0, max_steps=2000, lr_by_time=False),
    ),
    # The papers' stated size: d_model 512, 8 heads, context 256 (27.4M parameters with
    # WikiText-2's vocabulary and our adaptive softmax; the papers state about 23M). 6,000
    # steps of 32×256 tokens (≈23 passes over WikiText-2's training split); a GPU (README,
    # "Beyond one machine"), or a patient CPU. Not in CI.
    "paper": Preset(
        model=dict(d_model=512, n_layers=2, n_heads=8, d_ff=2048, n_ctx=256, dropout=0.1,
                   cutoffs=(2000, 10000)),
        train=dict(batch_size=32, max_steps=6000, warmup_steps=300, lr=1e-3,
                   eval_interval=500, ckpt_interval=500, time_budget_s=48 * 3600.0,
                   lr_by_time=False),
    ),
    # The papers' first open question, at ≈100M parameters: 12 layers of d_model 768 (99M
    # outside the embedding and the output head, 129M in all with WikiText-2's vocabulary). On
    # WikiText-2 a model this size overfits within a few passes, so give it a larger corpus in
    # the same layout (--data-dir with WikiText-103's train.txt/valid.txt/test.txt). A GPU.
    "scale": Preset(
        model=dict(d_model=768, n_layers=12, n_heads=12, d_ff=3072, n_ctx=256, dropout=0.1,
                   cutoffs=(2000, 10000)),
        train=dict(batch_size=32, max_steps=20_000, warmup_steps=1000, lr=6e-4,
                   eval_interval=1000, ckpt_interval=1000, time_budget_s=48 * 3600.0,
                   lr_by_time=False),
    ),
}


def preset(name: str) -> Preset:
    """Return the named preset, or raise ConfigError listing the known names."""
    if name not in PRESETS:
        raise ConfigError(f"unknown config {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def _coerce(cls: type, key: str, raw: str):
    """Parse a ``key=value`` override string into the type of ``cls.key``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"unknown key {key!r} for {cls.__name__}; known keys: {sorted(fields)}")
    default = fields[key].default
    kind = type(default) if default is not dataclasses.MISSING else int
    return _parse(kind, raw, f"{cls.__name__}.{key}")


def _parse(kind: type, raw: str, name: str):
    """``raw`` as a ``kind`` (bool: true/false, 1/0, yes/no in any case; tuple: integers);
    ConfigError naming ``name`` (``TrainConfig.lr``) when it is not one."""
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return low in ("true", "1", "yes")
        if kind is tuple:
            parts = raw.replace("(", "").replace(")", "").split(",")
            return tuple(int(x) for x in parts if x.strip())
        if kind is float:
            v = float(raw)
            if not math.isfinite(v):
                raise ValueError(raw)
            return v
        return kind(raw)
    except ValueError:
        raise ConfigError(f"bad value for {name}: {raw!r} is not a valid {kind.__name__}") \
            from None


def apply_overrides(model_kw: dict, train_kw: dict, overrides: list[str]) -> tuple[dict, dict]:
    """Apply ``key=value`` strings to the model or train keyword dicts, checking every key."""
    model_kw, train_kw = dict(model_kw), dict(train_kw)
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key == "bf16":      # deprecated alias of precision=bf16|fp32 (an InitVar, no field)
            flag = _parse(bool, raw, "TrainConfig.bf16")
            train_kw.pop("precision", None)
            train_kw["bf16"] = flag
        elif key == "precision":
            train_kw.pop("bf16", None)
            train_kw[key] = _coerce(TrainConfig, key, raw)
        elif key in model_keys:
            model_kw[key] = _coerce(ModelConfig, key, raw)
        elif key in train_keys:
            train_kw[key] = _coerce(TrainConfig, key, raw)
        else:
            raise ConfigError(f"unknown key {key!r}; model keys: {sorted(model_keys)}; "
                              f"train keys: {sorted(train_keys)}")
    return model_kw, train_kw


def config_to_dict(cfg) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(cls: type, data: dict):
    """Rebuild a config, refusing missing or unknown keys with a message that names them."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)} | _deprecated_keys(cls)
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    extra = sorted(set(data) - names)
    missing = sorted(required - set(data))
    if extra:
        raise ConfigError(f"{cls.__name__}: unknown keys {_r(extra)}")
    if missing:
        raise ConfigError(f"{cls.__name__}: missing keys {_r(missing)}")
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    return cls(**kw)


def _deprecated_keys(cls: type) -> set[str]:
    """Keys a stored config may hold that are inputs only (``TrainConfig.bf16``)."""
    return {"bf16"} if cls is TrainConfig else set()
