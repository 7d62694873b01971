"""Checks made before anything slow runs, so a bad command fails in a second and no command
touches what it did not write: ``train --out``, ``sweep --cache``, ``eval --json``, the export
destination, ``--prompts``, and a lower bound on a training run's memory."""
from __future__ import annotations

import os
from pathlib import Path

from ..model import files
from ..model.config import ModelConfig, TrainConfig
from ..model.files import UnsafeFileError, is_library_temp, own_temp_of
from .errors import CannotAllocate, UsageError, bytes_text

# --- folders and files -----------------------------------------------------------------------


def nearest_existing(path: Path) -> Path:
    """``path`` itself, or the closest ancestor of it that exists."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_can_make_folder(path: Path, option: str) -> None:
    """Refuse a folder that cannot be created or written: a file in its place or above it, or
    a parent without write permission."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")
    base = nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{option} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in {base} (permission denied)")


def check_output_file(path: Path, option: str) -> None:
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


def is_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a config.json written by this project (checkpoint.FORMAT)."""
    from ..model.checkpoint import CheckpointError, read_config
    try:
        read_config(folder)
    except CheckpointError:
        return False
    return True


def foreign_entries(folder: Path, ours: set[str]) -> list[str]:
    """Names in ``folder`` that this project did not write: anything but ``ours`` and the temp
    files a killed writer of one of them leaves (``files.OWN_TEMP``, and safetensors' own temp
    file, ``files.is_library_temp``, which training's clean-up removes too)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in ours and own_temp_of(p.name) not in ours
                  and not is_library_temp(p))


def _names(entries: list[str]) -> str:
    return ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def check_train_out(out: Path) -> None:
    """``train --out``: a new or empty folder, or one holding only what training writes (a
    checkpoint, and its ``last/`` trainer state to resume from). Training replaces those files
    and clears stale temp files there, so a folder holding anything else is refused."""
    from ..experiments.train import LAST, TRAINER_META, TRAINER_STATE
    from ..model.checkpoint import CONFIG, VOCAB, WEIGHTS
    check_can_make_folder(out, "--out")
    if not out.is_dir():
        return
    checkpoint = {CONFIG, WEIGHTS, VOCAB}
    foreign = foreign_entries(out, checkpoint | {LAST})
    last = out / LAST
    if last.is_dir():
        foreign += [f"{LAST}/{n}" for n in foreign_entries(last, checkpoint | {TRAINER_STATE,
                                                                              TRAINER_META})]
    elif last.exists():
        foreign.append(LAST)
    if foreign:
        raise UsageError(f"--out {out} holds files training did not write ({_names(foreign)}); "
                         f"give a new or empty folder, or a checkpoint folder of this project")
    for folder in (out, last):
        if (folder / CONFIG).exists() and not is_checkpoint(folder):
            raise UsageError(f"--out {out}: {folder / CONFIG} is not a checkpoint config of this "
                             f"project; training would overwrite it: give another --out")


def check_sweep_cache(cache: Path) -> None:
    """``sweep --cache``: a new or empty folder, or a sweep cache (it has baselines.json, the
    first file a sweep writes). A sweep writes result files into it, so an unrelated folder is
    refused. Our temp files (``files.OWN_TEMP``) do not count: a sweep killed while writing
    baselines.json leaves one."""
    from ..experiments.cache import BASELINES_FILE, PROGRESS_FILE
    check_can_make_folder(cache, "--cache")
    if not cache.is_dir() or (cache / BASELINES_FILE).is_file() or (
            cache / PROGRESS_FILE).is_file():
        return
    if any(own_temp_of(p.name) is None and not is_library_temp(p) for p in cache.iterdir()):
        raise UsageError(f"--cache {cache} is a folder that is not a sweep cache (no "
                         f"{BASELINES_FILE}); give a new or empty folder")


def check_export_dest(dest: Path, force: bool) -> bool:
    """Refuse an export target that holds anything export did not write; return whether an
    existing checkpoint will be replaced (only with ``--force``). An empty folder is used."""
    from ..experiments.train import LAST
    from ..model.checkpoint import CONFIG, VOCAB, WEIGHTS, CheckpointError, read_config
    if dest.is_symlink():
        raise UsageError(f"export: {dest} is a symbolic link; give the folder itself")
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"export: {dest} is a file, not a checkpoint folder; nothing was "
                         f"written (give a new folder name)")
    # The temp folder is made, and renamed, in DEST's parent folder.
    check_can_make_folder(dest.parent, "export:")
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
    foreign = foreign_entries(dest, {CONFIG, WEIGHTS, VOCAB, LAST})
    if foreign:
        raise UsageError(f"export: {dest} is a checkpoint but also holds files this project did "
                         f"not write ({_names(foreign)}); --force replaces only checkpoint "
                         f"files: move them out first")
    return True


def read_prompts(path: str) -> list[dict] | None:
    """The sample prompts of ``--prompts`` ('' for none), checked before the corpus load
    (``files.read_prompts``: size first, then every entry)."""
    if not path:
        return None
    try:
        return files.read_prompts(Path(path))
    except UnsafeFileError as e:
        raise UsageError(f"--prompts {e}") from None


# --- memory ----------------------------------------------------------------------------------

def memory_limit() -> int | None:
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


def check_fits_in_memory(mcfg: ModelConfig, tcfg: TrainConfig) -> None:
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

    from ..model.transformer import LocalistLM
    limit = memory_limit()
    if limit is None:
        return
    with torch.device("meta"):
        n_params = sum(p.numel() for p in LocalistLM(mcfg).parameters())
    per_layer = tcfg.batch_size * mcfg.n_heads * mcfg.n_ctx ** 2     # entries of one pattern
    need = 16 * n_params + per_layer * (4 * mcfg.n_layers + 2 + 2)
    if need > limit:
        raise CannotAllocate(f"at least {bytes_text(need)} to train {n_params:,} parameters "
                             f"with AdamW at batch_size={tcfg.batch_size:,} (this machine has "
                             f"{bytes_text(limit)})")
