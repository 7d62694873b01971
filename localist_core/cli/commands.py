"""The commands that train, sweep, evaluate and report: each checks its paths and options
first (guards), then does the slow work. ``export`` has its own module."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..experiments.memory import keep_freed_memory
from ..paths import PROMPTS_FILE, REPO, SHIPPED_SWEEP
from .args import check_overrides, configs
from .errors import UsageError
from .guards import (
    check_can_make_folder,
    check_fits_in_memory,
    check_output_file,
    check_sweep_cache,
    check_train_out,
    read_prompts,
)

DEFAULT_SWEEP_CACHE = "runs/sweep"      # never the shipped assets/sweep (README "Command line")
# Read by `report` by default; written only when named. Relative, like every CLI default.
SHIPPED_SWEEP_CACHE = str(SHIPPED_SWEEP.relative_to(REPO))
DEFAULT_PROMPTS = str(PROMPTS_FILE.relative_to(REPO))


def corpus_of(args: argparse.Namespace):
    """The corpus of ``--data-dir`` (or the default sources), vocabulary built from train."""
    from ..experiments.data import load_corpus
    return load_corpus(args.data_dir)


def cmd_train(args: argparse.Namespace) -> int:
    """``train``: one model into ``--out``, resuming from ``OUT/last`` unless ``--no-resume``.
    Under ``torchrun --nproc_per_node N`` the N processes train that one model together
    (experiments/distributed.py); rank 0 alone writes and prints."""
    from ..experiments.distributed import process_group
    from ..experiments.train import train
    check_overrides(args.config, args.overrides)
    check_train_out(Path(args.out))
    keep_freed_memory()                     # 8–14% faster here; see memory.py
    corpus = corpus_of(args)
    mcfg, tcfg = configs(args.config, args.overrides, len(corpus.tokenizer))
    check_fits_in_memory(mcfg, tcfg)
    # Left on any error too, so that a failing rank's peers fail instead of waiting on it.
    with process_group(tcfg.device) as dist:
        res = train(mcfg, tcfg, corpus, args.out, resume=not args.no_resume,
                    meta={"config_name": args.config, "overrides": args.overrides}, dist=dist)
    if not dist.is_main:
        return 0
    together = f", {res.world_size} processes ({res.backend})" if res.world_size > 1 else ""
    print(f"trained {res.steps} steps ({res.tokens:,} tokens, {res.train_seconds:.0f}s, "
          f"stopped: {res.stopped}, device: {res.device}: {res.device_reason}, precision: "
          f"{res.precision}: {res.precision_reason}{together}) "
          f"→ {args.out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``sweep``: train and evaluate each run of the grid into the sweep cache, skipping
    finished runs; one after another here, or as Ray tasks (``--executor ray``)."""
    from ..experiments import executors
    from ..experiments.sweep import PROTOCOL_NAMES, plan_runs, run_sweep
    on_ray = getattr(args, "executor", "local") == "ray"
    address, gpu_share = getattr(args, "ray_address", None), getattr(args, "gpu_share", None)
    if not on_ray and (address is not None or gpu_share is not None):
        raise UsageError("--ray-address and --gpu-share need --executor ray")
    if address is not None and (not address.strip() or any(c.isspace() for c in address)):
        raise UsageError(f"--ray-address must be a Ray address (auto, HOST:PORT), got "
                         f"{address!r}")
    if on_ray:                  # before the corpus is loaded: seconds, not minutes
        try:
            executors.import_ray()
        except executors.RayNotInstalled as e:
            raise UsageError(str(e)) from None
        if address:             # an address nobody answers at: before anything is written
            executors.check_address(address)
    check_overrides(args.config, args.overrides)
    protocols = args.protocols.split(",")
    for name in protocols:      # plan_runs checks this too, but only after the corpus load
        if name not in PROTOCOL_NAMES:
            raise UsageError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOL_NAMES)}")
    check_sweep_cache(Path(args.cache))
    check_can_make_folder(Path(args.runs_dir), "--runs-dir")
    prompts = read_prompts(args.prompts)
    keep_freed_memory()
    corpus = corpus_of(args)
    mcfg, tcfg = configs(args.config, args.overrides, len(corpus.tokenizer))
    check_fits_in_memory(mcfg, tcfg)
    runs = plan_runs(mcfg, tcfg, protocols, args.lambdas, args.taus,
                     args.overrides, eval_barrier_sharpness=args.eval_beta,
                     seeds=getattr(args, "seeds", None))
    if on_ray:
        results = executors.ray_sweep(
            runs, corpus, args.cache, args.runs_dir, prompts=prompts,
            eval_tokens=args.eval_tokens, address=address,
            gpu_share=executors.DEFAULT_GPU_SHARE if gpu_share is None else gpu_share)
    else:
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
    from ..analysis.metrics import METRIC_NAMES
    for key in METRIC_NAMES:
        if key in att:
            rows.append((key, att[key]["mean"]))
    return "\n".join(f"  {k:<26}{v:>12.4f}" for k, v in rows)


