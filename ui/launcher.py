"""Starting, listing and stopping the sweeps that the Sweeps page runs as background processes,
and reading their progress and logs. No streamlit here.

Anyone who can open the dashboard can reach this module's entry points, so they are guarded
(README "Security"):

- off unless the operator sets ``LOCALIST_APP_SWEEPS_ENABLED=1``, checked here as well as on
  the page;
- a visitor names a sweep; its cache and checkpoints go to ``<root>/<name>/cache`` and
  ``<root>/<name>/runs`` under one root folder (``$LOCALIST_APP_SWEEPS``, else
  ``runs/app-sweeps``), and a folder that resolves outside the root (a link) is refused;
- the sweep reads the server's own corpus, never a folder a visitor names;
- every override, list and count has an upper bound, all in ``APP_LIMITS`` and
  ``OVERRIDE_BOUNDS``;
- at most ``$LOCALIST_APP_SWEEPS_MAX_JOBS`` (default 1) sweeps run under the root at once,
  checked and started under one file lock;
- nothing shown to a visitor holds a server path (``shown_path``, ``redact``).
"""
from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from localist_core.experiments.sweep import (
    MAX_SMALL_JSON_BYTES,
    PROGRESS_FILE,
    PROTOCOL_NAMES,
    SweepCacheError,
    write_json_atomic,
)
from localist_core.model.checkpoint import read_json_file
from localist_core.model.config import (
    TEMPERATURE_RANGE,
    ConfigError,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    preset,
)
from localist_core.paths import REPO

APP_SWEEPS = REPO / "runs" / "app-sweeps"     # default root; never the shipped assets/sweep
ENABLED_VAR = "LOCALIST_APP_SWEEPS_ENABLED"
ROOT_VAR = "LOCALIST_APP_SWEEPS"
MAX_JOBS_VAR = "LOCALIST_APP_SWEEPS_MAX_JOBS"
TRUE_WORDS = ("1", "true", "yes", "on")
# Beside the cache, in <root>/<name>/, never inside it: the cache holds only what run_sweep
# writes (the CLI refuses a --cache folder holding anything else).
LAUNCH_FILE = "app-launch.info"               # JSON, but not *.json: load_cache would refuse it
LOG_FILE = "sweep.log"
LOCK_FILE = ".app-sweeps.lock"                # at the root: one lock for every app sweep
PROMPTS = "assets/prompts.json"               # relative: the sweep runs with cwd=REPO
CONFIG_COST = {"tiny": 0.5, "cpu-ref": 15.0, "paper": 360.0}   # minutes per run on this CPU
APP_CONFIGS = ("tiny", "cpu-ref")             # paper takes hours per run: CLI only
RESERVED_OVERRIDES = ("protocol", "penalty_form", "locality")  # set by the form itself
REFUSED_OVERRIDES = ("vocab_size",)           # taken from the corpus, never from a visitor
DEFAULT_EVAL_TOKENS = 20_000

# Every bound on what a visitor may ask for, in one place, sized for the 2-core CPU server.
APP_LIMITS: dict[str, int] = {
    "lambdas": 11,            # λ values: 0, 0.1, …, 1 (one model per λ and penalty protocol)
    "taus": 8,                # τ values: each multiplies every evaluation
    "eval_tokens": 250_000,   # valid tokens per evaluation (WikiText-2's valid split is ~217k)
    "overrides": 20,          # key=value items
    "override_chars": 100,    # characters per item
    "name_chars": 64,         # characters of a sweep name
    "cutoffs": 4,             # adaptive-softmax cluster boundaries
    "sweeps": 20,             # sweep folders kept under the root (disk); resuming one is free
    "budget_hours": 8,        # runs × time_budget_s: the longest training a sweep may ask for
    "evals_per_run": 100,     # max_steps / eval_interval: training-time evaluations (not in
                              # time_budget_s, which counts training steps only)
}

