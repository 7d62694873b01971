"""What a visitor may ask of a sweep started from the app: every bound, in ``APP_LIMITS`` and
``OVERRIDE_BOUNDS``, and the checks that turn the Sweeps form into a ``SweepRequest`` (README
"Security"). No streamlit here; ``ui.launcher`` starts a checked request."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

from localist_core.experiments.sweep import PROTOCOL_NAMES
from localist_core.model.config import (
    LOCALITY_RANGE,
    MODEL_SIZE_LIMITS,
    TEMPERATURE_RANGE,
    ConfigError,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    preset,
)
from localist_core.model.files import UnsafeFileError, read_prompts
from localist_core.paths import PROMPTS_FILE
from ui.launch_budget import budget_problems, map_bytes, run_bytes
from ui.launch_root import (
    app_root,
    disabled_message,
    inside,
    resolved,
    root_problems,
    sweeps_enabled,
)
from ui.notices import shown

# Rough minutes per run on a 2-core CPU (cpu-ref: BENCHMARKS.md), for the estimate shown.
CONFIG_COST = {"tiny": 0.5, "cpu-ref": 15.0, "paper": 360.0}
APP_CONFIGS = ("tiny", "cpu-ref")             # paper takes hours per run: CLI only
RESERVED_OVERRIDES = ("protocol", "penalty_form", "locality")  # set by the form itself
REFUSED_OVERRIDES = ("vocab_size", "random_block_lengths")  # from the corpus, never a visitor
DEFAULT_EVAL_TOKENS = 20_000
# The vocabulary of the server's corpus (WikiText-2; the shipped checkpoints have it), for the
# checks made before the corpus is loaded: the model's size on disk, and the bigram partition's
# int32 pair codes. The sweep checks the real vocabulary again when it starts.
SERVER_VOCAB = 33_278

# Every bound on what a visitor may ask for, in one place, sized for the 2-core CPU server.
APP_LIMITS: dict[str, int] = {
    "lambdas": 11,            # λ values: 0, 0.1, …, 1 (one model per λ and penalty protocol)
    "taus": 8,                # τ values: each multiplies every evaluation
    "eval_tokens": 250_000,   # valid tokens per evaluation (WikiText-2's valid split is ~217k)
    "overrides": 20,          # key=value items
    "override_chars": 100,    # characters per item
    "name_chars": 64,         # characters of a sweep name
    "cutoffs": 4,             # adaptive-softmax cluster boundaries
    "sweeps": 20,             # sweep folders kept under the root (disk); resuming one is free
    "budget_hours": 8,        # runs × time_budget_s: the longest training a sweep may ask for
    "evals_per_run": 100,     # max_steps / eval_interval: training-time evaluations (not in
                              # time_budget_s, which counts training steps only)
}

# Inclusive (low, high) of every numeric override a visitor may give. A key that is not here,
# in FREE_OVERRIDES, or in RESERVED_OVERRIDES is refused. The high ends bound the cost (model
# size, steps, threads); the low ends are those of the config itself, or keep an evaluation
# or a checkpoint from running on every step.
OVERRIDE_BOUNDS: dict[str, tuple[float, float]] = {
    # ModelConfig: size and cost of every step
    "d_model": (8, 512),
    "n_layers": (1, 4),
    "n_heads": (1, 8),
    "d_ff": (8, 2048),
    "n_ctx": (8, 256),
    "block_size": (1, 64),
    "max_block_size": (1, 64),
    "anchors_per_block": (1, 5),
    "dropout": (0.0, 0.9),
    "recruit_alpha": (0.01, 100.0),
    "boundary_bits": (0.0, 100.0),
    "bigram_boundary_bits": (0.0, 100.0),
    "bigram_pairs": (1, MODEL_SIZE_LIMITS["bigram_pairs"]),   # 8 bytes a pair
    "barrier_sharpness": (0.01, 100.0),
    "div_value": (1.0, 16.0),
    "cutoffs": (1, 30_000),   # each boundary (WikiText-2 has ~33k words); how many: APP_LIMITS
    # TrainConfig: how long and how hard the server works
    "max_steps": (1, 5000),
    "time_budget_s": (1.0, 3600.0),
    "batch_size": (1, 64),
    "threads": (1, 2),
    "eval_interval": (10, 5000),
    "ckpt_interval": (10, 5000),
    "warmup_steps": (0, 5000),
    "lr": (1e-6, 1.0),
    "min_lr_ratio": (0.0, 1.0),
    "penalty_scale": (0.0, 100.0),
    "value_l2": (0.0, 1.0),
    "weight_decay": (0.0, 1.0),
    "grad_clip": (0.0, 100.0),
    "seed": (0, 2**31 - 1),
}
# Overrides without a cost to bound: a choice among PARTITIONS, COMPUTE_PRECISIONS or DEVICES
# (a cuda asked of a server without one fails the run with a message), or a switch (a
# forced bf16 on a CPU without it is slow, but the time budget and the 8-hour cap still hold).
FREE_OVERRIDES = ("partition", "precision", "device", "bf16", "lr_by_time",
                  "noncausal_diagnostic")
# A sweep name: never a path, never "." or "..".
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# -- the request ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepRequest:
    """A validated sweep a visitor may start: a name under ``root`` and bounded settings."""

    name: str
    protocols: tuple[str, ...]
    lambdas: tuple[float, ...]
    taus: tuple[float, ...]
    config: str
    root: Path
    overrides: tuple[str, ...] = ()
    eval_tokens: int = DEFAULT_EVAL_TOKENS

    @property
    def folder(self) -> Path:
        """The sweep's own folder under the root."""
        return self.root / self.name

    @property
    def cache_dir(self) -> Path:
        return self.folder / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    @property
    def n_runs(self) -> int:
        return sum(1 if p == "dial" else len(self.lambdas) for p in self.protocols)

    def minutes(self) -> float:
        """A rough wall-clock estimate on this CPU."""
        return self.n_runs * CONFIG_COST.get(self.config, 15.0)