def cmd_eval(args: argparse.Namespace) -> int:
    """``eval``: every metric of one checkpoint at one dial setting, the baselines and the leak
    test; optionally the whole report as JSON."""
    from ..analysis.evaluate import evaluate_stream, leak_test
    from ..analysis.inspection import inference_partition
    from ..experiments.data import load_corpus
    from ..experiments.sweep import baselines
    from ..model.checkpoint import load_model
    from ..model.dial import Dial
    from ..model.files import atomic_write
    from ..model.precision import resolve_device, resolve_precision

    if args.fp32 and args.precision not in (None, "fp32"):
        raise UsageError(f"--fp32 contradicts --precision {args.precision}; give one of them")
    try:
        device, device_reason = resolve_device(args.device)
    except ValueError as e:     # cuda asked for on a machine without one
        raise UsageError(str(e)) from None
    precision, precision_reason = resolve_precision("fp32" if args.fp32
                                                    else args.precision or "auto", device)
    if args.json:       # before the evaluation, which takes minutes on a real checkpoint
        check_output_file(Path(args.json), "--json")
    model, tok = load_model(args.checkpoint)
    model.to(device)
    corpus = load_corpus(args.data_dir, tokenizer=tok)
    partition = inference_partition(model, tok, args.partition, args.block_size)
    dial = Dial(args.locality, args.tau, args.rule_strength)   # in range: argparse checked it
    report = {"checkpoint": str(args.checkpoint), "splits": {},
              "partition": args.partition or model.cfg.partition,
              "block_size": args.block_size or model.cfg.block_size,
              "device": device, "device_reason": device_reason,
              "precision": precision, "precision_reason": precision_reason,
              "precision_detail": ("exact fp32" if precision == "fp32"
                                   else "bf16 autocast (adaptive head fp32)")}
    for split in args.splits:
        report["splits"][split] = evaluate_stream(
            model, corpus.split(split), dial, max_tokens=args.max_tokens,
            by_position_in_block=True, partition=partition, bf16=precision == "bf16",
            block_size=args.block_size)
    report["baselines"] = baselines(corpus)
    report["leak_test"] = leak_test(model, corpus.valid[: 2 * model.cfg.n_ctx].view(2, -1))
    if model.cfg.noncausal_diagnostic:
        print("WARNING: this checkpoint uses the non-causal diagnostic mode (a leak).")
    print(f"device: {device} ({device_reason}); precision: {precision} ({precision_reason})")
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
        atomic_write(Path(args.json), lambda p: Path(p).write_text(text))
        print(f"wrote {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``report``: the reproduction tables of a sweep cache, refused whole if any file is."""
    from ..experiments.cache import BASELINES_FILE, SweepCacheError, load_cache
    from ..experiments.report import full_report
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
    # Every run passed cache.read_result's checks, which is all the report's tables rely on.
    print(full_report(cache, runs))
    return 0
