"""The shipped sweep (assets/sweep): one seed of the study's runs, with the sample prompts'
attention maps that the Compare page draws.

From the repository root, after ``bash scripts/study.sh`` has trained the study's runs here:

    python scripts/shipped_sweep.py --study assets/study --out assets/sweep

For every run of the study trained with ``--seed`` (default 1234, the id without ``-s<seed>``),
it copies the study's result file unchanged into ``--out`` (so each figure has one source:
the study, which the tests hold the two to) and writes ``<run id>.maps.safetensors`` beside it:
the fp16 attention patterns of each prompt in ``--prompts`` at each of the run's dial settings,
from the checkpoint the result names, at the β it was evaluated with. No training and no
evaluation is repeated: a run costs seconds. Maps already there for the same checkpoint, β,
prompts and settings are kept, so the script is safe to re-run; it deletes nothing.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's localist_core

SEED = 1234
TRAINS = "bash scripts/study.sh"


def chosen(runs: list[dict], seed: int) -> list[dict]:
    """The study's runs trained with ``seed``, ordered by id."""
    from localist_core.experiments.results import seed_of
    return sorted((r for r in runs if seed_of(r) == seed), key=lambda r: r["run_id"])


def eval_beta(run: dict) -> float | None:
    """The β a run's result was evaluated at, or None where it kept its trained one."""
    return (run["config"].get("eval") or {}).get("barrier_sharpness")


def provenance(run: dict, prompts: list[dict]) -> dict[str, str]:
    """What a maps file was made from, stored in its header: the checkpoint, the β and the
    prompts' texts."""
    import hashlib
    import json
    beta = eval_beta(run)
    texts = json.dumps([[p["name"], p["text"]] for p in prompts], ensure_ascii=False)
    return {"checkpoint": str(run["checkpoint"]),
            "beta": "trained" if beta is None else f"{beta:g}",
            "prompts_sha256": hashlib.sha256(texts.encode()).hexdigest()}


def current(path: Path, run: dict, prompts: list[dict]) -> bool:
    """Whether ``path`` already holds ``run``'s maps on ``prompts``: the same provenance and a
    map for every prompt at every setting (read from the header alone)."""
    from safetensors import safe_open

    from localist_core.experiments.results import dial_settings
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, keys = f.metadata() or {}, set(f.keys())
    except Exception:          # unreadable: made again
        return False
    want = {f"{p['name']}|{lam:g}|{tau:g}" for p in prompts for lam, tau in dial_settings(run)}
    return meta == provenance(run, prompts) and keys == want


def write_maps(run: dict, prompts: list[dict], path: Path) -> None:
    """The attention maps of ``run``'s checkpoint on ``prompts`` at its settings, into ``path``
    (atomically), evaluated at the β its result records."""
    from localist_core.experiments.results import dial_settings
    from localist_core.experiments.sweep import attention_maps, with_barrier_sharpness
    from localist_core.model.checkpoint import load_model
    from localist_core.model.files import atomic_write, safetensors_writer
    from localist_core.paths import REPO
    model, tok = load_model(REPO / run["checkpoint"])
    beta = eval_beta(run)
    if beta is not None:
        model = with_barrier_sharpness(model, beta)
    maps = attention_maps(model.eval(), tok, prompts, dial_settings(run))
    meta = provenance(run, prompts)
    atomic_write(path, safetensors_writer(maps, meta))


def copy_atomically(source: Path, dest: Path) -> None:
    """``source``'s bytes into ``dest``: a reader sees the old file or the new one."""
    from localist_core.model.files import atomic_write
    atomic_write(dest, lambda p: shutil.copyfile(source, p))


def main(argv: list[str] | None = None) -> int:
    from localist_core.experiments.cache import BASELINES_FILE, load_cache
    from localist_core.experiments.results import dial_settings
    from localist_core.model.checkpoint import CheckpointError
    from localist_core.model.files import UnsafeFileError, read_prompts
    from localist_core.paths import PROMPTS_FILE, REPO, SHIPPED_SWEEP, STUDY_SWEEP
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default=str(STUDY_SWEEP.relative_to(REPO)),
                   help="the study's cache, read only (default: %(default)s)")
    p.add_argument("--out", default=str(SHIPPED_SWEEP.relative_to(REPO)),
                   help="the shipped sweep's folder (default: %(default)s)")
    p.add_argument("--prompts", default=str(PROMPTS_FILE.relative_to(REPO)),
                   help="the sample texts whose maps are stored (default: %(default)s)")
    p.add_argument("--seed", type=int, default=SEED,
                   help="the training seed whose runs are shipped (default: %(default)s)")
    args = p.parse_args(argv)

    study, out = Path(args.study), Path(args.out)
    try:
        prompts = read_prompts(Path(args.prompts))
    except UnsafeFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs, refused = load_cache(study)
    for problem in refused:
        print(f"warning: {' '.join(problem.split())}", file=sys.stderr)
    runs = chosen(runs, args.seed)
    if not runs:
        print(f"error: {study} holds no run trained with seed {args.seed}; `{TRAINS}` "
              "trains the study", file=sys.stderr)
        return 2
    missing = [r["run_id"] for r in runs if not (REPO / r["checkpoint"]).is_dir()]
    if missing:
        print(f"error: no checkpoint folder for {', '.join(missing)}; `{TRAINS}` trains them "
              "here (the checkpoints are not shipped)", file=sys.stderr)
        return 2
    if not (study / BASELINES_FILE).is_file():
        print(f"error: {study} has no {BASELINES_FILE}; `{TRAINS}` writes it", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    copy_atomically(study / BASELINES_FILE, out / BASELINES_FILE)
    for run in runs:
        rid = run["run_id"]
        maps = out / f"{rid}.maps.safetensors"
        if not current(maps, run, prompts):
            try:
                write_maps(run, prompts, maps)
            except CheckpointError as e:
                print(f"error: {rid}: {' '.join(str(e).split())}", file=sys.stderr)
                return 2
        copy_atomically(study / f"{rid}.json", out / f"{rid}.json")   # after its maps
        print(f"{rid}: {len(dial_settings(run))} settings × {len(prompts)} prompts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
