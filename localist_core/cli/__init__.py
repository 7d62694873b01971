"""Command line: ``python -m localist_core train|sweep|eval|export|report``.

Configs are named (``tiny``, ``cpu-ref``, ``paper``) and take ``key=value`` overrides checked
against ModelConfig and TrainConfig. Every failure a user can cause ends with one line on stderr,
``error: …``, and no traceback. Exit codes: 2 for bad input or a command that cannot succeed as
given (a config, a path, a diverged run, an allocation that cannot fit), 1 for missing data (no
corpus) and for an export outside its tolerance, 130 when interrupted. An unexpected bug still
shows its traceback.

Path defaults (``runs``, ``runs/sweep``, ``assets/prompts.json``, ``assets/sweep``) are relative to
the current folder, like every path given on the command line. No command deletes what it did
not write: ``export`` replaces only a checkpoint folder, and only with ``--force``; ``sweep``
writes the shipped ``assets/sweep`` only when ``--cache assets/sweep`` names it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .experiments.memory import keep_freed_memory
from .model.config import PARTITIONS, ConfigError, ModelConfig, TrainConfig, apply_overrides, preset

EXIT_USAGE = 2
EXIT_FAILURE = 1        # missing data (no corpus), or an export outside its tolerance
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # as a shell reports a command killed by SIGPIPE (`report | head`)
DEFAULT_SWEEP_CACHE = "runs/sweep"      # never the shipped assets/sweep (README "Command line")
SHIPPED_SWEEP_CACHE = "assets/sweep"    # read by `report` by default; written only when named
EXPORT_TMP_SUFFIX = ".export-tmp"
EXPORT_OLD_SUFFIX = ".export-old"
# What to shrink when an allocation cannot succeed, per command.
ALLOCATION_HINTS = {
    "train": "reduce batch_size, n_ctx, d_model, d_ff or n_layers",
    "sweep": "reduce batch_size, n_ctx, d_model, d_ff or n_layers",
    "eval": "reduce --max-tokens, or evaluate a smaller checkpoint",
    "export": "export a smaller checkpoint, or free memory",
    "report": "free memory",
}


class UsageError(ValueError):
    """A command line that cannot succeed as given (a path in the way, a bad target)."""


class CannotAllocate(Exception):
    """A run needs more memory than this machine has; found before torch tries to allocate."""


# --- argparse types: the one home of the CLI's number checks --------------------------------

def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _range_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if lo_open else '≥'} {lo:g}"
    if hi is not None:
        return f"≤ {hi:g}"
    return ""


def finite_float(lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] (``lo_open``: strictly above ``lo``).

    NaN and ±inf are refused here because every later check (``x < lo``) lets NaN through.
    """
    want = " ".join(filter(None, ["a finite number", _range_text(lo, hi, lo_open)]))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        below = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or below or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = "finite_float"
    return parse