def parse_numbers(text: str, name: str, lo: float, hi: float,
                  most: int | None = None) -> tuple[float, ...]:
    """Comma- or space-separated numbers in [lo, hi], sorted and deduplicated; at most
    ``most`` distinct values."""
    text = str(text)
    if most is not None and len(text) > 32 * most:   # refuse a huge paste before parsing it
        raise ValueError(f"{name}: {len(text):,} characters; at most {most} values are allowed")
    items = [t for t in re.split(r"[,\s;]+", text.strip()) if t]
    if not items:
        raise ValueError(f"{name}: give at least one number, e.g. 0, 0.5, 1")
    vals = set()
    for t in items:
        try:
            v = float(t)
        except ValueError:
            shown = t if len(t) <= 20 else t[:20] + "…"
            raise ValueError(f"{name}: {shown!r} is not a number") from None
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"{name}: {t} is outside [{lo:g}, {hi:g}]")
        vals.add(v)
    if most is not None and len(vals) > most:
        raise ValueError(f"{name}: {len(vals)} values given; at most {most} are allowed")
    return tuple(sorted(vals))


def check_name(name: str) -> str:
    """A sweep name: letters, digits and ``-_.``, starting with a letter or digit, at most
    ``APP_LIMITS["name_chars"]`` characters (so never ``.``, ``..`` or a path)."""
    name = str(name or "").strip()
    most = APP_LIMITS["name_chars"]
    if not name:
        raise ValueError("Sweep name: give a name, e.g. my-sweep")
    if len(name) > most:
        raise ValueError(f"Sweep name: {len(name)} characters; at most {most}")
    if not NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise ValueError(f"Sweep name: {shown!r} is not allowed; use letters, digits and - _ . "
                         f"(starting with a letter or digit), not a path")
    return name