# Inclusive (low, high) of every numeric override a visitor may give. A key that is not here,
# in FREE_OVERRIDES, or in RESERVED_OVERRIDES is refused. The high ends bound the cost (model
# size, steps, threads); the low ends are those of the config itself, or keep an evaluation
# or a checkpoint from running on every step.
OVERRIDE_BOUNDS: dict[str, tuple[float, float]] = {
    # ModelConfig: size and cost of every step
    "d_model": (8, 512),
    "n_layers": (1, 4),
    "n_heads": (1, 8),
    "d_ff": (8, 2048),
    "n_ctx": (8, 256),
    "block_size": (1, 64),
    "max_block_size": (1, 64),
    "anchors_per_block": (1, 5),
    "dropout": (0.0, 0.9),
    "recruit_alpha": (0.01, 100.0),
    "boundary_bits": (0.0, 100.0),
    "barrier_sharpness": (0.01, 100.0),
    "div_value": (1.0, 16.0),
    "cutoffs": (1, 30_000),   # each boundary (WikiText-2 has ~33k words); how many: APP_LIMITS
    # TrainConfig: how long and how hard the server works
    "max_steps": (1, 5000),
    "time_budget_s": (1.0, 3600.0),
    "batch_size": (1, 64),
    "threads": (1, 2),
    "eval_interval": (10, 5000),
    "ckpt_interval": (10, 5000),
    "warmup_steps": (0, 5000),
    "lr": (1e-6, 1.0),
    "min_lr_ratio": (0.0, 1.0),
    "penalty_scale": (0.0, 100.0),
    "value_l2": (0.0, 1.0),
    "weight_decay": (0.0, 1.0),
    "grad_clip": (0.0, 100.0),
    "seed": (0, 2**31 - 1),
}
# Overrides without a cost to bound: a choice among PARTITIONS, or a switch.
FREE_OVERRIDES = ("partition", "bf16", "lr_by_time", "noncausal_diagnostic")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class LaunchError(RuntimeError):
    """A sweep cannot be started or stopped; the message is safe to show to a visitor."""


class SweepsDisabled(LaunchError):
    """Starting and stopping sweeps from the app is off on this server."""


class SweepBusy(LaunchError):
    """A live sweep already writes into this folder, or the server runs all it may."""


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
    return _real(raw or APP_SWEEPS)


def _real(path: str | Path) -> Path:
    """``path`` made absolute (relative to the repository) with links and ``..`` resolved; as
    given when it cannot be resolved (a link loop), so a check never raises."""
    p = Path(path).expanduser()
    p = p if p.is_absolute() else REPO / p
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return p


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _checkpoint_dirs() -> list[Path]:
    extra = os.environ.get("LOCALIST_CHECKPOINT_DIRS", "")
    return [_real(REPO / "assets" / "checkpoints")] + [_real(p) for p in extra.split(os.pathsep)
                                                        if p]


def root_problems(root: Path | None = None, protected: tuple = ()) -> list[str]:
    """What is wrong with the root folder for visitors' sweeps (an operator's setting).

    The root must be a folder of its own: not the repository or above it, not the shipped
    ``assets`` (nor holding it), not a folder whose checkpoints every visitor's Checkpoint menu
    lists, and not overlapping a ``protected`` sweep cache (the shipped results).
    """
    root = app_root() if root is None else _real(root)
    problems = []
    assets = _real(REPO / "assets")
    if root == REPO or root in REPO.parents:
        problems.append(f"{ROOT_VAR} must name a folder of its own, not the repository or a "
                        f"folder above it.")
    elif _inside(root, assets) or _inside(assets, root):
        problems.append(f"{ROOT_VAR} must not overlap the shipped assets folder.")
    if any(_inside(d, root) for d in _checkpoint_dirs()):
        problems.append(f"{ROOT_VAR} must not hold a folder of LOCALIST_CHECKPOINT_DIRS: the "
                        f"checkpoints of visitors' sweeps would appear in everyone's "
                        f"Checkpoint menu.")
    for shipped in map(_real, protected):
        if _inside(root, shipped) or _inside(shipped, root):
            problems.append(f"{ROOT_VAR} must not overlap the shipped sweep cache.")
    if root.exists() and not root.is_dir():
        problems.append(f"{ROOT_VAR} exists and is not a folder.")
    return problems