def float_list(lo: float | None = None, hi: float | None = None, *,
               lo_open: bool = False) -> Callable[[str], list[float]]:
    """An argparse type: one or more comma-separated numbers, each checked as ``finite_float``."""
    one = finite_float(lo, hi, lo_open=lo_open)

    def parse(text: str) -> list[float]:
        parts = [x for x in text.split(",") if x.strip()]
        try:
            [float(x) for x in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers, got {text!r}") from None
        if not parts:
            raise argparse.ArgumentTypeError("expected at least one number")
        return [one(x) for x in parts]

    parse.__name__ = "float_list"
    return parse


# --- configs ---------------------------------------------------------------------------------

def _configs(name: str, overrides: list[str], vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    p = preset(name)
    model_kw, train_kw = apply_overrides(p.model, p.train, overrides)
    model_kw.setdefault("vocab_size", vocab_size)
    return ModelConfig(**model_kw), TrainConfig(**train_kw)


def _check_overrides(name: str, overrides: list[str]) -> None:
    """Validate names and values before the (slow) corpus load."""
    _configs(name, overrides, vocab_size=50_000)


def _corpus(args):
    from .experiments.data import load_corpus
    return load_corpus(args.data_dir)


def _memory_limit() -> int | None:
    """Bytes of memory this process may use: physical RAM, or a lower cgroup v2 limit."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        raw = ""
    return min(total, int(raw)) if raw.isdigit() else total


def _check_fits_in_memory(mcfg: ModelConfig, tcfg: TrainConfig) -> None:
    """Refuse a training run whose memory need is, at the least, more than this machine has.

    Linux overcommits: torch's allocation of an absurd model often succeeds and the process is
    later killed (SIGKILL, no message at all). So count the parameters on the meta device (no
    memory) and compare a lower bound: fp32 weights, gradients and AdamW's two moments (16 bytes
    a parameter), plus, in the last layer's backward pass, every layer's fp32 attention pattern
    (kept for backward) and the gradients of that layer's pattern and scores (≥ 2 bytes an entry
    each). Being a lower bound, it never refuses a run that fits; a run just under it can still
    be killed.
    """
    import torch

    from .model.transformer import LocalistLM
    limit = _memory_limit()
    if limit is None:
        return
    with torch.device("meta"):
        n_params = sum(p.numel() for p in LocalistLM(mcfg).parameters())
    per_layer = tcfg.batch_size * mcfg.n_heads * mcfg.n_ctx ** 2     # entries of one pattern
    need = 16 * n_params + per_layer * (4 * mcfg.n_layers + 2 + 2)
    if need > limit:
        raise CannotAllocate(f"at least {_bytes_text(need)} to train {n_params:,} parameters "
                             f"with AdamW at batch_size={tcfg.batch_size:,} (this machine has "
                             f"{_bytes_text(limit)})")


# --- paths: checked before anything slow runs, so a bad one fails in a second ----------------

def _nearest_existing(path: Path) -> Path:
    """``path`` itself, or the closest ancestor of it that exists."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_can_make_folder(path: Path, option: str) -> None:
    """Refuse a folder that cannot be created or written: a file in its place or above it, or
    a parent without write permission."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{option} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in {base} (permission denied)")


def _check_output_file(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written: a folder, or a missing parent folder."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{option} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in {parent} (permission denied)")


def _is_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a config.json written by this project (checkpoint.FORMAT)."""
    from .model.checkpoint import CheckpointError, read_config
    try:
        read_config(folder)
    except CheckpointError:
        return False
    return True


def _foreign_entries(folder: Path, ours: set[str]) -> list[str]:
    """Names in ``folder`` that this project did not write: anything but ``ours`` and the temp
    files a killed writer of one of them leaves (checkpoint._atomic_write: ``.NAME.<random>.tmp``).
    """
    temp_prefixes = tuple(f".{name}." for name in ours)
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in ours and not (p.name.startswith(temp_prefixes)
                                                 and p.name.endswith(".tmp")))


def _names(entries: list[str]) -> str:
    return ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def _check_train_out(out: Path) -> None:
    """``train --out``: a new or empty folder, or one holding only what training writes (a
    checkpoint, and its ``last/`` trainer state to resume from). Training replaces those files
    and clears stale temp files there, so a folder holding anything else is refused."""
    from .experiments.train import LAST, TRAINER_META, TRAINER_STATE
    from .model.checkpoint import CONFIG, VOCAB, WEIGHTS
    _check_can_make_folder(out, "--out")
    if not out.is_dir():
        return
    checkpoint = {CONFIG, WEIGHTS, VOCAB}
    foreign = _foreign_entries(out, checkpoint | {LAST})
    last = out / LAST
    if last.is_dir():
        foreign += [f"{LAST}/{n}" for n in _foreign_entries(last, checkpoint | {TRAINER_STATE,
                                                                                TRAINER_META})]
    elif last.exists():
        foreign.append(LAST)
    if foreign:
        raise UsageError(f"--out {out} holds files training did not write ({_names(foreign)}); "
                         f"give a new or empty folder, or a checkpoint folder of this project")
    for folder in (out, last):
        if (folder / CONFIG).exists() and not _is_checkpoint(folder):
            raise UsageError(f"--out {out}: {folder / CONFIG} is not a checkpoint config of this "
                             f"project; training would overwrite it: give another --out")


