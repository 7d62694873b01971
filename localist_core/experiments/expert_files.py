"""Model-level recruitment results on disk: per (seed, bits_per_param) run a JSON file and a
safetensors file of its adapters, and ``summary.json`` over them. Written atomically; read only
after size, structure and shape checks (never pickle), so a page can trust what it gets."""
from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..model.files import (
    MAX_HEADER_BYTES,
    MiB,
    UnsafeFileError,
    atomic_write,
    check_safetensors_file,
    checked_size,
    read_json_file,
    safetensors_writer,
    short_repr,
)
from .cache import write_json_atomic
from .experts import MAX_EXPERTS_RANGE, RANK_RANGE
from .stats import finite, paired_difference, summary

FORMAT, FORMAT_VERSION = "localist-experts", 1
SUMMARY = "summary.json"
# A run's files: run-s<seed>-b<bits per param>.json and .safetensors.
RUN_FILE = re.compile(r"run-s(\d{1,10})-b([0-9][0-9.e+-]{0,15})\.(json|safetensors)")
# Limits (README "Limits"): a run of 10,000 documents with 64 experts stores ≈ 1 MiB of JSON.
MAX_RUN_BYTES = 8 * MiB
MAX_SUMMARY_BYTES = 1 * MiB
MAX_RUNS = 256                       # runs read from one folder
MAX_ENTRIES = 4 * MAX_RUNS + 16      # directory entries listed
MAX_D_MODEL = 8192


class ExpertsError(UnsafeFileError):
    """A results file is missing, too big, malformed or from another format version."""


def run_stem(seed: int, bits_per_param: float) -> str:
    """The file name (without suffix) of one run."""
    return f"run-s{seed}-b{bits_per_param:g}"


def write_run(folder: Path, run: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write a run's adapters, then its JSON (the JSON's presence marks a finished run)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = run_stem(run["seed"], run["bits_per_param"])
    atomic_write(folder / f"{stem}.safetensors", safetensors_writer(tensors))
    write_json_atomic(folder / f"{stem}.json", {"format": FORMAT, "format_version":
                                                FORMAT_VERSION, **run})
    return folder / f"{stem}.json"


# -- checks ----------------------------------------------------------------------------------------

def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


KINDS = {"int": _int, "number": lambda v: finite(v) is not None, "str": lambda v: isinstance(
    v, str), "bool": lambda v: isinstance(v, bool), "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict), "int?": lambda v: v is None or _int(v),
    "number?": lambda v: v is None or finite(v) is not None,
    "str?": lambda v: v is None or isinstance(v, str), "bool?": lambda v: v is None or
    isinstance(v, bool)}


def _need(obj: dict, where: str, kinds: dict[str, str]) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be an object")
    for key, kind in kinds.items():
        if not KINDS[kind](obj.get(key)):
            raise ValueError(f"{where}.{key} must be {kind.rstrip('?')}"
                             f"{' or null' if kind.endswith('?') else ''}, got "
                             f"{short_repr(obj.get(key))}")


