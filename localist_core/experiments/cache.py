"""The sweep result cache as a reader sees it (docs/design.md, "Experiments").

One folder per sweep: one ``<run_id>.json`` result per finished run (with a schema version), an
optional ``<run_id>.maps.safetensors`` of stored attention maps beside it, ``baselines.json`` and
``progress.json``. Every file is checked before it is trusted: its size with stat() before it is
opened, JSON depth and the type of every value a page or report reads before use. A refused file
raises (or is reported as) SweepCacheError naming the file and the problem. ``sweep.py`` writes
the cache (through ``write_json_atomic``); this module never imports it.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path

import numpy as np

from ..analysis.inspection import MAX_TOKENS
from ..model.config import ModelConfig, TrainConfig, is_finite_number, is_integer
from ..model.files import (
    KiB,
    MiB,
    atomic_write,
    check_safetensors_file,
    checked_size,
    read_json_file,
    short_repr,
)

SCHEMA_VERSION = 1
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


def write_json_atomic(path: Path, data: dict) -> None:
    """Write a JSON file atomically (a result, baselines.json, progress.json; the app's launch
    records): a reader sees the old file or the whole new one, never part of it. No NaN or
    infinity is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(data, indent=1, allow_nan=False)))


def run_id_problem(run_id) -> str | None:
    """Why ``run_id`` cannot name a run, or None. A run id names the maps file beside its result
    (``<run_id>.maps.safetensors``), so it is a plain name: the letters, digits and ``._+-``
    that ``run_id_for`` writes, not starting with a dot, at most MAX_RUN_ID_CHARS long."""
    if not isinstance(run_id, str) or not run_id:
        return f"run_id must be a non-empty string, got {short_repr(run_id)}"
    if len(run_id) > MAX_RUN_ID_CHARS:
        return f"run_id has {len(run_id)} characters, over the limit of {MAX_RUN_ID_CHARS}"
    if run_id.startswith(".") or not all(c.isalnum() or c in "._+-" for c in run_id):
        return f"run_id {short_repr(run_id)} is not a plain name (letters, digits and ._+- only)"
    return None


class _Malformed(Exception):
    """A value of a sweep result has the wrong type (message: where, what, what it is)."""


_KINDS = {"int": (is_integer, "an integer"), "number": (is_finite_number, "a finite number"),
          "str": (lambda v: isinstance(v, str), "a string"),
          "bool": (lambda v: isinstance(v, bool), "true or false"),
          "object": (lambda v: isinstance(v, dict), "an object"),
          "list": (lambda v: isinstance(v, list), "a list"),
          "ints": (lambda v: isinstance(v, list) and all(map(is_integer, v)),
                   "a list of integers"),
          "numbers": (lambda v: isinstance(v, list) and all(map(is_finite_number, v)),
                      "a list of numbers")}
# A config dataclass field's annotation → the kind its stored value must have.
_ANNOTATION_KINDS = {"int": "int", "float": "number", "str": "str", "bool": "bool",
                     "tuple[int, ...]": "ints", "tuple[float, ...]": "numbers"}


def _need(value, kind: str, where: str) -> None:
    ok, what = _KINDS[kind]
    if not ok(value):
        raise _Malformed(f"{where} must be {what}, got {short_repr(value)}")


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
        at = f"{where}.attention.{short_repr(name)}"
        _need(m, "object", at)
        _need(m.get("mean"), "number", f"{at}.mean")
        _fields(m, at, {"per_layer": "list", "per_head": "list"})
    for pos, row in (ev.get("by_position_in_block") or {}).items():
        at = f"{where}.by_position_in_block.{short_repr(pos)}"
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
        _need(evals, "list", f"metrics.{short_repr(split)}")
        for i, ev in enumerate(evals):
            _check_eval(ev, f"metrics.{short_repr(split)}[{i}]")
    _fields(data.get("training") or {}, "training",
            {"steps": "int", "tokens": "int", "stopped": "str", "history": "list"})
    _fields(data.get("leak_test") or {}, "leak_test",
            {"passed": "bool", "max_abs_diff": "number", "checked": "int"})
    wall = data.get("wall_time_s") or {}
    _fields(wall, "wall_time_s", dict.fromkeys(wall, "number"))


def read_result(path: Path) -> dict:
    """One cached run, checked; raises SweepCacheError naming the file and the problem. The file
    is read only when stat() shows at most MAX_RESULT_BYTES; JSON nested deeper than
    files.MAX_JSON_DEPTH is refused, and so is a value of the wrong type anywhere the pages
    read (``_check_result``)."""
    path = Path(path)
    data = read_json_file(path, MAX_RESULT_BYTES, SweepCacheError, "corrupt JSON")
    if not isinstance(data, dict) or "schema_version" not in data:
        raise SweepCacheError(f"{path}: not a sweep result (no schema_version)")
    version = data["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise SweepCacheError(f"{path}: schema_version {short_repr(version)} is not supported "
                              f"(this code reads {SCHEMA_VERSION})")
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
        raise SweepCacheError(f"{path}: schema_version {short_repr(version)} is not supported "
                              f"(this code reads {SCHEMA_VERSION})")
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
    out. ``load_cache`` reads these, and ``results.cache_stamp`` stats them."""
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
        problems.append(f"{folder}: {len(unread)} result file(s) not read "
                        f"({short_repr(unread)}): one cache is read up to {MAX_CACHE_RUNS} "
                        f"results and {MAX_CACHE_BYTES:,} bytes")
    return runs, problems


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
    header = check_safetensors_file(path, SweepCacheError)
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
