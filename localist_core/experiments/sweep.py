"""λ-sweeps with a resumable, atomic result cache (docs/design.md, "Experiments").

Each run trains one model (or resumes it), evaluates it on a grid of dial settings and writes one
JSON file into the cache, atomically, with a schema version. Running the same sweep again skips
every finished run; a killed sweep, run again, loses no finished run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..analysis.evaluate import evaluate_stream, leak_test
from ..analysis.inspection import MAX_TOKENS
from ..analysis.metrics import bigram_perplexity, unigram_perplexity
from ..model.checkpoint import (
    CheckpointError,
    KiB,
    MiB,
    _atomic_write,
    _r,
    check_safetensors_file,
    checked_size,
    load_model,
    read_json_file,
    remove_own_temps,
)
from ..model.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    is_finite_number,
    is_integer,
)
from ..model.dial import Dial
from ..paths import REPO
from .data import Corpus
from .train import train

SCHEMA_VERSION = 1
# The grid `sweep` runs when --lambdas / --taus are not given (read by localist_core.cli).
DEFAULT_LAMBDAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_TAUS = (0.25, 0.5, 1.0, 2.0)
PROTOCOL_NAMES = {"attention": ("penalty", "attention"), "weights": ("penalty", "weights"),
                  "dial": ("dial", "none")}
PROGRESS_FILE = "progress.json"
BASELINES_FILE = "baselines.json"
# Limits (README "Limits"): what reading one sweep cache may cost. Each file's size is compared
# with stat() before it is opened (an oversized one is refused unread). Measured on assets/sweep:
# the largest result is 111 KB (dial.json, 24 evaluations), the 19 results total 0.9 MB,
# baselines.json is 227 bytes and progress.json ~150.
MAX_RESULT_BYTES = 4 * MiB          # one run's result JSON
MAX_SMALL_JSON_BYTES = 64 * KiB     # baselines.json, progress.json
MAX_CACHE_BYTES = 16 * MiB          # all the results of one folder read together
MAX_CACHE_RUNS = 512                # results read from one folder
MAX_CACHE_ENTRIES = 4096            # directory entries listed (a run has a .json and a .maps)
MAX_RUN_ID_CHARS = 200
# A stored attention map is read only when its [layer, head, T, T] tensor holds at most this many
# bytes (the shipped maps hold ~41 KB; the papers' size at T = 256 holds 2 MiB).
MAX_MAP_BYTES = 4 * 2**20


class SweepCacheError(ValueError):
    """A sweep-cache file is corrupt, missing or from another schema version."""


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


def run_id_for(protocol_name: str, locality: float, overrides: list[str]) -> str:
    """A readable id: protocol, λ and any model-shape overrides (block_size=3 → block_size3).

    Training-procedure overrides (max_steps, lr, …) do not rename a run; its stored config
    tells them apart, and a changed config is trained again.
    """
    base = "dial" if protocol_name == "dial" else f"{protocol_name}-l{locality:.1f}"
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    tags = sorted(o.replace("=", "") for o in overrides if o.split("=", 1)[0] in model_keys)
    if tags:
        base += "-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in "-".join(tags))
    return base


def run_dir_for(spec: "RunSpec") -> str:
    """The checkpoint folder name: the run id plus a hash of its whole config, so two configs
    never resume from each other's checkpoints."""
    blob = json.dumps({"model": config_to_dict(spec.model), "train": config_to_dict(spec.train)},
                      sort_keys=True)
    return f"{spec.train_id or spec.run_id}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def plan_runs(model_cfg: ModelConfig, train_cfg: TrainConfig, protocols: list[str],
              lambdas: list[float], taus: list[float], overrides: list[str] | None = None,
              eval_barrier_sharpness: float | None = None) -> list[RunSpec]:
    """The runs of a sweep: one per (penalty protocol, λ), one for the dial protocol.

    A penalty run is evaluated at λ_f ∈ {0, λ} × τ (dialling a penalty-trained model answers
    the "no retraining" question); the dial run at every λ of the grid × τ.
    """
    runs = []
    for name in protocols:
        if name not in PROTOCOL_NAMES:
            raise ValueError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOL_NAMES)}")
        protocol, form = PROTOCOL_NAMES[name]
        grid = [0.0] if name == "dial" else list(lambdas)
        for lam in grid:
            tcfg = dataclasses.replace(train_cfg, protocol=protocol, penalty_form=form,
                                       locality=0.0 if name == "dial" else lam)
            dial_values = sorted(set(lambdas)) if name == "dial" else sorted({0.0, lam})
            settings = tuple((lf, tau) for lf in dial_values for tau in taus)
            run_id = run_id_for(name, lam, overrides or [])
            if eval_barrier_sharpness is not None:
                run_id += f"-beta{eval_barrier_sharpness:g}"
            runs.append(RunSpec(run_id, name, model_cfg, tcfg, settings, eval_barrier_sharpness,
                                train_id=run_id_for(name, lam, overrides or [])))
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


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda p: Path(p).write_text(json.dumps(data, indent=1, allow_nan=False)))