def sweep_folder(name: str, root: Path | None = None) -> Path:
    """``<root>/<name>``, refused (ValueError) when the name is not valid or when the folder,
    its cache or its runs folder resolves outside the root (a link leading out)."""
    root = app_root() if root is None else root
    folder = root / check_name(name)
    for path in (folder, folder / "cache", folder / "runs"):
        try:
            real = path.resolve()
        except (OSError, RuntimeError):   # a link loop
            raise ValueError(f"Sweep name: the folder of {name!r} cannot be resolved (a link "
                             f"loop); refused") from None
        if not inside(real, root) or real == root:
            raise ValueError(f"Sweep name: the folder of {name!r} leads outside the app-sweeps "
                             f"folder (a link); refused")
        if path.exists() and not path.is_dir():
            raise ValueError(f"Sweep name: {shown(path, root)} exists and is not a folder")
    return folder


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _bound_problem(key: str, value) -> str | None:
    """Why ``key=value`` is outside OVERRIDE_BOUNDS (naming key, value and bound), or None."""
    lo, hi = OVERRIDE_BOUNDS[key]
    values = value if isinstance(value, tuple) else (value,)
    if key == "cutoffs" and len(values) > APP_LIMITS["cutoffs"]:
        return f"cutoffs: {len(values)} boundaries; at most {APP_LIMITS['cutoffs']}"
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{key}={v!r} is not a number"
        if v > hi:
            return f"{key}={_num(v)} is above the limit {_num(hi)} on this server"
        if v < lo:
            return f"{key}={_num(v)} is below the minimum {_num(lo)}"
    return None


def check_overrides(config: str, overrides: str) -> tuple[tuple[str, ...], list[str]]:
    """Split and bound ``key=value`` overrides; returns them and every problem found.

    Each key must be in OVERRIDE_BOUNDS (and within its bounds) or FREE_OVERRIDES; then the
    whole config, preset plus overrides, is built and must also fit the bounds and the
    sweep-wide limits.
    """
    text = str(overrides or "")
    if len(text) > APP_LIMITS["overrides"] * (APP_LIMITS["override_chars"] + 1):
        return (), [f"Overrides: {len(text):,} characters; at most {APP_LIMITS['overrides']} "
                    f"items of {APP_LIMITS['override_chars']} characters"]
    items = tuple(text.split())
    if len(items) > APP_LIMITS["overrides"]:
        return (), [f"Overrides: {len(items)} given; at most {APP_LIMITS['overrides']}"]
    problems = []
    for item in items:
        shown = item if len(item) <= 40 else item[:40] + "…"
        key = item.split("=", 1)[0].strip()
        if len(item) > APP_LIMITS["override_chars"]:
            problems.append(f"Overrides: {shown!r} is longer than "
                            f"{APP_LIMITS['override_chars']} characters")
        elif key in RESERVED_OVERRIDES:
            problems.append(f"Overrides: {shown}: set protocol and λ with the form")
        elif key in REFUSED_OVERRIDES:
            problems.append(f"Overrides: {key} comes from the corpus and cannot be set here")
        elif key not in OVERRIDE_BOUNDS and key not in FREE_OVERRIDES:
            allowed = ", ".join(sorted([*OVERRIDE_BOUNDS, *FREE_OVERRIDES]))
            problems.append(f"Overrides: unknown key {key[:40]!r}; allowed keys: {allowed}")
        else:
            try:
                m, t = apply_overrides({}, {}, [item])
            except ConfigError as e:
                problems.append(f"Overrides: {e}")
                continue
            value = {**m, **t}[key]
            problem = _bound_problem(key, value) if key in OVERRIDE_BOUNDS else None
            if problem:
                problems.append(f"Overrides: {problem}")
    if problems:
        return items, problems
    try:
        p = preset(config)
        m, t = apply_overrides(p.model, p.train, list(items))
        model = ModelConfig(**{"vocab_size": SERVER_VOCAB, **m})
        train = TrainConfig(**t)
    except (ConfigError, TypeError, ValueError) as e:
        return items, [f"Overrides: {e}"]
    values = {**dataclasses.asdict(model), **dataclasses.asdict(train)}
    problems = [f"Config {config}: {pr}" for k in OVERRIDE_BOUNDS
                if (pr := _bound_problem(k, values[k]))]
    evals = train.max_steps / train.eval_interval
    if evals > APP_LIMITS["evals_per_run"]:
        problems.append(f"Overrides: max_steps/eval_interval = {evals:g} evaluations during "
                        f"training; at most {APP_LIMITS['evals_per_run']} (raise eval_interval)")
    return items, problems


def _configs(config: str, overrides: tuple[str, ...]) -> tuple[ModelConfig, TrainConfig]:
    p = preset(config)
    m, t = apply_overrides(p.model, p.train, list(overrides))
    return ModelConfig(**{"vocab_size": SERVER_VOCAB, **m}), TrainConfig(**t)