def _check_sweep_cache(cache: Path) -> None:
    """``sweep --cache``: a new or empty folder, or a sweep cache (it has baselines.json, the
    first file a sweep writes). A sweep writes result files into it, so an unrelated folder is
    refused. Temp files do not count: a sweep killed while writing baselines.json leaves one."""
    from .experiments.sweep import BASELINES_FILE, PROGRESS_FILE
    _check_can_make_folder(cache, "--cache")
    if not cache.is_dir() or (cache / BASELINES_FILE).is_file() or (
            cache / PROGRESS_FILE).is_file():
        return
    if any(not (p.name.startswith(".") and p.name.endswith(".tmp")) for p in cache.iterdir()):
        raise UsageError(f"--cache {cache} is a folder that is not a sweep cache (no "
                         f"{BASELINES_FILE}); give a new or empty folder")


def _read_prompts(path: str) -> list[dict] | None:
    """The sample prompts of ``--prompts`` ('' for none), checked before the corpus load."""
    if not path:
        return None
    try:
        prompts = json.loads(Path(path).read_text(encoding="utf-8"))["prompts"]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"--prompts {path}: not valid JSON ({e})") from None
    except (KeyError, TypeError):
        raise UsageError(f"--prompts {path}: expected a JSON object with a \"prompts\" "
                         f"list") from None
    if not isinstance(prompts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str)
            and isinstance(p.get("text"), str) for p in prompts):
        raise UsageError(f"--prompts {path}: \"prompts\" must be a list of "
                         f"{{\"name\": …, \"text\": …}} objects")
    return prompts


# --- commands --------------------------------------------------------------------------------

def cmd_train(args) -> int:
    from .experiments.train import train
    _check_overrides(args.config, args.overrides)
    _check_train_out(Path(args.out))
    keep_freed_memory()                     # 8–14% faster here; see memory.py
    corpus = _corpus(args)
    mcfg, tcfg = _configs(args.config, args.overrides, len(corpus.tokenizer))
    _check_fits_in_memory(mcfg, tcfg)
    res = train(mcfg, tcfg, corpus, args.out, resume=not args.no_resume,
                meta={"config_name": args.config, "overrides": args.overrides})
    print(f"trained {res.steps} steps ({res.tokens:,} tokens, {res.train_seconds:.0f}s, "
          f"stopped: {res.stopped}) → {args.out}")
    return 0


def cmd_sweep(args) -> int:
    from .experiments.sweep import PROTOCOL_NAMES, plan_runs, run_sweep
    _check_overrides(args.config, args.overrides)
    protocols = args.protocols.split(",")
    for name in protocols:      # plan_runs checks this too, but only after the corpus load
        if name not in PROTOCOL_NAMES:
            raise UsageError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOL_NAMES)}")
    _check_sweep_cache(Path(args.cache))
    _check_can_make_folder(Path(args.runs_dir), "--runs-dir")
    prompts = _read_prompts(args.prompts)
    keep_freed_memory()
    corpus = _corpus(args)
    mcfg, tcfg = _configs(args.config, args.overrides, len(corpus.tokenizer))
    _check_fits_in_memory(mcfg, tcfg)
    runs = plan_runs(mcfg, tcfg, protocols, args.lambdas, args.taus,
                     args.overrides, eval_barrier_sharpness=args.eval_beta)
    results = run_sweep(runs, corpus, args.cache, args.runs_dir, prompts=prompts,
                        eval_tokens=args.eval_tokens)
    for r in results:
        v = r["metrics"]["valid"][0]
        print(f"{r['run_id']:<40} valid ppl {v['perplexity']:8.2f}  "
              f"(λ_f={v['dial']['locality']}, τ={v['dial']['attn_temperature']})")
    print(f"wrote {args.cache}")
    return 0


