"""Command line: ``python -m localist_core train|sweep|eval …``.

Configs are named (``tiny``, ``cpu-ref``, ``paper``) and take ``key=value`` overrides checked
against ModelConfig and TrainConfig. Bad input exits with code 2 and a one-line message.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import PARTITIONS, ConfigError, ModelConfig, TrainConfig, apply_overrides, preset
from .memory import keep_freed_memory

EXIT_USAGE = 2


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def _configs(name: str, overrides: list[str], vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    p = preset(name)
    model_kw, train_kw = apply_overrides(p.model, p.train, overrides)
    model_kw.setdefault("vocab_size", vocab_size)
    return ModelConfig(**model_kw), TrainConfig(**train_kw)


def _check_overrides(name: str, overrides: list[str]) -> None:
    """Validate names and values before the (slow) corpus load."""
    _configs(name, overrides, vocab_size=50_000)


def _corpus(args):
    from .data import load_corpus
    return load_corpus(args.data_dir)


def cmd_train(args) -> int:
    from .train import train
    _check_overrides(args.config, args.overrides)
    keep_freed_memory()                     # 8–14% faster here; see memory.py
    corpus = _corpus(args)
    mcfg, tcfg = _configs(args.config, args.overrides, len(corpus.tokenizer))
    res = train(mcfg, tcfg, corpus, args.out, resume=not args.no_resume,
                meta={"config_name": args.config, "overrides": args.overrides})
    print(f"trained {res.steps} steps ({res.tokens:,} tokens, {res.train_seconds:.0f}s, "
          f"stopped: {res.stopped}) → {args.out}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import plan_runs, run_sweep
    _check_overrides(args.config, args.overrides)
    keep_freed_memory()
    corpus = _corpus(args)
    mcfg, tcfg = _configs(args.config, args.overrides, len(corpus.tokenizer))
    runs = plan_runs(mcfg, tcfg, args.protocols.split(","), args.lambdas, args.taus,
                     args.overrides, eval_barrier_sharpness=args.eval_beta)
    prompts = json.loads(Path(args.prompts).read_text())["prompts"] if args.prompts else None
    results = run_sweep(runs, corpus, args.cache, args.runs_dir, prompts=prompts,
                        eval_tokens=args.eval_tokens)
    for r in results:
        v = r["metrics"]["valid"][0]
        print(f"{r['run_id']:<40} valid ppl {v['perplexity']:8.2f}  "
              f"(λ_f={v['dial']['locality']}, τ={v['dial']['attn_temperature']})")
    return 0


def format_table(result: dict) -> str:
    """A readable table of one evaluation result."""
    rows = [("perplexity", result["perplexity"]), ("accuracy", result["accuracy"])]
    att = result.get("attention", {})
    for key in ("entropy_bits", "normalised_entropy", "in_block_mass", "recent_b_mass",
                "shifted_block_mass", "uniform_in_block_mass", "pointer_fidelity_mass",
                "pointer_argmax_hit", "mean_attention_distance"):
        if key in att:
            rows.append((key, att[key]["mean"]))
    return "\n".join(f"  {k:<26}{v:>12.4f}" for k, v in rows)


def cmd_eval(args) -> int:
    from .checkpoint import load_model
    from .data import load_corpus
    from .evaluate import evaluate_stream, leak_test
    from .sweep import baselines

    from .live import inference_partition

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
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


def cmd_export(args) -> int:
    """Write a compressed copy of a checkpoint, keeping it only if valid perplexity stays within
    ``--tolerance`` of the full-precision model (DESIGN §2 shipping rule)."""
    import shutil

    from .checkpoint import load_model, save_checkpoint
    from .data import load_corpus
    from .evaluate import evaluate_stream

    model, tok = load_model(args.source)
    if args.barrier_sharpness is not None:
        from .sweep import with_barrier_sharpness
        model = with_barrier_sharpness(model, args.barrier_sharpness)
    corpus = load_corpus(args.data_dir, tokenizer=tok)
    full = evaluate_stream(model, corpus.valid, with_attention=False)["perplexity"]
    tmp = Path(str(args.dest) + ".tmp")
    meta = dict(model.meta)
    save_checkpoint(tmp, model, tok, _train_cfg(model), meta=meta, precision=args.precision)
    small, _ = load_model(tmp)
    comp = evaluate_stream(small, corpus.valid, with_attention=False)["perplexity"]
    rel = comp / full - 1.0
    print(f"valid perplexity: {args.precision} {comp:.3f} vs fp32 {full:.3f} "
          f"({100 * rel:+.3f}%, tolerance ±{100 * args.tolerance:.2f}%)")
    if abs(rel) > args.tolerance:
        shutil.rmtree(tmp)
        print(f"error: {args.precision} changes valid perplexity by {100 * rel:+.3f}%; "
              f"not written", file=sys.stderr)
        return 1
    meta["compression_check"] = {"precision": args.precision, "valid_ppl_fp32": full,
                                 "valid_ppl_compressed": comp, "relative_change": rel,
                                 "command": "python -m localist_core export "
                                            f"{args.source} {args.dest} "
                                            f"--precision {args.precision}"
                                            + (f" --barrier-sharpness {args.barrier_sharpness:g}"
                                               if args.barrier_sharpness is not None else "")}
    save_checkpoint(tmp, small, tok, _train_cfg(model), meta=meta, precision=args.precision)
    if Path(args.dest).exists():
        shutil.rmtree(args.dest)
    tmp.rename(args.dest)
    print(f"wrote {args.dest}")
    return 0


def _train_cfg(model):
    from .config import config_from_dict
    cfg = getattr(model, "train_config", None)
    return config_from_dict(TrainConfig, cfg) if cfg else None


def cmd_report(args) -> int:
    from .report import full_report
    print(full_report(args.cache))
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
    s.add_argument("--lambdas", type=_floats, default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    s.add_argument("--taus", type=_floats, default=[0.25, 0.5, 1.0, 2.0])
    s.add_argument("--cache", default="assets/sweep", help="sweep cache folder")
    s.add_argument("--runs-dir", default="runs", help="where the run checkpoints go")
    s.add_argument("--prompts", default="assets/prompts.json",
                   help="sample prompts whose attention maps are cached ('' for none)")
    s.add_argument("--eval-tokens", type=int, default=None, help="evaluate a prefix only")
    s.add_argument("--eval-beta", type=float, default=None,
                   help="evaluate with this dial sharpness β instead of the trained one "
                        "(stored as a separate run, <id>-beta<β>)")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    common(s)
    s.set_defaults(func=cmd_sweep)

    e = sub.add_parser("eval", help="evaluate a checkpoint: every metric, baselines, leak test")
    e.add_argument("checkpoint")
    e.add_argument("--splits", nargs="+", default=["valid", "test"], choices=["valid", "test"])
    e.add_argument("--locality", type=float, default=0.0)
    e.add_argument("--tau", type=float, default=1.0)
    e.add_argument("--rule-strength", type=float, default=0.0)
    e.add_argument("--max-tokens", type=int, default=None)
    e.add_argument("--fp32", action="store_true",
                   help="exact fp32 throughout (slower); the default runs the decoder under bf16 "
                        "autocast, which BENCHMARKS.md measures at +0.00%% perplexity")
    e.add_argument("--partition", default=None, choices=list(PARTITIONS),
                   help="re-block the text at inference (default: as trained)")
    e.add_argument("--block-size", type=int, default=None,
                   help="fixed-window size when re-blocking with --partition fixed")
    e.add_argument("--json", default=None, help="also write the report here")
    common(e)
    e.set_defaults(func=cmd_eval)
    x = sub.add_parser("export", help="write a compressed copy of a checkpoint, checked on "
                                      "valid perplexity")
    x.add_argument("source")
    x.add_argument("dest")
    x.add_argument("--precision", default="int8", choices=["fp32", "fp16", "int8"])
    x.add_argument("--barrier-sharpness", type=float, default=None,
                   help="ship with this dial sharpness β (an inference-time choice)")
    x.add_argument("--tolerance", type=float, default=0.005,
                   help="largest allowed relative change of valid perplexity (default 0.5%%)")
    common(x)
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("report", help="print the reproduction tables from a sweep cache")
    r.add_argument("--cache", default="assets/sweep")
    r.set_defaults(func=cmd_report)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data import DataNotFound
    from .sweep import SweepCacheError
    try:
        return args.func(args)
    except (ConfigError, ValueError, CheckpointError, SweepCacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except DataNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