# -- what a visitor may see -------------------------------------------------------------------

def shown_path(path: str | Path, root: Path | None = None) -> str:
    """``path`` without server detail: relative to the repository when inside it, else relative
    to the root as ``$LOCALIST_APP_SWEEPS/…``, else only its last part."""
    p = _real(path)
    root = app_root() if root is None else root
    if _inside(p, REPO):
        return str(p.relative_to(REPO)) if p != REPO else "."
    if _inside(p, root):
        rest = p.relative_to(root)
        return f"${ROOT_VAR}" + (f"/{rest}" if str(rest) != "." else "")
    return p.name or "."


def redact(text: str, root: Path | None = None) -> str:
    """``text`` (a log, an error) with the server's folders replaced by placeholders."""
    root = app_root() if root is None else root
    pairs = [] if _inside(root, REPO) else [(str(root), f"${ROOT_VAR}")]
    pairs += [(str(REPO) + os.sep, ""), (str(REPO), "."), (sys.prefix, "<python>"),
              (sys.base_prefix, "<python>"), (str(REPO.parent), "<server>"),
              (str(Path.home()), "~")]
    for old, new in pairs:
        if len(old) > 1:   # never replace "/" alone
            text = text.replace(old, new)
    return text


# -- the request ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepRequest:
    """A validated sweep a visitor may start: a name under ``root`` and bounded settings."""

    name: str
    protocols: tuple[str, ...]
    lambdas: tuple[float, ...]
    taus: tuple[float, ...]
    config: str
    root: Path
    overrides: tuple[str, ...] = ()
    eval_tokens: int = DEFAULT_EVAL_TOKENS

    @property
    def folder(self) -> Path:
        """The sweep's own folder under the root."""
        return self.root / self.name

    @property
    def cache_dir(self) -> Path:
        return self.folder / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    @property
    def n_runs(self) -> int:
        return sum(1 if p == "dial" else len(self.lambdas) for p in self.protocols)

    def minutes(self) -> float:
        """A rough wall-clock estimate on this CPU."""
        return self.n_runs * CONFIG_COST.get(self.config, 15.0)


def parse_numbers(text: str, name: str, lo: float, hi: float,
                  most: int | None = None) -> tuple[float, ...]:
    """Comma- or space-separated numbers in [lo, hi], sorted and deduplicated; at most
    ``most`` distinct values."""
    text = str(text)
    if most is not None and len(text) > 32 * most:   # refuse a huge paste before parsing it
        raise ValueError(f"{name}: {len(text):,} characters; at most {most} values are allowed")
    items = [t for t in re.split(r"[,\s;]+", text.strip()) if t]
    if not items:
        raise ValueError(f"{name}: give at least one number, e.g. 0, 0.5, 1")
    vals = set()
    for t in items:
        try:
            v = float(t)
        except ValueError:
            shown = t if len(t) <= 20 else t[:20] + "…"
            raise ValueError(f"{name}: {shown!r} is not a number") from None
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"{name}: {t} is outside [{lo:g}, {hi:g}]")
        vals.add(v)
    if most is not None and len(vals) > most:
        raise ValueError(f"{name}: {len(vals)} values given; at most {most} are allowed")
    return tuple(sorted(vals))