def _check_run(data) -> None:
    """Every value a page or the summary reads has its type, and the experts form a pool (ids
    0…K−1 in order, each parent before its child); raises ValueError naming the first that
    does not."""
    _need(data, "run", {"format": "str", "format_version": "int", "settings": "object",
                        "seed": "int", "bits_per_param": "number", "experts": "list",
                        "attempts": "list", "heldout": "object", "stream": "object",
                        "stream_code": "object", "single": "object"})
    if data["format"] != FORMAT or data["format_version"] != FORMAT_VERSION:
        raise ValueError(f"not a {FORMAT} file of version {FORMAT_VERSION}")
    s = data["settings"]
    _need(s, "settings", {"rank": "int", "d_model": "int", "base": "object", "stream": "str?"})
    _need(s["base"], "settings.base", {"name": "str?", "sha256": "str?"})
    _need(data["stream"], "stream", {"docs": "int", "tokens": "int"})
    if not (RANK_RANGE[0] <= s["rank"] <= RANK_RANGE[1] and 1 <= s["d_model"] <= MAX_D_MODEL):
        raise ValueError(f"settings: rank {s['rank']} or d_model {s['d_model']} out of range")
    experts = data["experts"]
    if not 1 <= len(experts) <= MAX_EXPERTS_RANGE[1]:
        raise ValueError(f"{len(experts)} experts; a pool holds 1 to {MAX_EXPERTS_RANGE[1]}")
    for i, e in enumerate(experts):
        _need(e, f"experts[{i}]", {"id": "int", "parent": "int?", "recruited_at_doc": "int?",
                                   "savings_bits": "number", "cost_bits": "number",
                                   "params": "int", "docs": "list", "titles": "list",
                                   "tokens": "int", "heldout_docs": "int", "top_words": "list"})
        if e["id"] != i or (i == 0) != (e["parent"] is None) or not (
                e["parent"] is None or 0 <= e["parent"] < i):
            raise ValueError(f"experts[{i}]: ids must run 0…K−1, each parent before its child")
        if not all(isinstance(t, str) for t in e["titles"]):
            raise ValueError(f"experts[{i}].titles must be strings")
        for j, w in enumerate(e["top_words"]):
            _need(w, f"experts[{i}].top_words[{j}]", {"word": "str", "z": "number",
                                                      "count": "int"})
    for i, a in enumerate(data["attempts"]):
        _need(a, f"attempts[{i}]", {"doc_index": "int", "parent": "int", "seed_title": "str",
                                    "candidates": "int", "docs_moved": "int",
                                    "savings_bits": "number", "cost_bits": "number",
                                    "recruited": "bool", "child": "int?", "steps": "int"})
    h = data["heldout"]
    _need(h, "heldout", {"docs": "int", "titles": "list", "routes": "list", "base": "object",
                         "single": "object", "pool": "object"})
    for key in ("base", "single", "pool"):
        _need(h[key], f"heldout.{key}", {"bits": "number", "tokens": "int",
                                         "bits_per_token": "number", "perplexity": "number"})
    if len(h["routes"]) != len(h["titles"]) or not all(
            _int(r) and 0 <= r < len(experts) for r in h["routes"]):
        raise ValueError("heldout.routes must name one expert per held-out title")
    _need(data["single"], "single", {"steps": "int"})


def read_run(path: Path) -> dict:
    """One run's JSON, checked (``_check_run``); raises ExpertsError naming the file."""
    data = read_json_file(path, MAX_RUN_BYTES, ExpertsError)
    try:
        _check_run(data)
    except ValueError as e:
        raise ExpertsError(f"{path}: {e}") from None
    return data


def adapter_shapes(run: dict) -> dict[str, tuple[int, int]]:
    """The tensors a run's safetensors file must hold, by name, and their shapes."""
    d, r = run["settings"]["d_model"], run["settings"]["rank"]
    names = ["single"] + [f"expert.{e['id']}" for e in run["experts"][1:]]
    return {f"{n}.{m}": shape for n in names for m, shape in (("A", (d, r)), ("B", (r, d)))}