def format_table(result: dict) -> str:
    """A readable table of one evaluation result."""
    rows = [("perplexity", result["perplexity"]), ("accuracy", result["accuracy"])]
    att = result.get("attention", {})
    from .analysis.metrics import METRIC_NAMES
    for key in METRIC_NAMES:
        if key in att:
            rows.append((key, att[key]["mean"]))
    return "\n".join(f"  {k:<26}{v:>12.4f}" for k, v in rows)


def cmd_eval(args) -> int:
    from .analysis.evaluate import evaluate_stream, leak_test
    from .analysis.inspection import inference_partition
    from .experiments.data import load_corpus
    from .experiments.sweep import baselines
    from .model.checkpoint import _atomic_write, load_model

    if args.json:       # before the evaluation, which takes minutes on a real checkpoint
        _check_output_file(Path(args.json), "--json")
    model, tok = load_model(args.checkpoint)
    corpus = load_corpus(args.data_dir, tokenizer=tok)
    partition = inference_partition(model, tok, args.partition, args.block_size)
    report = {"checkpoint": str(args.checkpoint), "splits": {},
              "partition": args.partition or model.cfg.partition,
              "block_size": args.block_size or model.cfg.block_size,
              "precision": "fp32" if args.fp32 else "bf16 autocast (adaptive head fp32)"}
    for split in args.splits:
        report["splits"][split] = evaluate_stream(
            model, corpus.split(split), args.locality, args.tau, args.rule_strength,
            max_tokens=args.max_tokens, by_position_in_block=True, partition=partition,
            bf16=not args.fp32, block_size=args.block_size)
    report["baselines"] = baselines(corpus)
    report["leak_test"] = leak_test(model, corpus.valid[: 2 * model.cfg.n_ctx].view(2, -1))
    if model.cfg.noncausal_diagnostic:
        print("WARNING: this checkpoint uses the non-causal diagnostic mode (a leak).")
    for split, res in report["splits"].items():
        d = res["dial"]
        print(f"{split} (λ_f={d['locality']}, τ={d['attn_temperature']}, γ={d['rule_strength']}, "
              f"{res['tokens']:,} tokens)")
        print(format_table(res))
    for split, b in report["baselines"].items():
        print(f"baselines {split}: unigram {b['unigram_perplexity']:.1f}, "
              f"Kneser-Ney bigram {b['bigram_kn_perplexity']:.1f}")
    leak = report["leak_test"]
    print(f"leak test: {'PASS' if leak['passed'] else 'FAIL'} "
          f"(max |Δ| {leak['max_abs_diff']:.2e} over {leak['checked']} settings)")
    if args.json:
        text = json.dumps(report, indent=1)
        # Atomic: a full disk or a kill leaves the previous file, never half a report.
        _atomic_write(Path(args.json), lambda p: Path(p).write_text(text))
        print(f"wrote {args.json}")
    return 0


def _check_export_dest(dest: Path, force: bool) -> bool:
    """Refuse an export target that holds anything export did not write; return whether an
    existing checkpoint will be replaced (only with ``--force``). An empty folder is used."""
    from .experiments.train import LAST
    from .model.checkpoint import CONFIG, VOCAB, WEIGHTS, CheckpointError, read_config
    if dest.is_symlink():
        raise UsageError(f"export: {dest} is a symbolic link; give the folder itself")
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"export: {dest} is a file, not a checkpoint folder; nothing was "
                         f"written (give a new folder name)")
    # The temp folder is made, and renamed, in DEST's parent folder.
    _check_can_make_folder(dest.parent, "export:")
    if not dest.exists() or not any(dest.iterdir()):
        return False
    try:
        read_config(dest)
    except CheckpointError as e:
        raise UsageError(f"export: {dest} exists and is not a checkpoint folder of this project "
                         f"({e}); it is never replaced: give a new folder name") from None
    if not force:
        raise UsageError(f"export: {dest} is an existing checkpoint; add --force to replace it")
    # Only what this project writes there: the checkpoint files, train's last/ and their temp
    # files. Anything else is the user's and survives --force.
    foreign = _foreign_entries(dest, {CONFIG, WEIGHTS, VOCAB, LAST})
    if foreign:
        raise UsageError(f"export: {dest} is a checkpoint but also holds files this project did "
                         f"not write ({_names(foreign)}); --force replaces only checkpoint "
                         f"files: move them out first")
    return True