def run_id_problem(run_id) -> str | None:
    """Why ``run_id`` cannot name a run, or None. A run id names the maps file beside its result
    (``<run_id>.maps.safetensors``), so it is a plain name: the letters, digits and ``._+-``
    that ``run_id_for`` writes, not starting with a dot, at most MAX_RUN_ID_CHARS long."""
    if not isinstance(run_id, str) or not run_id:
        return f"run_id must be a non-empty string, got {_r(run_id)}"
    if len(run_id) > MAX_RUN_ID_CHARS:
        return f"run_id has {len(run_id)} characters, over the limit of {MAX_RUN_ID_CHARS}"
    if run_id.startswith(".") or not all(c.isalnum() or c in "._+-" for c in run_id):
        return f"run_id {_r(run_id)} is not a plain name (letters, digits and ._+- only)"
    return None


class _Malformed(Exception):
    """A value of a sweep result has the wrong type (message: where, what, what it is)."""


_KINDS = {"int": (is_integer, "an integer"), "number": (is_finite_number, "a finite number"),
          "str": (lambda v: isinstance(v, str), "a string"),
          "bool": (lambda v: isinstance(v, bool), "true or false"),
          "object": (lambda v: isinstance(v, dict), "an object"),
          "list": (lambda v: isinstance(v, list), "a list"),
          "ints": (lambda v: isinstance(v, list) and all(map(is_integer, v)),
                   "a list of integers")}
# A config dataclass field's annotation → the kind its stored value must have.
_ANNOTATION_KINDS = {"int": "int", "float": "number", "str": "str", "bool": "bool",
                     "tuple[int, ...]": "ints"}


def _need(value, kind: str, where: str) -> None:
    ok, what = _KINDS[kind]
    if not ok(value):
        raise _Malformed(f"{where} must be {what}, got {_r(value)}")


def _fields(obj: dict, where: str, kinds: dict[str, str]) -> None:
    """Each key of ``kinds`` that ``obj`` holds (not null) has that kind; others are not read."""
    for key, kind in kinds.items():
        if obj.get(key) is not None:
            _need(obj[key], kind, f"{where}.{key}" if where else key)


def _config_kinds(cls) -> dict[str, str]:
    return {f.name: _ANNOTATION_KINDS[f.type] for f in dataclasses.fields(cls)}


def _check_eval(ev, where: str) -> None:
    """One evaluation: what find_eval, make_point, position_rows and Compare read."""
    _need(ev, "object", where)
    _need(ev.get("dial"), "object", f"{where}.dial")
    for key in ("locality", "attn_temperature"):
        _need(ev["dial"].get(key), "number", f"{where}.dial.{key}")
    _fields(ev["dial"], f"{where}.dial", {"rule_strength": "number"})
    _need(ev.get("perplexity"), "number", f"{where}.perplexity")
    _fields(ev, where, {"accuracy": "number", "nll": "number", "entropy_ceiling_bits": "number",
                        "tokens": "int", "notices": "list", "attention": "object",
                        "by_position_in_block": "object"})
    for name, m in (ev.get("attention") or {}).items():
        at = f"{where}.attention.{_r(name)}"
        _need(m, "object", at)
        _need(m.get("mean"), "number", f"{at}.mean")
        _fields(m, at, {"per_layer": "list", "per_head": "list"})
    for pos, row in (ev.get("by_position_in_block") or {}).items():
        at = f"{where}.by_position_in_block.{_r(pos)}"
        _need(row, "object", at)
        _fields(row, at, {"tokens": "int", "perplexity": "number", "accuracy": "number"})