def check_name(name: str) -> str:
    """A sweep name: letters, digits and ``-_.``, starting with a letter or digit, at most
    ``APP_LIMITS["name_chars"]`` characters (so never ``.``, ``..`` or a path)."""
    name = str(name or "").strip()
    most = APP_LIMITS["name_chars"]
    if not name:
        raise ValueError("Sweep name: give a name, e.g. my-sweep")
    if len(name) > most:
        raise ValueError(f"Sweep name: {len(name)} characters; at most {most}")
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise ValueError(f"Sweep name: {shown!r} is not allowed; use letters, digits and - _ . "
                         f"(starting with a letter or digit), not a path")
    return name


def sweep_folder(name: str, root: Path | None = None) -> Path:
    """``<root>/<name>``, refused (ValueError) when the name is not valid or when the folder,
    its cache or its runs folder resolves outside the root (a link leading out)."""
    root = app_root() if root is None else root
    folder = root / check_name(name)
    for path in (folder, folder / "cache", folder / "runs"):
        try:
            real = path.resolve()
        except (OSError, RuntimeError):   # a link loop
            raise ValueError(f"Sweep name: the folder of {name!r} cannot be resolved (a link "
                             f"loop); refused") from None
        if not _inside(real, root) or real == root:
            raise ValueError(f"Sweep name: the folder of {name!r} leads outside the app-sweeps "
                             f"folder (a link); refused")
        if path.exists() and not path.is_dir():
            raise ValueError(f"Sweep name: {shown_path(path, root)} exists and is not a folder")
    return folder


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _bound_problem(key: str, value) -> str | None:
    """Why ``key=value`` is outside OVERRIDE_BOUNDS (naming key, value and bound), or None."""
    lo, hi = OVERRIDE_BOUNDS[key]
    values = value if isinstance(value, tuple) else (value,)
    if key == "cutoffs" and len(values) > APP_LIMITS["cutoffs"]:
        return f"cutoffs: {len(values)} boundaries; at most {APP_LIMITS['cutoffs']}"
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"{key}={v!r} is not a number"
        if v > hi:
            return f"{key}={_num(v)} is above the limit {_num(hi)} on this server"
        if v < lo:
            return f"{key}={_num(v)} is below the minimum {_num(lo)}"
    return None


def check_overrides(config: str, overrides: str) -> tuple[tuple[str, ...], list[str]]:
    """Split and bound ``key=value`` overrides; returns them and every problem found.

    Each key must be in OVERRIDE_BOUNDS (and within its bounds) or FREE_OVERRIDES; then the
    whole config, preset plus overrides, is built and must also fit the bounds and the
    sweep-wide limits.
    """
    text = str(overrides or "")
    if len(text) > APP_LIMITS["overrides"] * (APP_LIMITS["override_chars"] + 1):
        return (), [f"Overrides: {len(text):,} characters; at most {APP_LIMITS['overrides']} "
                    f"items of {APP_LIMITS['override_chars']} characters"]
    items = tuple(text.split())
    if len(items) > APP_LIMITS["overrides"]:
        return (), [f"Overrides: {len(items)} given; at most {APP_LIMITS['overrides']}"]
    problems = []
    for item in items:
        shown = item if len(item) <= 40 else item[:40] + "…"
        key = item.split("=", 1)[0].strip()
        if len(item) > APP_LIMITS["override_chars"]:
            problems.append(f"Overrides: {shown!r} is longer than "
                            f"{APP_LIMITS['override_chars']} characters")
        elif key in RESERVED_OVERRIDES:
            problems.append(f"Overrides: {shown}: set protocol and λ with the form")
        elif key in REFUSED_OVERRIDES:
            problems.append(f"Overrides: {key} comes from the corpus and cannot be set here")
        elif key not in OVERRIDE_BOUNDS and key not in FREE_OVERRIDES:
            allowed = ", ".join(sorted([*OVERRIDE_BOUNDS, *FREE_OVERRIDES]))
            problems.append(f"Overrides: unknown key {key[:40]!r}; allowed keys: {allowed}")
        else:
            try:
                m, t = apply_overrides({}, {}, [item])
            except ConfigError as e:
                problems.append(f"Overrides: {e}")
                continue
            value = {**m, **t}[key]
            problem = _bound_problem(key, value) if key in OVERRIDE_BOUNDS else None
            if problem:
                problems.append(f"Overrides: {problem}")
    if problems:
        return items, problems
    try:
        p = preset(config)
        m, t = apply_overrides(p.model, p.train, list(items))
        model = ModelConfig(**{"vocab_size": 50_000, **m})
        train = TrainConfig(**t)
    except (ConfigError, TypeError, ValueError) as e:
        return items, [f"Overrides: {e}"]
    values = {**dataclasses.asdict(model), **dataclasses.asdict(train)}
    problems = [f"Config {config}: {pr}" for k in OVERRIDE_BOUNDS
                if (pr := _bound_problem(k, values[k]))]
    evals = train.max_steps / train.eval_interval
    if evals > APP_LIMITS["evals_per_run"]:
        problems.append(f"Overrides: max_steps/eval_interval = {evals:g} evaluations during "
                        f"training; at most {APP_LIMITS['evals_per_run']} (raise eval_interval)")
    return items, problems