def _make_parents(folder: Path, made: list[Path]) -> None:
    """Create the missing ancestors of ``folder`` (not ``folder``), appending each to ``made``
    as it is created, so a failed command can remove exactly those."""
    missing = []
    p = folder.absolute().parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    for m in reversed(missing):
        m.mkdir()
        made.append(m)


def _self_made_dir(dest: Path, suffix: str) -> Path:
    """A new, uniquely named folder beside ``dest`` that only this command uses, with the
    permissions a plain mkdir would give (mkdtemp makes it 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=dest.absolute().parent, prefix=f".{dest.name}.",
                                suffix=suffix))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)
    return tmp


def _move_into_place(tmp: Path, dest: Path, replace: bool) -> None:
    """Rename the finished ``tmp`` folder to ``dest``. ``replace``: the checkpoint at ``dest``
    is first renamed aside (to another self-made name) and removed only after the new folder is
    in place, so a failure at any step leaves one complete checkpoint at ``dest``."""
    if not replace:
        # rename() fills a missing or empty dest and fails on anything else, so a folder that
        # appeared at dest since the check is never overwritten.
        os.rename(tmp, dest)
        return
    aside = _self_made_dir(dest, EXPORT_OLD_SUFFIX)
    try:
        os.rename(dest, aside)      # onto our own empty folder, which rename() replaces
    except BaseException:
        aside.rmdir()
        raise
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(aside, dest)      # put the old checkpoint back
        raise
    try:
        shutil.rmtree(aside)
    except OSError as e:
        print(f"warning: the replaced checkpoint is left at {aside} ({e.strerror}); remove it",
              file=sys.stderr)


def cmd_export(args) -> int:
    """Write a compressed copy of a checkpoint, keeping it only if valid perplexity stays within
    ``--tolerance`` of the full-precision model (DESIGN §2 shipping rule)."""
    from .analysis.evaluate import evaluate_stream
    from .experiments.data import load_corpus
    from .model.checkpoint import load_model, save_checkpoint

    dest = Path(args.dest)
    replace = _check_export_dest(dest, args.force)   # before the slow evaluation
    made: list[Path] = []
    tmp: Path | None = None
    moved = False
    try:
        _make_parents(dest, made)
        tmp = _self_made_dir(dest, EXPORT_TMP_SUFFIX)
        model, tok = load_model(args.source)
        if args.barrier_sharpness is not None:
            from .experiments.sweep import with_barrier_sharpness
            model = with_barrier_sharpness(model, args.barrier_sharpness)
        corpus = load_corpus(args.data_dir, tokenizer=tok)
        full = evaluate_stream(model, corpus.valid, with_attention=False)["perplexity"]
        meta = dict(model.meta)
        save_checkpoint(tmp, model, tok, _train_cfg(model), meta=meta, precision=args.precision)
        small, _ = load_model(tmp)
        comp = evaluate_stream(small, corpus.valid, with_attention=False)["perplexity"]
        rel = comp / full - 1.0
        print(f"valid perplexity: {args.precision} {comp:.3f} vs fp32 {full:.3f} "
              f"({100 * rel:+.3f}%, tolerance ±{100 * args.tolerance:.2f}%)")
        if abs(rel) > args.tolerance:
            print(f"error: {args.precision} changes valid perplexity by {100 * rel:+.3f}%; "
                  f"not written", file=sys.stderr)
            return EXIT_FAILURE
        meta["compression_check"] = {
            "precision": args.precision, "valid_ppl_fp32": full, "valid_ppl_compressed": comp,
            "relative_change": rel,
            "command": "python -m localist_core export "
                       f"{args.source} {args.dest} --precision {args.precision}"
                       + (f" --barrier-sharpness {args.barrier_sharpness:g}"
                          if args.barrier_sharpness is not None else "")}
        save_checkpoint(tmp, small, tok, _train_cfg(model), meta=meta, precision=args.precision)
        _move_into_place(tmp, dest, replace)
        moved = True
    finally:
        if not moved:   # any failure, ^C included: remove what this command made, nothing else
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            for folder in reversed(made):
                try:
                    folder.rmdir()
                except OSError:
                    break
    print(f"wrote {args.dest}" + (" (replaced the previous checkpoint)" if replace else ""))
    return 0


def _train_cfg(model):
    from .model.config import config_from_dict
    cfg = getattr(model, "train_config", None)
    return config_from_dict(TrainConfig, cfg) if cfg else None


# Malformed-but-readable run files make the report's tables raise these.
_REPORT_DATA_ERRORS = (KeyError, TypeError, AttributeError, IndexError, ValueError)


def _first_malformed_run(runs: list[dict]) -> str | None:
    """The id of the first run whose own tables cannot be drawn, to name it in the error."""
    from .experiments.report import (
        dialled_table,
        position_table,
        run_table,
        strategy_table,
        tau_table,
    )
    for run in runs:
        try:
            for table in (run_table, dialled_table, strategy_table):
                table([run])
            if run.get("protocol") == "dial":
                tau_table(run)
            position_table(run)
            format(run.get("leak_test", {}).get("max_abs_diff", float("nan")), ".1e")
        except _REPORT_DATA_ERRORS:
            return str(run.get("run_id"))
    return None


def cmd_report(args) -> int:
    from .experiments.report import full_report
    from .experiments.sweep import BASELINES_FILE, SweepCacheError, load_cache
    cache = Path(args.cache)
    if not cache.is_dir():
        why = " (it is a file)" if cache.exists() else ""
        if args.cache == SHIPPED_SWEEP_CACHE and not cache.exists():
            why = " (the default is relative to the current folder: run from the repository " \
                  "root, or give --cache)"
        raise SweepCacheError(f"{cache}: no sweep cache folder{why}")
    # A table built from part of a cache looks complete; refuse instead of printing it.
    runs, problems = load_cache(cache)
    if problems:
        more = f" (and {len(problems) - 1} more refused files)" if len(problems) > 1 else ""
        raise SweepCacheError(f"{problems[0]}{more}; the report is not printed")
    if not runs and not (cache / BASELINES_FILE).is_file():
        raise SweepCacheError(f"{cache}: not a sweep cache (no run results, no {BASELINES_FILE})")
    try:
        text = full_report(cache)
    except _REPORT_DATA_ERRORS as e:
        bad = _first_malformed_run(load_cache(cache)[0])
        where = f"run {bad!r} in {cache}" if bad else f"a run in {cache}"
        raise SweepCacheError(f"{where} is malformed ({type(e).__name__}: {e}); the report is "
                              f"not printed") from None
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m localist_core",
                                 description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--data-dir", default=None,
                       help="folder with train.txt/valid.txt/test.txt (default: "
                            "$LOCALIST_DATA_DIR, then ../shared/data/wikitext-2)")

    t = sub.add_parser("train", help="train one model")
    t.add_argument("--config", default="cpu-ref", help="tiny, cpu-ref or paper")
    t.add_argument("--out", required=True, help="checkpoint folder (resumes from OUT/last)")
    t.add_argument("--no-resume", action="store_true", help="start again even if OUT/last exists")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    common(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sweep", help="train and evaluate a λ grid into a sweep cache")
    s.add_argument("--config", default="cpu-ref")
    s.add_argument("--protocols", default="attention",
                   help="comma-separated: attention, weights, dial")
    s.add_argument("--lambdas", type=float_list(0.0, 1.0),
                   default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], help="comma-separated λ in [0, 1]")
    s.add_argument("--taus", type=float_list(0.0, lo_open=True), default=[0.25, 0.5, 1.0, 2.0],
                   help="comma-separated τ > 0")
    s.add_argument("--cache", default=DEFAULT_SWEEP_CACHE,
                   help=f"sweep cache folder (default: {DEFAULT_SWEEP_CACHE}, relative to the "
                        f"current folder); the shipped cache is written only when named: "
                        f"--cache {SHIPPED_SWEEP_CACHE}")
    s.add_argument("--runs-dir", default="runs",
                   help="where the run checkpoints go (default: runs)")
    s.add_argument("--prompts", default="assets/prompts.json",
                   help="sample prompts whose attention maps are cached ('' for none)")
    s.add_argument("--eval-tokens", type=positive_int, default=None,
                   help="evaluate a prefix only")
    s.add_argument("--eval-beta", type=finite_float(0.0, lo_open=True), default=None,
                   help="evaluate with this dial sharpness β > 0 instead of the trained one "
                        "(stored as a separate run, <id>-beta<β>)")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    common(s)
    s.set_defaults(func=cmd_sweep)

    e = sub.add_parser("eval", help="evaluate a checkpoint: every metric, baselines, leak test")
    e.add_argument("checkpoint")
    e.add_argument("--splits", nargs="+", default=["valid", "test"], choices=["valid", "test"])
    e.add_argument("--locality", type=finite_float(0.0, 1.0), default=0.0,
                   help="dial λ_f in [0, 1]")
    e.add_argument("--tau", type=finite_float(0.0, lo_open=True), default=1.0,
                   help="attention temperature τ > 0")
    e.add_argument("--rule-strength", type=finite_float(0.0), default=0.0,
                   help="rule strength γ ≥ 0")
    e.add_argument("--max-tokens", type=positive_int, default=None,
                   help="evaluate a prefix of this many tokens")
    e.add_argument("--fp32", action="store_true",
                   help="exact fp32 throughout (slower); the default runs the decoder under bf16 "
                        "autocast, which BENCHMARKS.md measures at +0.00%% perplexity")
    e.add_argument("--partition", default=None, choices=list(PARTITIONS),
                   help="re-block the text at inference (default: as trained)")
    e.add_argument("--block-size", type=positive_int, default=None,
                   help="fixed-window size when re-blocking with --partition fixed")
    e.add_argument("--json", default=None,
                   help="also write the report here (its folder must exist)")
    common(e)
    e.set_defaults(func=cmd_eval)
    x = sub.add_parser("export", help="write a compressed copy of a checkpoint, checked on "
                                      "valid perplexity")
    x.add_argument("source")
    x.add_argument("dest", help="a new (or empty) folder; an existing checkpoint only with "
                                "--force; any other existing path is refused")
    x.add_argument("--precision", default="int8", choices=["fp32", "fp16", "int8"])
    x.add_argument("--barrier-sharpness", type=finite_float(0.0, lo_open=True), default=None,
                   help="ship with this dial sharpness β > 0 (an inference-time choice)")
    x.add_argument("--tolerance", type=finite_float(0.0), default=0.005,
                   help="largest allowed relative change of valid perplexity, ≥ 0 "
                        "(default 0.005 = 0.5%%)")
    x.add_argument("--force", action="store_true",
                   help="replace DEST when it is an existing checkpoint folder")
    common(x)
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("report", help="print the reproduction tables from a sweep cache")
    r.add_argument("--cache", default=SHIPPED_SWEEP_CACHE,
                   help=f"sweep cache folder, only read (default: {SHIPPED_SWEEP_CACHE})")
    r.set_defaults(func=cmd_report)
    return ap


# --- errors: one line each -------------------------------------------------------------------

def _one_line(text: str) -> str:
    """A message on one line, however many lines the exception text had."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {_one_line(message)}", file=sys.stderr)
    return code