def _check_result(data: dict) -> None:
    """Every value of a result that a page or report reads has the type it expects; raises
    _Malformed naming the first that does not. Keys nobody reads are not checked."""
    problem = run_id_problem(data["run_id"])
    if problem:
        raise _Malformed(problem)
    _need(data["config"], "object", "config")
    _need(data["metrics"], "object", "metrics")
    _fields(data, "", {"protocol": "str", "penalty_form": "str", "locality": "number",
                       "training": "object", "leak_test": "object", "wall_time_s": "object",
                       "git_commit": "str", "checkpoint": "str"})
    cfg = data["config"]
    _fields(cfg, "config", {"model": "object", "train": "object", "eval": "object"})
    for part, cls in (("model", ModelConfig), ("train", TrainConfig)):
        _fields(cfg.get(part) or {}, f"config.{part}", _config_kinds(cls))
    _fields(cfg.get("eval") or {}, "config.eval", {"barrier_sharpness": "number"})
    metrics = data["metrics"]
    _need(metrics.get("valid"), "list", "metrics.valid")
    for split, evals in metrics.items():
        _need(evals, "list", f"metrics.{_r(split)}")
        for i, ev in enumerate(evals):
            _check_eval(ev, f"metrics.{_r(split)}[{i}]")
    _fields(data.get("training") or {}, "training",
            {"steps": "int", "tokens": "int", "stopped": "str", "history": "list"})
    _fields(data.get("leak_test") or {}, "leak_test",
            {"passed": "bool", "max_abs_diff": "number", "checked": "int"})
    wall = data.get("wall_time_s") or {}
    _fields(wall, "wall_time_s", dict.fromkeys(wall, "number"))