def _time_budget(config: str, overrides: tuple[str, ...]) -> float:
    p = preset(config)
    _, t = apply_overrides(p.model, p.train, list(overrides))
    return float(TrainConfig(**t).time_budget_s)


def check_request(name: str, protocols: list[str], lambdas: str, taus: str, config: str,
                  overrides: str = "", eval_tokens: int = DEFAULT_EVAL_TOKENS,
                  protected: tuple = ()) -> tuple[SweepRequest | None, list[str]]:
    """Validate the Sweeps form; returns the request, or None and every problem found.

    Refused outright while sweeps are off (``sweeps_enabled``) or the root is misplaced
    (``root_problems``). ``protected`` names sweep caches that must never be written.
    """
    if not sweeps_enabled():
        return None, [disabled_message()]
    root = app_root()
    problems = root_problems(root, protected)
    if problems:
        return None, problems
    errors, lam, tau, over = [], (), (), ()
    try:
        name = sweep_folder(name, root).name
    except ValueError as e:
        errors.append(str(e))
    protocols = [p for p in protocols or []]
    bad = [p for p in protocols if p not in PROTOCOL_NAMES]
    if not protocols or bad:
        errors.append(f"Protocols: choose from {', '.join(PROTOCOL_NAMES)}"
                      + (f" ({', '.join(str(b)[:20] for b in bad)} is unknown)" if bad else ""))
    try:
        lam = parse_numbers(lambdas, "λ values", 0.0, 1.0, APP_LIMITS["lambdas"])
    except ValueError as e:
        errors.append(str(e))
    try:
        tau = parse_numbers(taus, "τ values", *TEMPERATURE_RANGE, APP_LIMITS["taus"])
    except ValueError as e:
        errors.append(str(e))
    if config not in APP_CONFIGS:
        errors.append(f"Config: {str(config)[:20]!r} is not offered here; choose "
                      f"{' or '.join(APP_CONFIGS)} (paper takes hours per run: use the CLI)")
    else:
        over, problems = check_overrides(config, overrides)
        errors += problems
    most = APP_LIMITS["eval_tokens"]
    if (not isinstance(eval_tokens, int) or isinstance(eval_tokens, bool)
            or not 1 <= eval_tokens <= most):
        errors.append(f"Evaluation tokens must be a whole number in 1..{most:,}, "
                      f"got {str(eval_tokens)[:20]}")
    if errors:
        return None, errors
    req = SweepRequest(name, tuple(dict.fromkeys(protocols)), lam, tau, config, root, over,
                       eval_tokens)
    hours = req.n_runs * _time_budget(config, over) / 3600
    if hours > APP_LIMITS["budget_hours"]:
        return None, [f"This sweep may train for {req.n_runs} runs × time_budget_s = "
                      f"{hours:.1f} h; at most {APP_LIMITS['budget_hours']} h on this server "
                      f"(fewer λ values or protocols, or a smaller time_budget_s)"]
    for shipped in map(_real, protected):
        if any(_inside(_real(p), shipped) or _inside(shipped, _real(p))
               for p in (req.cache_dir, req.runs_dir)):
            return None, [f"Sweep name: {name!r} would write into the shipped results"]
    return req, []