def _is_overflow(e: BaseException) -> bool:
    """A size past any C integer: Python's OverflowError, or torch's TypeError/RuntimeError
    "Overflow when unpacking long long"."""
    text = str(e).lower()
    return isinstance(e, OverflowError) or (isinstance(e, (TypeError, RuntimeError)) and any(
        s in text for s in ("overflow when unpacking", "multiplication overflow",
                            "too large to convert")))


def _is_allocation_failure(e: BaseException) -> bool:
    """Torch's allocators raise RuntimeError (CPU "can't allocate memory", CUDA "out of
    memory"); Python raises MemoryError; an absurd size overflows (``_is_overflow``)."""
    if isinstance(e, (CannotAllocate, MemoryError)) or _is_overflow(e):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("allocat" in text or "out of memory" in text
                                            or "not enough memory" in text)


def _bytes_text(n: float) -> str:
    """``n`` bytes in the largest binary unit up to TiB: 2.4e17 → "218,278.3 TiB"."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:,.0f} bytes" if i == 0 else f"{n:,.1f} {units[i]}"


def _allocation_message(e: BaseException, command: str) -> str:
    """One line: how much could not be allocated, the reason, and what to reduce."""
    hint = ALLOCATION_HINTS.get(command, "reduce the model or batch size")
    if isinstance(e, CannotAllocate):
        return f"cannot allocate {e}: {hint}"
    # Torch appends C++ frames after the first line, and prefixes "[enforce fail at …]": noise.
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*(err == 0\.)?\s*", "", text).rstrip('"')
    if _is_overflow(e):
        return f"cannot allocate: a size is out of range ({text or type(e).__name__}): {hint}"
    size = ""
    if m := re.search(r"allocate (\d+) bytes", text):
        size = f" {_bytes_text(int(m.group(1)))}"
    elif m := re.search(r"allocate ([\d.]+ ?[KMGTP]i?B)", text):
        size = f" {m.group(1)}"
    return f"cannot allocate{size} ({text or 'out of memory'}): {hint}"


def _diverged_message(e: BaseException, args) -> str:
    """Say that training diverged, and suggest a concrete lower learning rate."""
    try:
        lr = _configs(args.config, args.overrides, vocab_size=50_000)[1].lr
        hint = f"; e.g. lr={lr / 10:g}"
    except (ConfigError, AttributeError):
        hint = ""
    return f"training diverged: {str(e).rstrip('.')}{hint}"


def _os_error_message(e: OSError) -> str:
    why = e.strerror or str(e) or type(e).__name__
    if e.filename is not None and e.filename2 is not None:
        return f"cannot move {e.filename} to {e.filename2}: {why}"
    if e.filename is not None:
        return f"{e.filename}: {why}"
    return why


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .experiments.data import DataNotFound
    from .experiments.sweep import SweepCacheError
    from .experiments.train import TrainingDiverged
    from .model.checkpoint import CheckpointError
    try:
        return args.func(args)
    except TrainingDiverged as e:
        return _fail(_diverged_message(e, args))
    except (ConfigError, ValueError, CheckpointError, SweepCacheError) as e:
        return _fail(str(e))
    except DataNotFound as e:
        return _fail(str(e), EXIT_FAILURE)
    except BrokenPipeError:
        # The reader of stdout went away (`report | head`): nothing to say, and nowhere to say
        # it. Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:            # permission denied, disk full, not a directory, …
        return _fail(_os_error_message(e))
    except (CannotAllocate, MemoryError, OverflowError, RuntimeError, TypeError) as e:
        if not _is_allocation_failure(e):
            raise                   # a bug: the developer needs the traceback
        return _fail(_allocation_message(e, args.command))
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
