"""The checkpoint catalogue: which checkpoint folders the app can offer, each checked once
(and again only when its files change), and why the broken ones are not offered."""
from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from localist_core.model.checkpoint import CONFIG, VOCAB, WEIGHTS, CheckpointError, check_checkpoint
from localist_core.paths import CHECKPOINT_DIR

# A listing reads at most MAX_ROOT_ENTRIES entries of each checkpoint root and offers at most
# MAX_CHECKPOINTS_PER_ROOT folders from it, so a root of 100k subfolders cannot stall the
# sidebar (which lists every 30 s); the rest are named as not looked at.
MAX_ROOT_ENTRIES = 1024
MAX_CHECKPOINTS_PER_ROOT = 64
DESCRIBED_KEPT = 256   # memoised checkpoint descriptions (a few hundred bytes each)


@dataclass(frozen=True)
class CheckpointInfo:
    key: str            # folder name, used in deep links
    path: str
    label: str          # what the sidebar shows
    protocol: str       # "dial", "penalty" or "unknown"
    locality: float | None
    problem: str | None = None  # set when the checkpoint cannot be offered


def checkpoint_stamp(path: Path) -> tuple:
    """What identifies a checkpoint folder's contents without reading them: its path and the
    size, mtime and inode of each of its three files (an atomic rewrite changes the inode)."""
    files = []
    for name in (CONFIG, VOCAB, WEIGHTS):
        try:
            st = (path / name).stat()
            files.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            files.append((name, None))
    return (str(path), *files)


def describe_checkpoint(path: Path) -> CheckpointInfo:
    """Label a checkpoint from its config.json, after checking its vocabulary and the header of
    its weights against the config (``check_checkpoint``; the weights themselves are not read).
    A broken checkpoint gets ``problem`` set, naming the file and what is wrong. Memoised on
    the files' sizes and times: an unchanged folder costs three stat() calls."""
    return _describe(checkpoint_stamp(Path(path)))


@functools.lru_cache(maxsize=DESCRIBED_KEPT)
def _describe(stamp: tuple) -> CheckpointInfo:
    path = Path(stamp[0])
    key = path.name
    try:
        cfg = check_checkpoint(path)
    except CheckpointError as e:
        return CheckpointInfo(key, str(path), f"{key} (unreadable)", "unknown", None, str(e))
    except Exception as e:  # a bug here must cost one folder, never the whole listing
        return CheckpointInfo(key, str(path), f"{key} (unreadable)", "unknown", None,
                              f"{path}: could not be checked ({type(e).__name__}: {e})")
    # check_checkpoint has checked the types: train is null or an object with a valid protocol
    # and penalty_form, and locality, when given, is a finite number in [0, 1].
    train = cfg.get("train") or {}
    protocol = train.get("protocol", "unknown")
    lam = train.get("locality")
    model = cfg["model"]
    if protocol == "dial":
        label = f"{key}: dial model (one checkpoint for every λ)"
    elif protocol == "penalty":
        at = f"λ={lam:g}" if lam is not None else "an unrecorded λ"
        label = f"{key}: trained at {at} ({train.get('penalty_form', 'attention')} penalty)"
    else:
        label = key
    if model.get("noncausal_diagnostic"):
        label += " — NON-CAUSAL DIAGNOSTIC (leaks the future)"
    return CheckpointInfo(key, str(path), label, protocol, lam)


def _checkpoint_folders(root: Path) -> tuple[list[Path], bool]:
    """The first MAX_CHECKPOINTS_PER_ROOT checkpoint folders (by name) among the first
    MAX_ROOT_ENTRIES entries of ``root``, and whether anything was left out."""
    try:
        with os.scandir(root) as it:
            entries = list(itertools.islice(it, MAX_ROOT_ENTRIES + 1))
    except OSError:
        return [], False
    more = len(entries) > MAX_ROOT_ENTRIES
    folders = []
    for entry in sorted(entries[:MAX_ROOT_ENTRIES], key=lambda e: e.name):
        try:
            if not entry.is_dir() or not (Path(entry.path) / CONFIG).exists():
                continue
        except OSError:
            continue
        if len(folders) == MAX_CHECKPOINTS_PER_ROOT:
            return folders, True
        folders.append(Path(entry.path))
    return folders, more


def list_checkpoints(extra_dirs: str | None = None) -> list[CheckpointInfo]:
    """Shipped checkpoints in ``assets/checkpoints`` plus any under ``$LOCALIST_CHECKPOINT_DIRS``
    (``os.pathsep``-separated folders that hold checkpoint folders). The dial model comes first.
    At most MAX_CHECKPOINTS_PER_ROOT folders of each root are looked at; a folder is checked
    again only when one of its files changed (``describe_checkpoint``)."""
    roots = [CHECKPOINT_DIR]
    extra = extra_dirs if extra_dirs is not None else os.environ.get("LOCALIST_CHECKPOINT_DIRS", "")
    roots += [Path(p) for p in extra.split(os.pathsep) if p]
    found: dict[str, CheckpointInfo] = {}
    for root in roots:
        if not root.is_dir():
            continue
        folders, more = _checkpoint_folders(root)
        for sub in folders:
            if sub.name not in found:
                found[sub.name] = describe_checkpoint(sub)
        if more and str(root) not in found:
            found[str(root)] = CheckpointInfo(
                str(root), str(root), f"{root} (not all looked at)", "unknown", None,
                f"{root}: holds more than {MAX_CHECKPOINTS_PER_ROOT} checkpoint folders or "
                f"{MAX_ROOT_ENTRIES} entries; only the first {MAX_CHECKPOINTS_PER_ROOT} "
                f"checkpoint folders (by name) are offered")
    order = {"dial": 0, "penalty": 1}
    return sorted(found.values(), key=lambda c: (c.problem is not None,
                                                 order.get(c.protocol, 2), c.locality or 0, c.key))