def sweep_command(req: SweepRequest, python: str = sys.executable,
                  shown: bool = False) -> list[str]:
    """The command line that runs ``req``; ``shown=True`` gives it without server paths (see
    ``shown_command``). The data are the server's default corpus: no ``--data-dir``."""
    def where(p: Path) -> str:
        return shown_path(p, req.root) if shown else str(p)

    cmd = ["python" if shown else python, "-m", "localist_core", "sweep",
           "--config", req.config,
           "--protocols", ",".join(req.protocols),
           "--lambdas", ",".join(f"{v:g}" for v in req.lambdas),
           "--taus", ",".join(f"{v:g}" for v in req.taus),
           "--cache", where(req.cache_dir), "--runs-dir", where(req.runs_dir),
           "--prompts", PROMPTS, "--eval-tokens", str(req.eval_tokens)]
    return cmd + list(req.overrides)


def shown_command(req: SweepRequest) -> str:
    """The command a visitor may copy: ``python`` and paths relative to the repository, or
    ``"$LOCALIST_APP_SWEEPS"/<name>/…`` when the root lies elsewhere."""
    var = f"${ROOT_VAR}"
    return " ".join(f'"{var}"{shlex.quote(a[len(var):])}' if a.startswith(var + "/")
                    else shlex.quote(a) for a in sweep_command(req, shown=True))


# -- reading a sweep's state ------------------------------------------------------------------

def _finite(v) -> float | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _read_json(path: Path) -> dict | None:
    """A small JSON object (a progress or launch record), or None when it is absent, not a
    regular file, over MAX_SMALL_JSON_BYTES or not an object: read only after stat()."""
    try:
        data = read_json_file(path, MAX_SMALL_JSON_BYTES, SweepCacheError)
    except SweepCacheError:
        return None
    return data if isinstance(data, dict) else None


def read_progress(folder: str | Path) -> dict | None:
    """``progress.json`` written by run_sweep (runs_total, runs_done, current, phase, pid,
    updated), or None when absent or unreadable."""
    return _read_json(Path(folder) / PROGRESS_FILE)