def read_result(path: Path) -> dict:
    """One cached run, checked; raises SweepCacheError naming the file and the problem. The file
    is read only when stat() shows at most MAX_RESULT_BYTES; JSON nested deeper than
    checkpoint.MAX_JSON_DEPTH is refused, and so is a value of the wrong type anywhere the pages
    read (``_check_result``)."""
    path = Path(path)
    data = read_json_file(path, MAX_RESULT_BYTES, SweepCacheError, "corrupt JSON")
    if not isinstance(data, dict) or "schema_version" not in data:
        raise SweepCacheError(f"{path}: not a sweep result (no schema_version)")
    version = data["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise SweepCacheError(f"{path}: schema_version {_r(version)} is not supported (this "
                              f"code reads {SCHEMA_VERSION})")
    for key in ("run_id", "config", "metrics"):
        if key not in data:
            raise SweepCacheError(f"{path}: missing key {key!r}")
    try:
        _check_result(data)
    except _Malformed as e:
        raise SweepCacheError(f"{path}: malformed result: {e}") from None
    return data


def read_baselines_file(path: Path) -> dict:
    """``baselines.json`` (at most MAX_SMALL_JSON_BYTES), checked: schema version, and each
    split an object of finite numbers (or null); raises SweepCacheError naming the file."""
    path = Path(path)
    data = read_json_file(path, MAX_SMALL_JSON_BYTES, SweepCacheError, "corrupt JSON")
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(data, dict) or type(version) is not int or version != SCHEMA_VERSION:
        raise SweepCacheError(f"{path}: schema_version {_r(version)} is not supported (this code "
                              f"reads {SCHEMA_VERSION})")
    try:
        for split in ("valid", "test"):
            _fields(data, "", {split: "object"})
            _fields(data.get(split) or {}, split, dict.fromkeys(data.get(split) or {}, "number"))
    except _Malformed as e:
        raise SweepCacheError(f"{path}: malformed baselines: {e}") from None
    return data


def _baselines_problem(path: Path) -> str | None:
    try:
        read_baselines_file(path)
    except SweepCacheError as e:
        return f"{e}; the baselines are not drawn"
    return None


def cache_files(cache_dir: str | Path) -> tuple[list[Path], bool]:
    """The ``*.json`` files of a cache folder, sorted, among its first MAX_CACHE_ENTRIES
    entries (a folder of 100k files costs one bounded listing), and whether any entry was left
    out. ``load_cache`` reads these, and ``tradeoff.cache_stamp`` stats them."""
    try:
        with os.scandir(cache_dir) as it:
            entries = list(itertools.islice(it, MAX_CACHE_ENTRIES + 1))
    except OSError:
        return [], False
    names = sorted(e.name for e in entries[:MAX_CACHE_ENTRIES] if e.name.endswith(".json"))
    return [Path(cache_dir) / n for n in names], len(entries) > MAX_CACHE_ENTRIES


def load_cache(cache_dir: str | Path) -> tuple[list[dict], list[str]]:
    """Every readable run in a cache folder, and a message for every file that was refused. At
    most MAX_CACHE_RUNS results and MAX_CACHE_BYTES of them are read; the rest are named."""
    folder = Path(cache_dir)
    if not folder.is_dir():
        return [], [f"{folder}: no sweep cache folder"]
    runs, problems = [], []
    files, more = cache_files(folder)
    if more:
        problems.append(f"{folder}: more than {MAX_CACHE_ENTRIES} entries; only the first "
                        f"{MAX_CACHE_ENTRIES} listed were looked at")
    total, unread = 0, []
    for path in files:
        if path.name == PROGRESS_FILE:
            continue
        if path.name == BASELINES_FILE:
            problem = _baselines_problem(path)
            if problem:
                problems.append(problem)
            continue
        try:
            size = checked_size(path, MAX_RESULT_BYTES, SweepCacheError)
            if len(runs) >= MAX_CACHE_RUNS or total + size > MAX_CACHE_BYTES:
                unread.append(path.name)
                continue
            total += size
            runs.append(read_result(path))
        except SweepCacheError as e:
            problems.append(str(e))
        except Exception as e:  # a bug here must cost one file, never the page
            problems.append(f"{path}: could not be checked ({type(e).__name__}: {e})")
    if unread:
        problems.append(f"{folder}: {len(unread)} result file(s) not read ({_r(unread)}): one "
                        f"cache is read up to {MAX_CACHE_RUNS} results and {MAX_CACHE_BYTES:,} "
                        f"bytes")
    return runs, problems


def _finished(cache_dir: Path, spec: RunSpec) -> bool:
    path = cache_dir / f"{spec.run_id}.json"
    if not path.is_file():
        return False
    try:
        data = read_result(path)
    except SweepCacheError:
        return False
    return _normalized(data["config"]) == _normalized(spec.stored_config())


def _normalized(stored: dict) -> dict:
    """A stored config with every default filled in, so a run cached before a config field was
    added (with its default) still counts as finished."""
    out = dict(stored)
    try:
        out["model"] = config_to_dict(config_from_dict(ModelConfig, stored.get("model") or {}))
        out["train"] = config_to_dict(config_from_dict(TrainConfig, stored.get("train") or {}))
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


def _progress(cache_dir: Path, **state) -> None:
    write_json_atomic(cache_dir / PROGRESS_FILE, {"pid": os.getpid(), "updated": time.time(),
                                                  **state})


def run_sweep(runs: list[RunSpec], corpus: Corpus, cache_dir: str | Path, runs_dir: str | Path,
              prompts: list[dict] | None = None, eval_tokens: int | None = None,
              progress: bool = True, test_eval: bool = True) -> list[dict]:
    """Train and evaluate every unfinished run; return every run's result."""
    cache_dir, runs_dir = Path(cache_dir), Path(runs_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_own_temps(cache_dir)   # a killed writer's temp files; never a result
    if not (cache_dir / BASELINES_FILE).is_file():
        write_json_atomic(cache_dir / BASELINES_FILE, {"schema_version": SCHEMA_VERSION,
                                                       **baselines(corpus)})
    results = []
    todo = [r for r in runs if not _finished(cache_dir, r)]
    done = len(runs) - len(todo)
    for spec in runs:
        path = cache_dir / f"{spec.run_id}.json"
        if spec not in todo:
            results.append(read_result(path))
            continue
        _progress(cache_dir, runs_total=len(runs), runs_done=done, current=spec.run_id,
                  phase="train")
        t0 = time.time()
        out = runs_dir / run_dir_for(spec)
        res = train(spec.model, spec.train, corpus, out, progress=progress,
                    meta={"run_id": spec.run_id})
        model, tok = load_model(out)
        if spec.eval_barrier_sharpness is not None:
            model = with_barrier_sharpness(model, spec.eval_barrier_sharpness)
        t1 = time.time()
        _progress(cache_dir, runs_total=len(runs), runs_done=done, current=spec.run_id,
                  phase="evaluate")
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
            _atomic_write(save_maps, lambda p, m=maps: save_file(m, p))
        data = {
            "schema_version": SCHEMA_VERSION,
            "run_id": spec.run_id,
            "protocol": spec.protocol_name,
            "penalty_form": spec.train.penalty_form,
            "locality": spec.train.locality,
            "config": spec.stored_config(),
            "training": {"steps": res.steps, "tokens": res.tokens, "stopped": res.stopped,
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
        results.append(read_result(path))  # the on-disk form, the same for skipped runs
        done += 1
    _progress(cache_dir, runs_total=len(runs), runs_done=done, current=None, phase="done")
    return results


def cached_run_pattern(cache_dir: str | Path, run_id: str, prompt: str, locality: float,
                       attn_temperature: float) -> np.ndarray | None:
    """A sweep run's stored ``[layer, head, T, T]`` pattern for a sample prompt at one
    (λ_f, τ), or None if the cache does not hold it (or T exceeds MAX_TOKENS, so it could
    never match a live text). Lets Compare show runs whose checkpoints are not shipped. Only
    the header and that one tensor are read, after the header shows a 4-D float tensor of at
    most MAX_MAP_BYTES. A maps file that is not safetensors (a pickle, a truncated file) or a
    run id that is not a plain name raises SweepCacheError naming it; nothing is unpickled."""
    from safetensors import safe_open

    problem = run_id_problem(run_id)
    if problem:
        raise SweepCacheError(f"{Path(cache_dir)}: {problem}")
    path = Path(cache_dir) / f"{run_id}.maps.safetensors"
    if not path.is_file():
        return None
    try:
        header = check_safetensors_file(path)
    except CheckpointError as e:
        raise SweepCacheError(str(e)) from None
    key = f"{prompt}|{locality:g}|{attn_temperature:g}"
    entry = header.get(key) if key != "__metadata__" else None
    if entry is None:
        return None
    shape, (start, end) = entry["shape"], entry["data_offsets"]
    if entry["dtype"] not in ("F16", "F32") or len(shape) != 4 or shape[2] != shape[3]:
        raise SweepCacheError(f"{path}: {key!r} is a {entry['dtype']} tensor of shape {shape}, "
                              f"not a float [layer, head, T, T] attention map")
    if shape[3] > MAX_TOKENS:
        return None
    if end - start > MAX_MAP_BYTES:
        raise SweepCacheError(f"{path}: {key!r} holds {end - start:,} bytes, over the "
                              f"{MAX_MAP_BYTES:,}-byte limit for one stored map; not read")
    try:
        with safe_open(str(path), framework="np") as f:
            arr = f.get_tensor(key)
    except Exception as e:  # safetensors raises its own error types
        raise SweepCacheError(f"{path}: cannot be read as safetensors ({e})") from None
    return arr.astype(np.float32)
