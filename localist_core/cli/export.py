"""``export``: write a compressed copy of a checkpoint and keep it only within tolerance. The copy
is built in a self-made folder beside DEST and renamed into place, so a failure at any step
leaves DEST as it was and removes only what this command made."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..model.config import TrainConfig, config_from_dict
from ..model.files import atomic_write
from .errors import EXIT_FAILURE
from .guards import check_export_dest

EXPORT_TMP_SUFFIX = ".export-tmp"
EXPORT_OLD_SUFFIX = ".export-old"


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


def cmd_export(args: argparse.Namespace) -> int:
    """Write a compressed copy of a checkpoint, keeping it only if valid perplexity stays within
    ``--tolerance`` of the full-precision model (the shipping rule in REPRODUCTION.md)."""
    from ..analysis.evaluate import evaluate_stream
    from ..experiments.data import load_corpus
    from ..model.checkpoint import load_model, save_checkpoint

    dest = Path(args.dest)
    replace = check_export_dest(dest, args.force)   # before the slow evaluation
    made: list[Path] = []
    tmp: Path | None = None
    moved = False
    try:
        _make_parents(dest, made)
        tmp = _self_made_dir(dest, EXPORT_TMP_SUFFIX)
        model, tok = load_model(args.source)
        if args.barrier_sharpness is not None:
            from ..experiments.sweep import with_barrier_sharpness
            model = with_barrier_sharpness(model, args.barrier_sharpness)
        corpus = load_corpus(args.data_dir, tokenizer=tok)
        full = evaluate_stream(model, corpus.valid, with_attention=False)["perplexity"]
        meta = dict(model.meta)
        save_checkpoint(tmp, model, tok, _train_cfg(model), meta=meta, precision=args.precision)
        small, _ = load_model(tmp)                  # the copy as it will be read back
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
        _replace_meta(tmp, meta)    # the weights stay as written and evaluated
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


def _replace_meta(folder: Path, meta: dict) -> None:
    """Rewrite only the checkpoint's config.json in ``folder``, with ``meta`` in place of its
    meta, formatted as ``save_checkpoint`` writes it."""
    from ..model.checkpoint import CONFIG, read_config
    config = read_config(folder)
    config["meta"] = meta
    atomic_write(folder / CONFIG, lambda p: Path(p).write_text(json.dumps(config, indent=1)))


def _train_cfg(model):
    cfg = getattr(model, "train_config", None)
    return config_from_dict(TrainConfig, cfg) if cfg else None