def read_adapters(path: Path, run: dict) -> dict[str, torch.Tensor]:
    """The adapters of ``run`` from ``path``: its size (at most what the shapes need plus a
    header) is checked before it is opened, its header against the names and shapes the run
    implies before any number is read, and every number must be finite."""
    want = adapter_shapes(run)
    cap = sum(4 * math.prod(s) for s in want.values()) + MAX_HEADER_BYTES
    checked_size(path, cap, ExpertsError)
    header = check_safetensors_file(path, ExpertsError)
    have = {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"}
    if have != {k: ("F32", s) for k, s in want.items()}:
        raise ExpertsError(f"{path}: its tensors do not match the run's experts (rank "
                           f"{run['settings']['rank']}, d_model {run['settings']['d_model']})")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ExpertsError(f"{path}: cannot be read as safetensors ({e})") from None
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise ExpertsError(f"{path}: holds NaN or inf values")
    return tensors


def list_runs(folder: Path) -> tuple[list[Path], bool]:
    """The run JSON files of ``folder`` among its first MAX_ENTRIES entries, and whether any
    entry was left out."""
    try:
        with os.scandir(folder) as it:
            entries = list(itertools.islice(it, MAX_ENTRIES + 1))
    except OSError:
        return [], False
    names = sorted(e.name for e in entries[:MAX_ENTRIES]
                   if (m := RUN_FILE.fullmatch(e.name)) and m.group(3) == "json")
    return [folder / n for n in names], len(entries) > MAX_ENTRIES


def load_runs(folder: str | Path) -> tuple[list[dict], list[str]]:
    """Every readable run of a results folder (at most MAX_RUNS), sorted by bits per parameter
    then seed, and one message per file refused."""
    files, more = list_runs(Path(folder))
    runs, problems = [], []
    if more:
        problems.append(f"{folder}: more than {MAX_ENTRIES} entries; only those listed first "
                        f"were read")
    for path in files[:MAX_RUNS]:
        try:
            runs.append({**read_run(path), "file": path.stem})
        except ExpertsError as e:
            problems.append(str(e))
    if len(files) > MAX_RUNS:
        problems.append(f"{folder}: {len(files) - MAX_RUNS} runs beyond the first {MAX_RUNS} "
                        f"were not read")
    return sorted(runs, key=lambda r: (r["bits_per_param"], r["seed"])), problems


# -- the summary -----------------------------------------------------------------------------------

def summarise(runs: list[dict], settings: dict) -> dict:
    """summary.json: one row per run, and per bits-per-parameter value the number recruited and
    the held-out bits per token (mean, sd, 95% interval over seeds), with the pool − single
    adapter difference paired by seed."""
    rows = [{"file": run_stem(r["seed"], r["bits_per_param"]), "seed": r["seed"],
             "bits_per_param": r["bits_per_param"], "recruited": len(r["experts"]) - 1,
             "attempts": len(r["attempts"]), "steps": r["single"]["steps"],
             **{f"{k}_bits_per_token": r["heldout"][k]["bits_per_token"]
                for k in ("base", "single", "pool")}} for r in runs]
    by_cost = []
    for bpp, group in itertools.groupby(sorted(rows, key=lambda r: (r["bits_per_param"],
                                                                     r["seed"])),
                                        key=lambda r: r["bits_per_param"]):
        group = list(group)
        pool = {r["seed"]: r["pool_bits_per_token"] for r in group}
        single = {r["seed"]: r["single_bits_per_token"] for r in group}
        by_cost.append({
            "bits_per_param": bpp, "seeds": [r["seed"] for r in group],
            "cost_bits": 2 * settings["d_model"] * settings["rank"] * bpp,
            "recruited": summary([r["recruited"] for r in group]),
            "base_bits_per_token": group[0]["base_bits_per_token"],
            "single_bits_per_token": summary(single.values()),
            "pool_bits_per_token": summary(pool.values()),
            "pool_minus_single": paired_difference(pool, single)})
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": settings,
            "runs": rows, "by_bits_per_param": by_cost}


def write_summary(folder: Path, runs: list[dict], settings: dict) -> dict:
    data = summarise(runs, settings)
    write_json_atomic(folder / SUMMARY, data)
    return data


def read_summary(folder: str | Path) -> dict | None:
    """summary.json of a results folder, or None when there is none; raises ExpertsError when
    it is refused."""
    path = Path(folder) / SUMMARY
    if not path.exists():
        return None
    data = read_json_file(path, MAX_SUMMARY_BYTES, ExpertsError)
    try:
        _need(data, "summary", {"format": "str", "format_version": "int", "settings": "object",
                                "runs": "list", "by_bits_per_param": "list"})
        if data["format"] != FORMAT or data["format_version"] != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} file of version {FORMAT_VERSION}")
        for i, row in enumerate(data["by_bits_per_param"]):
            where = f"by_bits_per_param[{i}]"
            _need(row, where, {
                "bits_per_param": "number", "cost_bits": "number", "recruited": "object",
                "single_bits_per_token": "object", "pool_bits_per_token": "object",
                "pool_minus_single": "object", "seeds": "list",
                "base_bits_per_token": "number?"})
            for key in ("recruited", "single_bits_per_token", "pool_bits_per_token"):
                _need(row[key], f"{where}.{key}", {"mean": "number?", "sd": "number?"})
            _need(row["pool_minus_single"], f"{where}.pool_minus_single",
                  {"lo": "number?", "hi": "number?", "established": "bool?"})
            d = row["pool_minus_single"]
            if (d.get("lo") is None) != (d.get("hi") is None):
                raise ValueError(f"{where}.pool_minus_single: lo and hi must both be numbers "
                                 f"or both null")
    except ValueError as e:
        raise ExpertsError(f"{path}: {e}") from None
    return data
