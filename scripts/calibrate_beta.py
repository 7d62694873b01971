"""Calibrate the dial sharpness β: in-block mass and valid perplexity against λ_f for several β,
on the first 16,384 validation tokens (REPRODUCTION.md, "Does one checkpoint serve the dial?").

From the repository root, with HF_DATASETS_OFFLINE=1 set (WikiText-2 is read from disk), for the
study (the checkpoints of the runs that ``bash scripts/study.sh`` trained into its cache):

    python scripts/calibrate_beta.py --cache assets/study --json assets/beta_calibration.json

and for checkpoint folders (each its own table):

    python scripts/calibrate_beta.py runs/dial-* runs/attention-l0.0-*

``--runs`` (default ``dial,attention-l0.0``) picks the cache's runs: each id and its seeds
(``dial-s2``; ``dial-beta64`` is another evaluation of ``dial``'s checkpoint, not a seed). Prints
one Markdown table per run id, mean ± sd (n) over its seeds, and the seeds and checkpoints used;
``--json`` keeps every raw figure. The checkpoints are not shipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's localist_core

BETAS = (4.0, 16.0, 64.0)
LOCALITIES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
MAX_TOKENS = 16_384
RUNS = "dial,attention-l0.0"
TRAINS = "bash scripts/study.sh"
NEEDS = ("checkpoint folders (e.g. runs/dial-*), or --cache with a sweep cache whose runs were "
         f"trained here, e.g. by `{TRAINS}`; the checkpoints are not shipped")


def base_of(run: dict, ids: list[str]) -> str | None:
    """The id in ``ids`` that ``run`` is, or is a seed of (``<id>-s<seed>``, the seed being the
    one its config stores), else None. ``dial-beta64`` is not a seed of ``dial``."""
    from localist_core.experiments.results import seed_of
    rid, seed = run.get("run_id"), seed_of(run)
    for base in ids:
        if rid == base or (seed is not None and rid == f"{base}-s{seed}"):
            return base
    return None


def cache_jobs(cache: str, ids: list[str]) -> tuple[list[dict], str | None]:
    """The checkpoints of the cache's runs named by ``ids`` (and their seeds), ordered by id then
    seed, and what stops them being read (an id without a run, a run without its checkpoint
    folder) with the command that trains them, else None."""
    from localist_core.experiments.cache import load_cache
    from localist_core.experiments.results import seed_of
    from localist_core.paths import REPO
    runs, refused = load_cache(cache)
    for problem in refused:      # a refused result could be a seed: say so, keep going
        print(f"warning: {' '.join(problem.split())}", file=sys.stderr)
    jobs, problems = [], []
    for run in runs:
        base = base_of(run, ids)
        if base is None:
            continue
        stored = run.get("checkpoint")
        path = None if stored is None else Path(stored)
        if path is not None and not path.is_absolute():
            path = REPO / path
        jobs.append({"run_id": run["run_id"], "base": base, "seed": seed_of(run),
                     "checkpoint": stored, "path": path})
        if path is None or not path.is_dir():
            problems.append(f"{run['run_id']} ({stored or 'its result names no checkpoint'})")
    missing = [b for b in ids if not any(j["base"] == b for j in jobs)]
    if missing or problems:
        what = (f"{cache} holds no run {', '.join(missing)} (nor a seed of one)" if missing
                else f"no checkpoint folder for {', '.join(problems)}")
        return [], f"{what}: train {'it' if len(missing or problems) == 1 else 'them'} " \
                   f"with `{TRAINS}`"
    order = {b: i for i, b in enumerate(ids)}
    jobs.sort(key=lambda j: (order[j["base"]], j["seed"] is None, j["seed"] or 0))
    return jobs, None


def cell(values: list, fmt: str) -> str:
    """"mean ± sd (n)" of the finite values (``stats.summary``); the value alone when n = 1."""
    from localist_core.experiments.stats import summary
    s = summary(values)
    if s["n"] == 0:
        return "–"
    if s["n"] == 1:
        return f"{s['mean']:{fmt}}"
    return f"{s['mean']:{fmt}} ± {s['sd']:{fmt}} ({s['n']})"


def table(base: str, figures: list[dict]) -> str:
    """The Markdown table of one run id: a row per λ_f, in-block mass and perplexity per β."""
    mine = [f for f in figures if f["base"] == base]
    used = dict.fromkeys((f["seed"], f["checkpoint"]) for f in mine)
    lines = [f"### {base}", "",
             "seeds: " + ", ".join(f"{'?' if s is None else s} ({c})" for s, c in used), "",
             "| λ_f | " + " | ".join(f"β={b:g}: in-block | β={b:g}: ppl" for b in BETAS) + " |",
             "| --- " * (1 + 2 * len(BETAS)) + "|"]
    for lam in LOCALITIES:
        row = [f"{lam:g}"]
        for beta in BETAS:
            at = [f for f in mine if f["beta"] == beta and f["locality"] == lam]
            row += [cell([f["in_block_mass"] for f in at], ".3f"),
                    cell([f["perplexity"] for f in at], ".1f")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                    help="checkpoint folders, e.g. runs/dial-* runs/attention-l0.0-*")
    ap.add_argument("--cache", default=None, metavar="DIR",
                    help="a sweep cache (e.g. assets/study): calibrate the checkpoints of its runs")
    ap.add_argument("--runs", default=RUNS, metavar="IDS",
                    help=f"with --cache: the run ids, each with its seeds (default: {RUNS})")
    ap.add_argument("--json", default=None, metavar="PATH",
                    help="write every raw figure and the settings here "
                         "(REPRODUCTION.md reads assets/beta_calibration.json)")
    ap.add_argument("--data-dir", default=None,
                    help="WikiText-2 folder (default: $LOCALIST_DATA_DIR, then "
                         "../shared/data/wikitext-2)")
    args = ap.parse_args()
    ids = [r.strip() for r in args.runs.split(",") if r.strip()]
    # What this script needs and the repository does not ship: say so in one line, before the
    # (slow) imports. An unexpanded shell glob arrives here as a literal "runs/dial-*".
    missing = [c for c in args.checkpoints if not Path(c).is_dir()]
    if (not args.checkpoints and args.cache is None) or missing or not ids:
        given = f"no such folder: {', '.join(missing)}; " if missing else ""
        given += "--runs names no run id; " if not ids else ""
        print(f"error: {given}calibrate_beta.py needs {NEEDS}", file=sys.stderr)
        return 2
    if args.json and args.cache and Path(args.json).resolve().parent == Path(args.cache).resolve():
        print(f"error: --json {args.json} is inside the sweep cache {args.cache}, where it would "
              "be read as a result; write it elsewhere (assets/beta_calibration.json)",
              file=sys.stderr)
        return 2
    jobs = [{"run_id": c, "base": c, "seed": None, "checkpoint": c, "path": Path(c)}
            for c in args.checkpoints]
    if args.cache is not None:
        found, problem = cache_jobs(args.cache, ids)
        if problem:               # before any checkpoint is read
            print(f"error: {problem}", file=sys.stderr)
            return 2
        jobs += found

    import torch
    from tqdm import tqdm

    from localist_core import CheckpointError, load_model
    from localist_core.analysis.evaluate import evaluate_stream
    from localist_core.experiments.cache import write_json_atomic
    from localist_core.experiments.data import DataNotFound, load_corpus
    from localist_core.experiments.stats import finite
    from localist_core.experiments.sweep import git_commit, with_barrier_sharpness
    from localist_core.model.dial import Dial

    torch.set_num_threads(2)
    corpus, sources, figures = None, [], []
    bar = tqdm(total=len(jobs) * len(BETAS) * len(LOCALITIES), unit="eval", file=sys.stderr,
               desc="calibrate β")
    try:
        for job in jobs:
            bar.set_postfix_str(job["run_id"])
            model, tok = load_model(job["path"])
            seed = job["seed"]
            if seed is None:        # a folder: the seed its checkpoint's config stores
                seed = (getattr(model, "train_config", None) or {}).get("seed")
            # Runs trained on one corpus share its vocabulary: the corpus is read once.
            if corpus is None or tok.words != corpus.tokenizer.words:
                corpus = load_corpus(args.data_dir, tokenizer=tok)
                sources.append(str(getattr(corpus, "source", None)))
            for beta in BETAS:
                m = with_barrier_sharpness(model, beta)
                for lam in LOCALITIES:
                    ev = evaluate_stream(m, corpus.valid, Dial(lam), max_tokens=MAX_TOKENS)
                    mass = ((ev.get("attention") or {}).get("in_block_mass") or {}).get("mean")
                    figures.append({
                        "run_id": job["run_id"], "base": job["base"], "seed": seed,
                        "checkpoint": job["checkpoint"], "beta": beta, "locality": lam,
                        "in_block_mass": finite(mass), "perplexity": finite(ev["perplexity"]),
                        "tokens": ev.get("tokens")})
                    bar.update()
    except (CheckpointError, DataNotFound) as e:      # one line, as the CLI says it
        bar.close()
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1 if isinstance(e, DataNotFound) else 2
    bar.close()

    print(f"Valid in-block mass and perplexity on the first {MAX_TOKENS:,} validation tokens, "
          "mean ± sd (n) over seeds:\n")
    print("\n\n".join(table(base, figures) for base in dict.fromkeys(j["base"] for j in jobs)))
    if args.json:
        write_json_atomic(Path(args.json), {
            "settings": {"betas": list(BETAS), "localities": list(LOCALITIES),
                         "max_tokens": MAX_TOKENS, "cache": args.cache,
                         "runs": ids if args.cache else None,
                         "data": list(dict.fromkeys(sources)), "git_commit": git_commit()},
            "figures": figures})
        print(f"\nraw figures: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
