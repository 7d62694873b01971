"""The disk an app-started sweep may use (README "Security"): what one run stores, the bytes a
sweep folder and the whole root already hold, the check made before a sweep starts, and the
pruning that keeps only what a finished run needs. No streamlit here.

What one run of ``python -m localist_core sweep`` writes (measured: ``tiny`` with one step,
4.75 MB of weights, stores 24.6 MB, 19.5 MB of it in ``last/``):

- ``runs/<run>/``: the final weights (4 bytes a number of the state dict), its config and the
  vocabulary (~0.4 MB for WikiText-2);
- ``runs/<run>/last/``: the resumable trainer state, the weights again *and* AdamW's two
  moments (12 bytes a parameter in all), plus another copy of the weights, config and
  vocabulary. Together that is five times the weights: the 632 MB of a 30M-parameter run, even
  after a single step (the final save always writes it);
- ``cache/<run>.json`` (at most MAX_RESULT_BYTES) and ``cache/<run>.maps.safetensors`` (fp16
  attention maps of the sample prompts at each (λ, τ) setting).

``last/`` only serves to resume an unfinished run, so once a run's result is in the cache the
launcher removes it (``prune_finished``), keeping the final weights for the operator: a
finished run keeps a fifth. The check before a start counts every planned run at its full
size anyway, so the budget holds even if pruning never ran (a server restarted mid-sweep).
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

from localist_core.experiments.cache import MAX_RESULT_BYTES, SweepCacheError
from localist_core.model.files import read_json_file

MiB = 2**20
# Bytes on disk, per run and per folder; together with APP_LIMITS["sweeps"] they bound the root.
DISK_LIMITS: dict[str, int] = {
    "run": 768 * MiB,         # one run at its full size (the largest allowed config: 632 MB
                              # measured, 705 MB estimated)
    "sweep": 8 * 1024 * MiB,  # one sweep folder: what it holds plus what it plans (23 cpu-ref
                              # runs: 6.2 GB estimated before pruning)
    "root": 24 * 1024 * MiB,  # every app sweep together
    "entries": 20_000,      # files counted in one folder; more is refused, not walked
}
VOCAB_FILE_BYTES = 512 * 1024   # vocab.json of WikiText-2 (~0.37 MB), rounded up
SMALL_FILES = 64 * 1024         # config.json, trainer.json, their rounding
LAST = "last"                    # localist_core.experiments.train.LAST: the trainer state
PRUNE_EVERY_S = 10.0


def run_bytes(state_bytes: int, n_params: int, map_bytes: int) -> int:
    """What one run writes at its largest (before ``last/`` is pruned): the final weights, the
    trainer state (weights + two fp32 moments a parameter), the checkpoint copy in ``last/``,
    two vocabularies, the attention maps and a quarter of the result JSON's cap (tiny with one
    step: 25.8 MB estimated, 24.6 MB measured)."""
    weights = state_bytes + SMALL_FILES
    return (3 * weights + 8 * n_params + 2 * VOCAB_FILE_BYTES + map_bytes + MAX_RESULT_BYTES // 4)


def map_bytes(n_prompts: int, n_settings: int, n_layers: int, n_heads: int, n_ctx: int) -> int:
    """fp16 maps ``[layer, head, T, T]`` per prompt and setting, T ≤ n_ctx (an upper bound)."""
    return 2 * n_prompts * n_settings * n_layers * n_heads * n_ctx ** 2 + 4096


def folder_bytes(folder: Path, most: int | None = None) -> int | None:
    """Bytes of the regular files under ``folder`` (links are not followed, and count as
    nothing), or None when it holds more than ``most`` entries (default
    ``DISK_LIMITS["entries"]``; the caller refuses)."""
    most = DISK_LIMITS["entries"] if most is None else most
    total, seen, todo = 0, 0, [folder]
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    seen += 1
                    if seen > most:
                        return None
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        todo.append(Path(entry.path))
                    elif stat.S_ISREG(st.st_mode):
                        total += st.st_blocks * 512 if st.st_blocks else st.st_size
        except OSError:
            continue
    return total


def mb(n: int) -> str:
    return f"{n / MiB:,.0f} MB" if n >= 10 * MiB else f"{n / MiB:,.1f} MB"


def budget_problems(per_run: int, n_runs: int, name: str, held: int | None = 0,
                    others: int | None = 0) -> list[str]:
    """Why a sweep ``name`` of ``n_runs`` runs of ``per_run`` bytes each may not start, when its
    folder already holds ``held`` bytes and the root's other sweeps ``others`` (None: more
    files than ``folder_bytes`` counts)."""
    if per_run > DISK_LIMITS["run"]:
        return [f"One run of this config writes about {mb(per_run)} (weights, the trainer state "
                f"with AdamW's moments, maps); at most {mb(DISK_LIMITS['run'])} on this server "
                f"(a smaller d_model, d_ff, n_layers or n_ctx)"]
    if held is None or others is None:
        return [f"The app-sweeps folder holds more than {DISK_LIMITS['entries']:,} files in one "
                f"sweep; ask the operator to remove old sweeps"]
    need = per_run * n_runs
    if held + need > DISK_LIMITS["sweep"]:
        old = (f", and it already holds {mb(held)} of earlier runs (other seeds or settings "
               f"count too: choose a new name)" if held else "")
        return [f"Sweep {name!r} may write {n_runs} runs × {mb(per_run)} = {mb(need)}{old}; "
                f"one sweep folder may hold at most {mb(DISK_LIMITS['sweep'])} on this server "
                f"(fewer λ values or protocols, or a smaller model)"]
    if held + need + others > DISK_LIMITS["root"]:
        return [f"The app sweeps on this server would hold {mb(held + need + others)} with this "
                f"one; at most {mb(DISK_LIMITS['root'])} together: ask the operator to remove "
                f"old sweeps"]
    return []


def held_bytes(folders: list[Path]) -> int | None:
    """Bytes under ``folders`` together (absent ones hold none), or None when one of them holds
    more files than ``folder_bytes`` counts."""
    total = 0
    for folder in folders:
        if not folder.exists():
            continue
        size = folder_bytes(folder)
        if size is None:
            return None
        total += size
    return total


# -- pruning ----------------------------------------------------------------------------------

def prune_finished(cache_dir: Path, runs_dir: Path) -> int:
    """Remove ``last/`` (the resumable trainer state) of every run whose result is in the cache
    and newer than that state; return the bytes freed. Only real folders directly under
    ``runs_dir`` are touched, never through a link."""
    freed = 0
    try:
        results = [p for p in cache_dir.glob("*.json")
                   if p.name not in ("progress.json", "baselines.json")]
        runs_real = runs_dir.resolve()
    except OSError:
        return 0
    for path in results[:4096]:
        try:
            data = read_json_file(path, MAX_RESULT_BYTES, SweepCacheError)
            ckpt = data.get("checkpoint") if isinstance(data, dict) else None
            if not isinstance(ckpt, str) or not ckpt:
                continue
            run = Path(ckpt)    # absolute: the launcher passes an absolute --runs-dir
            last = run / LAST
            if (not run.is_absolute() or run.parent.resolve() != runs_real
                    or run.is_symlink() or last.is_symlink() or not last.is_dir()):
                continue
            newest = max((p.stat().st_mtime for p in last.iterdir()), default=0.0)
            if path.stat().st_mtime < newest:   # trained again since that result: keep it
                continue
            size = folder_bytes(last) or 0
            shutil.rmtree(last)
            freed += size
        except (OSError, SweepCacheError):
            continue
    return freed


def watch(proc, cache_dir: Path, runs_dir: Path, every: float = PRUNE_EVERY_S) -> threading.Thread:
    """A daemon thread that waits for the started sweep ``proc`` (so it never lingers as a
    zombie, whether or not anyone opens the Sweeps page) and prunes its finished runs every
    ``every`` seconds and once more at the end."""
    def loop() -> None:
        while True:
            try:
                proc.wait(timeout=every)
                break
            except subprocess.TimeoutExpired:   # still running
                prune_finished(cache_dir, runs_dir)
        prune_finished(cache_dir, runs_dir)

    thread = threading.Thread(target=loop, name=f"sweep-watch-{proc.pid}", daemon=True)
    thread.start()
    return thread
