"""λ-sweeps with a resumable, atomic result cache (docs/design.md, "Experiments").

Each run trains one model (or resumes it), evaluates it on a grid of dial settings and writes one
JSON file into the cache, atomically, with a schema version (``run_one``). ``run_sweep`` runs them
one after another in this process; ``executors.py`` runs them as Ray tasks. Running the same sweep
again skips every finished run; a killed sweep, run again, loses no finished run. Reading and
checking the cache (its file names, size caps and validators) is ``cache.py``'s job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..analysis.evaluate import evaluate_stream, leak_test
from ..analysis.metrics import bigram_perplexity, unigram_perplexity
from ..model.checkpoint import load_model
from ..model.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    model_identity,
    what_is_computed,
)
from ..model.dial import Dial
from ..model.files import atomic_write, remove_own_temps, safetensors_writer
from ..paths import REPO
from .cache import (
    BASELINES_FILE,
    PROGRESS_FILE,
    SCHEMA_VERSION,
    SweepCacheError,
    read_result,
    write_json_atomic,
)
from .data import Corpus
from .train import train

# The grid `sweep` runs when --lambdas / --taus are not given (read by localist_core.cli).
DEFAULT_LAMBDAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_TAUS = (0.25, 0.5, 1.0, 2.0)
PROTOCOL_NAMES = {"attention": ("penalty", "attention"), "weights": ("penalty", "weights"),
                  "dial": ("dial", "none")}


@dataclass(frozen=True)
class RunSpec:
    """One model of a sweep and the dial settings it is evaluated at."""

    run_id: str
    protocol_name: str
    model: ModelConfig
    train: TrainConfig
    settings: tuple[tuple[float, float], ...]   # (λ_f, τ) pairs
    # β used at evaluation when it differs from training (the dial's sharpness is an
    # inference-time choice, docs/design.md); None evaluates with the trained β.
    eval_barrier_sharpness: float | None = None
    train_id: str = ""   # the run whose trained model this evaluates ("" = run_id)

    def stored_config(self) -> dict:
        cfg = {"model": config_to_dict(self.model), "train": config_to_dict(self.train)}
        if self.eval_barrier_sharpness is not None:
            cfg["eval"] = {"barrier_sharpness": self.eval_barrier_sharpness}
        return cfg


def locality_tag(locality: float) -> str:
    """λ as it appears in a run id: one decimal where that is exact (``0.6``, as every cached
    run has it), else every digit it needs (``0.05``), so two λ never share an id.

    >>> locality_tag(0.6), locality_tag(0.0), locality_tag(0.05)
    ('0.6', '0.0', '0.05')
    """
    short = f"{locality:.1f}"
    return short if float(short) == locality else f"{locality:g}"


def run_id_for(protocol_name: str, locality: float, overrides: list[str]) -> str:
    """A readable id: protocol, λ and any model-shape overrides (block_size=3 → block_size3).

    Training-procedure overrides (max_steps, lr, …) do not rename a run; its stored config
    tells them apart, and a changed config is trained again.
    """
    base = "dial" if protocol_name == "dial" else f"{protocol_name}-l{locality_tag(locality)}"
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    tags = sorted(o.replace("=", "") for o in overrides if o.split("=", 1)[0] in model_keys)
    if tags:
        base += "-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in "-".join(tags))
    return base


def run_dir_for(spec: "RunSpec") -> str:
    """The checkpoint folder name: the run id plus a hash of its whole config, so two configs
    never resume from each other's checkpoints. Where a run is computed (``WHERE_FIELDS``: the
    device) is not part of the hash: a run started on one device resumes on another, and a model
    field added later is not part of it while it holds its default (``LATER_MODEL_FIELDS``)."""
    blob = json.dumps({"model": model_identity(config_to_dict(spec.model)),
                       "train": what_is_computed(config_to_dict(spec.train))}, sort_keys=True)
    return f"{spec.train_id or spec.run_id}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def seed_tag(seed: int, config_seed: int) -> str:
    """The run-id suffix of a seed: "" for the config's own seed (the id every single-seed
    cache already uses, so those runs still count as finished), else ``-s<seed>``."""
    return "" if int(seed) == int(config_seed) else f"-s{int(seed)}"


def plan_runs(model_cfg: ModelConfig, train_cfg: TrainConfig, protocols: list[str],
              lambdas: list[float], taus: list[float], overrides: list[str] | None = None,
              eval_barrier_sharpness: float | None = None,
              seeds: list[int] | None = None) -> list[RunSpec]:
    """The runs of a sweep: one per (penalty protocol, λ, seed), one per seed for the dial
    protocol.

    A penalty run is evaluated at λ_f ∈ {0, λ} × τ (dialling a penalty-trained model answers
    the "no retraining" question); the dial run at every λ of the grid × τ. ``seeds`` (default:
    the config's seed alone) go into ``TrainConfig.seed``; every seed but the config's own adds
    ``-s<seed>`` to the run id (``attention-l0.6-s2``).
    """
    seeds = list(dict.fromkeys(int(s) for s in seeds)) if seeds else [train_cfg.seed]
    runs = []
    for name in protocols:
        if name not in PROTOCOL_NAMES:
            raise ValueError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOL_NAMES)}")
        protocol, form = PROTOCOL_NAMES[name]
        grid = [0.0] if name == "dial" else list(lambdas)
        for lam in grid:
            dial_values = sorted(set(lambdas)) if name == "dial" else sorted({0.0, lam})
            settings = tuple((lf, tau) for lf in dial_values for tau in taus)
            base = run_id_for(name, lam, overrides or [])
            for seed in seeds:
                tcfg = dataclasses.replace(train_cfg, protocol=protocol, penalty_form=form,
                                           locality=0.0 if name == "dial" else lam, seed=seed)
                tag = seed_tag(seed, train_cfg.seed)
                run_id = base
                if eval_barrier_sharpness is not None:
                    run_id += f"-beta{eval_barrier_sharpness:g}"
                runs.append(RunSpec(run_id + tag, name, model_cfg, tcfg, settings,
                                    eval_barrier_sharpness, train_id=base + tag))
    return runs


def with_barrier_sharpness(model, sharpness: float):
    """The same weights with another β in b(λ_f) = β·log(1−λ_f), in eval mode."""
    from ..model.transformer import LocalistLM
    new = LocalistLM(dataclasses.replace(model.cfg, barrier_sharpness=float(sharpness)),
                     model.local_entropy)
    new.load_state_dict(model.state_dict())
    new.meta, new.train_config = getattr(model, "meta", {}), getattr(model, "train_config", None)
    return new.eval()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def finished(cache_dir: Path, spec: RunSpec) -> bool:
    """Whether the cache holds a readable result of ``spec`` with the same config (where it ran
    aside): such a run is skipped."""
    path = cache_dir / f"{spec.run_id}.json"
    if not path.is_file():
        return False
    try:
        data = read_result(path)
    except SweepCacheError:
        return False
    return normalized_config(data["config"]) == normalized_config(spec.stored_config())


def normalized_config(stored: dict) -> dict:
    """A stored config with every default filled in, so a run cached before a config field was
    added (with its default) still counts as finished; where it ran (the device) is left out, so
    a run trained on a GPU counts as finished on a CPU and the other way round."""
    out = dict(stored)
    try:
        out["model"] = config_to_dict(config_from_dict(ModelConfig, stored.get("model") or {}))
        out["train"] = what_is_computed(config_to_dict(config_from_dict(TrainConfig,
                                                             stored.get("train") or {})))
    except (ConfigError, TypeError):
        pass   # an unreadable config never matches a valid spec
    return out


@torch.no_grad()
def attention_maps(model, tokenizer, prompts: list[dict], settings) -> dict[str, torch.Tensor]:
    """fp16 patterns ``[layer, head, T, T]`` of each sample prompt at each dial setting."""
    maps = {}
    for p in prompts:
        ids = tokenizer.encode(p["text"])[: model.cfg.n_ctx]
        for lam, tau in settings:
            _, cache = model.run_with_cache(ids, Dial(lam, tau),
                                            names_filter=lambda n: n.endswith("hook_pattern"),
                                            return_type=None)
            pats = torch.stack([cache[f"blocks.{i}.attn.hook_pattern"][0]
                                for i in range(model.cfg.n_layers)])
            maps[f"{p['name']}|{lam:g}|{tau:g}"] = pats.half().contiguous()
    return maps


def baselines(corpus: Corpus) -> dict:
    v = len(corpus.tokenizer)
    return {split: {"unigram_perplexity": unigram_perplexity(corpus.train, corpus.split(split), v),
                    "bigram_kn_perplexity": bigram_perplexity(corpus.train, corpus.split(split), v)}
            for split in ("valid", "test")}


def write_progress(cache_dir: Path, **state) -> None:
    """``progress.json``, which the Sweeps page reads (ui/launcher.py): this process's pid, the
    time, and ``state`` (runs_total, runs_done, current, phase; the ray executor adds
    in_flight)."""
    write_json_atomic(cache_dir / PROGRESS_FILE, {"pid": os.getpid(), "updated": time.time(),
                                                  **state})


def prepare_cache(cache_dir: Path, corpus: Corpus) -> None:
    """Make the cache folder, remove a killed writer's temp files (never a result) and write
    ``baselines.json`` once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_own_temps(cache_dir)
    if not (cache_dir / BASELINES_FILE).is_file():
        write_json_atomic(cache_dir / BASELINES_FILE, {"schema_version": SCHEMA_VERSION,
                                                       **baselines(corpus)})


def run_one(spec: RunSpec, corpus: Corpus, cache_dir: str | Path, runs_dir: str | Path,
            prompts: list[dict] | None = None, eval_tokens: int | None = None,
            progress: bool = True, test_eval: bool = True,
            phase: Callable[[str], None] | None = None) -> dict:
    """Train (or resume) one run, evaluate it and write its result into the cache, atomically;
    return the result as read back from disk. ``phase`` is told "train", then "evaluate".

    Everything a run writes is its own (its result, its maps, its checkpoint folder), so
    runs may execute at once in separate processes (executors.py)."""
    cache_dir, runs_dir = Path(cache_dir), Path(runs_dir)
    path = cache_dir / f"{spec.run_id}.json"
    if phase:
        phase("train")
    t0 = time.time()
    out = runs_dir / run_dir_for(spec)
    res = train(spec.model, spec.train, corpus, out, progress=progress,
                meta={"run_id": spec.run_id})
    model, tok = load_model(out)
    if spec.eval_barrier_sharpness is not None:
        model = with_barrier_sharpness(model, spec.eval_barrier_sharpness)
    t1 = time.time()
    if phase:
        phase("evaluate")
    valid = []
    bar = tqdm(spec.settings, disable=not progress, desc=f"eval {spec.run_id}")
    for lam, tau in bar:
        valid.append(evaluate_stream(model, corpus.valid, Dial(lam, tau),
                                     max_tokens=eval_tokens))
    metrics = {"valid": valid}
    if test_eval:
        metrics["test"] = [evaluate_stream(model, corpus.test, Dial(lam),
                                           max_tokens=eval_tokens, with_attention=False,
                                           by_position_in_block=True)
                           for lam in sorted({s[0] for s in spec.settings})]
    probe = corpus.valid[: 2 * model.cfg.n_ctx].view(2, -1)
    leak = leak_test(model, probe)
    if prompts:
        save_maps = cache_dir / f"{spec.run_id}.maps.safetensors"
        maps = attention_maps(model, tok, prompts, spec.settings)
        atomic_write(save_maps, safetensors_writer(maps))
    data = {
        "schema_version": SCHEMA_VERSION,
        "run_id": spec.run_id,
        "protocol": spec.protocol_name,
        "penalty_form": spec.train.penalty_form,
        "locality": spec.train.locality,
        "config": spec.stored_config(),
        # stopped: "max_steps" (the step-bounded run) or "time_budget" (ended early).
        "training": {"steps": res.steps, "max_steps": spec.train.max_steps,
                     "tokens": res.tokens, "stopped": res.stopped,
                     "precision": res.precision, "precision_reason": res.precision_reason,
                     "device": res.device, "device_reason": res.device_reason,
                     "history": res.history},
        "metrics": metrics,
        "leak_test": leak,
        "wall_time_s": {"train": round(res.train_seconds, 1),
                        "eval": round(time.time() - t1, 1),
                        "total": round(time.time() - t0, 1)},
        "git_commit": git_commit(),
        "checkpoint": str(out),
    }
    write_json_atomic(path, data)
    return read_result(path)  # the on-disk form, the same for skipped runs


def run_sweep(runs: list[RunSpec], corpus: Corpus, cache_dir: str | Path, runs_dir: str | Path,
              prompts: list[dict] | None = None, eval_tokens: int | None = None,
              progress: bool = True, test_eval: bool = True) -> list[dict]:
    """Train and evaluate every unfinished run, one after another in this process (the local
    executor; ``executors.ray_sweep`` runs them on Ray); return every run's result."""
    cache_dir, runs_dir = Path(cache_dir), Path(runs_dir)
    prepare_cache(cache_dir, corpus)
    results = []
    todo = [r for r in runs if not finished(cache_dir, r)]
    done = len(runs) - len(todo)
    for spec in runs:
        if spec not in todo:
            results.append(read_result(cache_dir / f"{spec.run_id}.json"))
            continue

        def phase(name: str, run_id: str = spec.run_id, done: int = done) -> None:
            write_progress(cache_dir, runs_total=len(runs), runs_done=done, current=run_id,
                           phase=name)

        results.append(run_one(spec, corpus, cache_dir, runs_dir, prompts, eval_tokens,
                               progress, test_eval, phase=phase))
        done += 1
    write_progress(cache_dir, runs_total=len(runs), runs_done=done, current=None, phase="done")
    return results