def run_disk_bytes(req: SweepRequest) -> int:
    """What one run of ``req`` writes at its largest (``ui.launch_budget.run_bytes``): its
    parameters are counted on the meta device (no memory), its maps from the sample prompts and
    the most (λ, τ) settings a run of the sweep is evaluated at."""
    import torch

    from localist_core.model.transformer import LocalistLM
    mcfg, _ = _configs(req.config, req.overrides)
    with torch.device("meta"):
        model = LocalistLM(mcfg)
    state = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    params = sum(p.numel() for p in model.parameters())
    try:
        prompts = len(read_prompts(PROMPTS_FILE))
    except UnsafeFileError:
        prompts = 0
    settings = max(len(req.lambdas), 2) * len(req.taus)
    return run_bytes(state, params, map_bytes(prompts, settings, mcfg.n_layers, mcfg.n_heads,
                                              mcfg.n_ctx))


def _time_budget(config: str, overrides: tuple[str, ...]) -> float:
    p = preset(config)
    _, t = apply_overrides(p.model, p.train, list(overrides))
    return float(TrainConfig(**t).time_budget_s)


def check_request(name: str, protocols: list[str], lambdas: str, taus: str, config: str,
                  overrides: str = "", eval_tokens: int = DEFAULT_EVAL_TOKENS,
                  protected: tuple = ()) -> tuple[SweepRequest | None, list[str]]:
    """Validate the Sweeps form; returns the request, or None and every problem found.

    Refused outright while sweeps are off (``sweeps_enabled``) or the root is misplaced
    (``root_problems``). ``protected`` names sweep caches that must never be written.
    """
    if not sweeps_enabled():
        return None, [disabled_message()]
    root = app_root()
    problems = root_problems(root, protected)
    if problems:
        return None, problems
    errors, lam, tau, over = [], (), (), ()
    try:
        name = sweep_folder(name, root).name
    except ValueError as e:
        errors.append(str(e))
    protocols = [p for p in protocols or []]
    bad = [p for p in protocols if p not in PROTOCOL_NAMES]
    if not protocols or bad:
        errors.append(f"Protocols: choose from {', '.join(PROTOCOL_NAMES)}"
                      + (f" ({', '.join(str(b)[:20] for b in bad)} is unknown)" if bad else ""))
    try:
        lam = parse_numbers(lambdas, "λ values", *LOCALITY_RANGE, APP_LIMITS["lambdas"])
    except ValueError as e:
        errors.append(str(e))
    try:
        tau = parse_numbers(taus, "τ values", *TEMPERATURE_RANGE, APP_LIMITS["taus"])
    except ValueError as e:
        errors.append(str(e))
    if config not in APP_CONFIGS:
        errors.append(f"Config: {str(config)[:20]!r} is not offered here; choose "
                      f"{' or '.join(APP_CONFIGS)} (paper takes hours per run: use the CLI)")
    else:
        over, problems = check_overrides(config, overrides)
        errors += problems
    most = APP_LIMITS["eval_tokens"]
    if (not isinstance(eval_tokens, int) or isinstance(eval_tokens, bool)
            or not 1 <= eval_tokens <= most):
        errors.append(f"Evaluation tokens must be a whole number in 1..{most:,}, "
                      f"got {str(eval_tokens)[:20]}")
    if errors:
        return None, errors
    req = SweepRequest(name, tuple(dict.fromkeys(protocols)), lam, tau, config, root, over,
                       eval_tokens)
    hours = req.n_runs * _time_budget(config, over) / 3600
    if hours > APP_LIMITS["budget_hours"]:
        return None, [f"This sweep may train for {req.n_runs} runs × time_budget_s = "
                      f"{hours:.1f} h; at most {APP_LIMITS['budget_hours']} h on this server "
                      f"(fewer λ values or protocols, or a smaller time_budget_s)"]
    for shipped in map(resolved, protected):
        if any(inside(resolved(p), shipped) or inside(shipped, resolved(p))
               for p in (req.cache_dir, req.runs_dir)):
            return None, [f"Sweep name: {name!r} would write into the shipped results"]
    # Disk: what the runs plan to write; ui.launcher.start_sweep adds what the folder and the
    # other sweeps already hold, under the root's lock.
    problems = budget_problems(run_disk_bytes(req), req.n_runs, name)
    return (None, problems) if problems else (req, [])