def pid_alive(pid) -> bool:
    """Whether ``pid`` is a live (not zombie) process that looks like a localist_core sweep."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        cmdline = (proc / "cmdline").read_bytes()
        return not cmdline or b"localist_core" in cmdline   # a reused pid is not our sweep
    except (OSError, IndexError):
        return True


def is_sweep_process(pid) -> bool:
    """Stricter than ``pid_alive``, before a signal is sent: the process's command line must
    be readable and hold both ``localist_core`` and ``sweep``."""
    if not pid_alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"localist_core" in a for a in args) and b"sweep" in args


def running_pid(folder: str | Path, launch_dir: str | Path | None = None) -> int | None:
    """The pid of a live sweep writing into cache ``folder``, from its progress or from the
    launch record in ``launch_dir`` (default: the folder itself)."""
    prog = read_progress(folder) or {}
    if prog.get("phase") != "done" and pid_alive(prog.get("pid")):
        return prog["pid"]
    launch = _read_json(Path(launch_dir or folder) / LAUNCH_FILE) or {}
    return launch["pid"] if pid_alive(launch.get("pid")) else None


def sweep_status(folder: str | Path, now: float | None = None,
                 launch_dir: str | Path | None = None) -> dict | None:
    """What the progress bar shows for a cache folder, or None if no sweep ever ran there.
    ``launch_dir`` holds the launch record (default: the folder itself; an app sweep's is
    ``<root>/<name>``, beside its cache).

    ``state`` is starting, running, finished or stopped (the process died before finishing).
    """
    prog, pid = read_progress(folder), running_pid(folder, launch_dir)
    launch = _read_json(Path(launch_dir or folder) / LAUNCH_FILE)
    if prog is None and launch is None:
        return None
    if prog is None or (launch and (_finite(launch.get("started")) or 0)
                        > (_finite(prog.get("updated")) or 0)
                        and prog.get("pid") != launch.get("pid")):
        state = "starting" if pid else "stopped"
        return {"state": state, "fraction": 0.0, "pid": pid,
                "text": "Loading data and planning the runs…" if pid else
                "The sweep process ended before its first run started (see the log)."}
    total = prog.get("runs_total") if isinstance(prog.get("runs_total"), int) else 0
    done = prog.get("runs_done") if isinstance(prog.get("runs_done"), int) else 0
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    age = max(0.0, (now or time.time()) - (_finite(prog.get("updated")) or 0.0))
    if prog.get("phase") == "done":
        return {"state": "finished", "fraction": 1.0, "pid": None,
                "text": f"Finished: {done} of {total} runs in the cache."}
    if pid is None:
        return {"state": "stopped", "fraction": frac, "pid": None,
                "text": f"Stopped after {done} of {total} runs (the process is gone). Start the "
                        f"same sweep again to resume; finished runs are kept."}
    return {"state": "running", "fraction": frac, "pid": pid,
            "text": f"Run {min(done + 1, total)} of {total}: {str(prog.get('current'))[:80]} "
                    f"({str(prog.get('phase'))[:20]}) · {done} done · updated {age:.0f} s ago"}


def app_sweeps(root: Path | None = None) -> dict[str, Path]:
    """Name → folder of every sweep under the root (odd names and links leading out skipped)."""
    root = app_root() if root is None else root
    out = {}
    try:
        children = sorted(root.iterdir())
    except OSError:
        return {}
    for child in children:
        if not _NAME.fullmatch(child.name) or len(child.name) > APP_LIMITS["name_chars"]:
            continue
        try:
            folder = sweep_folder(child.name, root)
        except ValueError:
            continue
        if folder.is_dir():
            out[child.name] = folder
    return out


def app_caches(root: Path | None = None) -> dict[str, Path]:
    """Name → cache folder of every sweep under the root that has one (for the Tradeoff and
    Sweeps pages' cache menus)."""
    return {name: folder / "cache" for name, folder in app_sweeps(root).items()
            if (folder / "cache").is_dir()}


def list_sweeps(root: Path | None = None) -> list[dict]:
    """Every sweep under the root that has a status: name, state, fraction, text, pid and
    started (epoch seconds or None); running ones first, then the newest."""
    root = app_root() if root is None else root
    rows = []
    for name, folder in app_sweeps(root).items():
        view = sweep_status(folder / "cache", launch_dir=folder)
        if view is None:
            continue
        launch = _read_json(folder / LAUNCH_FILE) or {}
        rows.append({"name": name, **view, "started": _finite(launch.get("started"))})
    return sorted(rows, key=lambda r: (r["pid"] is None, -(r["started"] or 0.0), r["name"]))


def running_sweeps(root: Path | None = None) -> list[dict]:
    """The sweeps under the root whose process is alive (``list_sweeps`` with a pid)."""
    return [r for r in list_sweeps(root) if r["pid"] is not None]


# -- starting and stopping --------------------------------------------------------------------

@contextmanager
def _root_lock(root: Path) -> Iterator[None]:
    """One exclusive lock for every app sweep under ``root``: count-then-start and
    check-then-stop happen atomically between app sessions and server processes."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # closing releases the lock


def start_sweep(req: SweepRequest, low_priority: bool = True) -> subprocess.Popen:
    """Start ``req`` as a detached background process (its own session, so ``stop_sweep`` can
    signal its whole group) logging to ``<root>/<name>/sweep.log``, its launch record beside.

    Raises SweepsDisabled while sweeps are off, SweepBusy while this sweep already runs or
    ``max_jobs()`` sweeps run under the root, LaunchError when the folder is no longer safe.
    The checks and the start happen under the root's lock.
    """
    if not sweeps_enabled():
        raise SweepsDisabled(disabled_message())
    root = app_root()
    if req.root != root or root_problems(root):
        raise LaunchError("The app-sweeps folder changed or is misplaced; check the request "
                          "again.")
    with _root_lock(root):
        try:   # again, under the lock: a link may have appeared since check_request
            folder = sweep_folder(req.name, root)
        except ValueError as e:
            raise LaunchError(str(e)) from None
        kept = app_sweeps(root)
        if req.name not in kept and len(kept) >= APP_LIMITS["sweeps"]:
            raise LaunchError(f"This server keeps at most {APP_LIMITS['sweeps']} sweeps; start "
                              f"one of them again, or ask the operator to remove old ones.")
        if (pid := running_pid(folder / "cache", folder)) is not None:
            raise SweepBusy(f"Sweep {req.name!r} is already running (pid {pid}); wait for it "
                            f"to finish or stop it.")
        running = running_sweeps(root)
        if len(running) >= max_jobs():
            raise SweepBusy(f"{len(running)} sweep(s) already running on this server (the "
                            f"limit is {max_jobs()}); wait for one to finish or stop one.")
        folder.mkdir(parents=True, exist_ok=True)   # the cache itself is run_sweep's to make
        cmd = sweep_command(req)
        if low_priority and shutil.which("nice"):
            cmd = ["nice", "-n", "10", *cmd]
        log_fd = os.open(folder / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                         0o644)
        with os.fdopen(log_fd, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shown_command(req)}\n"
                      .encode())
            out.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        write_json_atomic(folder / LAUNCH_FILE, {"pid": proc.pid, "command": cmd,
                                                 "started": time.time()})
    return proc


def stop_sweep(name: str, pid: int | None = None) -> int:
    """Send SIGTERM to the running sweep ``name`` (its process group) and return its pid.

    As powerful as starting, so refused (SweepsDisabled) while sweeps are off. Refused
    (LaunchError) when the sweep is not running, when ``pid`` is given and is no longer the
    sweep's, or when the process is not a localist_core sweep (a reused pid).
    """
    if not sweeps_enabled():
        raise SweepsDisabled(disabled_message())
    root = app_root()
    try:
        folder = sweep_folder(name, root)
    except ValueError as e:
        raise LaunchError(str(e)) from None
    with _root_lock(root):
        live = running_pid(folder / "cache", folder)
        if live is None:
            raise LaunchError(f"Sweep {folder.name!r} is not running.")
        if pid is not None and live != pid:
            raise LaunchError(f"Sweep {folder.name!r} now runs as pid {live}, not {pid}; "
                              f"look again before stopping it.")
        if not is_sweep_process(live):
            raise LaunchError(f"pid {live} is not a localist_core sweep; nothing was stopped.")
        try:
            if os.getpgid(live) == live:   # started with start_new_session: its own group
                os.killpg(live, signal.SIGTERM)
            else:                          # started by hand (CLI): only the process itself
                os.kill(live, signal.SIGTERM)
        except ProcessLookupError:
            raise LaunchError(f"Sweep {folder.name!r} ended before it could be stopped.") \
                from None
        except PermissionError:
            raise LaunchError(f"pid {live} belongs to another user; nothing was stopped.") \
                from None
    return live


def log_tail(folder: str | Path, lines: int = 15) -> str:
    """The last lines of a sweep's log, with tqdm's carriage-return redraws collapsed and the
    server's folders replaced by placeholders (``redact``)."""
    try:
        fd = os.open(Path(folder) / LOG_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    rows = [r.split("\r")[-1] for r in text.split("\n")]
    return redact("\n".join([r for r in rows if r.strip()][-lines:]))
