"""The operator's switches for sweeps started from the app (on or off, how many at once) and the
one root folder they write into (README "Security"). No streamlit here; ``ui.launch_limits``
bounds a request, ``ui.launcher`` runs it, and ``ui.notices.shown`` hides the server's folders,
this root's included, from visitors."""
from __future__ import annotations

import os
from pathlib import Path

from localist_core.paths import ASSETS, CHECKPOINT_DIR, REPO

APP_SWEEPS = REPO / "runs" / "app-sweeps"     # default root; never the shipped assets/sweep
ENABLED_VAR = "LOCALIST_APP_SWEEPS_ENABLED"
ROOT_VAR = "LOCALIST_APP_SWEEPS"
MAX_JOBS_VAR = "LOCALIST_APP_SWEEPS_MAX_JOBS"
TRUE_WORDS = ("1", "true", "yes", "on")


# -- the operator's switches ------------------------------------------------------------------

def sweeps_enabled() -> bool:
    """Whether the operator let visitors start and stop sweeps (``$LOCALIST_APP_SWEEPS_ENABLED``
    is 1, true, yes or on, in any case)."""
    return os.environ.get(ENABLED_VAR, "").strip().lower() in TRUE_WORDS


def disabled_message() -> str:
    """Why starting is refused, and how an operator turns it on."""
    return (f"Starting sweeps from the app is turned off on this server. An operator turns it "
            f"on by starting the app with {ENABLED_VAR}=1. The command line "
            f"(python -m localist_core sweep) works regardless.")


def max_jobs() -> int:
    """How many app-started sweeps may run at once: ``$LOCALIST_APP_SWEEPS_MAX_JOBS``, default
    1; a value that is not a whole number ≥ 1 counts as 1 (the safe side)."""
    try:
        return max(1, int(os.environ.get(MAX_JOBS_VAR, "1").strip()))
    except ValueError:
        return 1


def app_root() -> Path:
    """The one folder app-started sweeps write into, resolved (links and ``..`` followed):
    ``$LOCALIST_APP_SWEEPS`` (relative to the repository), else ``runs/app-sweeps``."""
    raw = os.environ.get(ROOT_VAR, "").strip()
    return resolved(raw or APP_SWEEPS)


def resolved(path: str | Path) -> Path:
    """``path`` made absolute (relative to the repository) with links and ``..`` resolved; as
    given when it cannot be resolved (a link loop), so a check never raises."""
    p = Path(path).expanduser()
    p = p if p.is_absolute() else REPO / p
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return p


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both already ``resolved``)."""
    return path == folder or folder in path.parents


def _checkpoint_dirs() -> list[Path]:
    extra = os.environ.get("LOCALIST_CHECKPOINT_DIRS", "")
    return [resolved(CHECKPOINT_DIR)] + [resolved(p) for p in extra.split(os.pathsep) if p]


def root_problems(root: Path | None = None, protected: tuple = ()) -> list[str]:
    """What is wrong with the root folder for visitors' sweeps (an operator's setting).

    The root must be a folder of its own: not the repository or above it, not the shipped
    ``assets`` (nor holding it), not a folder whose checkpoints every visitor's Checkpoint menu
    lists, and not overlapping a ``protected`` sweep cache (the shipped results).
    """
    root = app_root() if root is None else resolved(root)
    problems = []
    assets = resolved(ASSETS)
    if root == REPO or root in REPO.parents:
        problems.append(f"{ROOT_VAR} must name a folder of its own, not the repository or a "
                        f"folder above it.")
    elif inside(root, assets) or inside(assets, root):
        problems.append(f"{ROOT_VAR} must not overlap the shipped assets folder.")
    if any(inside(d, root) for d in _checkpoint_dirs()):
        problems.append(f"{ROOT_VAR} must not hold a folder of LOCALIST_CHECKPOINT_DIRS: the "
                        f"checkpoints of visitors' sweeps would appear in everyone's "
                        f"Checkpoint menu.")
    for shipped in map(resolved, protected):
        if inside(root, shipped) or inside(shipped, root):
            problems.append(f"{ROOT_VAR} must not overlap the shipped sweep cache.")
    if root.exists() and not root.is_dir():
        problems.append(f"{ROOT_VAR} exists and is not a folder.")
    return problems
