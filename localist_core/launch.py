"""Starting a sweep as a background process from the app, and reading its progress and log
(the Sweeps page). No streamlit here.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import TEMPERATURE_RANGE, ModelConfig, TrainConfig, apply_overrides, preset
from .sweep import PROGRESS_FILE, PROTOCOL_NAMES, REPO, write_json_atomic
from .tradeoff import finite

APP_SWEEPS = REPO / "runs" / "app-sweeps"     # the user's sweeps; never the shipped assets/sweep
LAUNCH_FILE = "app-launch.info"               # JSON, but not *.json: load_cache would refuse it
LOG_FILE = "sweep.log"
CONFIG_COST = {"tiny": 0.5, "cpu-ref": 15.0, "paper": 360.0}   # minutes per run on this CPU
RESERVED_OVERRIDES = ("protocol", "penalty_form", "locality")


class SweepBusy(RuntimeError):
    """A live sweep process is already writing into this cache folder."""


@dataclass(frozen=True)
class SweepRequest:
    """A validated sweep the Sweeps page may start."""

    protocols: tuple[str, ...]
    lambdas: tuple[float, ...]
    taus: tuple[float, ...]
    config: str
    cache_dir: Path
    runs_dir: Path
    overrides: tuple[str, ...] = ()
    eval_tokens: int | None = None
    data_dir: str | None = None
    prompts: str | None = str(REPO / "assets" / "prompts.json")

    @property
    def n_runs(self) -> int:
        return sum(1 if p == "dial" else len(self.lambdas) for p in self.protocols)

    def minutes(self) -> float:
        return self.n_runs * CONFIG_COST.get(self.config, 15.0)


def parse_numbers(text: str, name: str, lo: float, hi: float) -> tuple[float, ...]:
    """Comma- or space-separated numbers in [lo, hi], sorted and deduplicated."""
    items = [t for t in re.split(r"[,\s;]+", str(text).strip()) if t]
    if not items:
        raise ValueError(f"{name}: give at least one number, e.g. 0, 0.5, 1")
    vals = set()
    for t in items:
        try:
            v = float(t)
        except ValueError:
            raise ValueError(f"{name}: {t!r} is not a number") from None
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"{name}: {t} is outside [{lo:g}, {hi:g}]")
        vals.add(v)
    return tuple(sorted(vals))


def _folder(text: str) -> Path:
    p = Path(str(text).strip()).expanduser()
    return (p if p.is_absolute() else REPO / p).resolve()


def check_request(protocols: list[str], lambdas: str, taus: str, config: str, cache_dir: str,
                  runs_dir: str, overrides: str = "", eval_tokens: int | None = None,
                  data_dir: str = "", protected: tuple = ()) -> tuple[SweepRequest | None,
                                                                      list[str]]:
    """Validate the Sweeps form; returns the request, or None and every problem found."""
    errors, lam, tau, over = [], (), (), ()
    bad = [p for p in protocols if p not in PROTOCOL_NAMES]
    if not protocols or bad:
        errors.append(f"Protocols: choose from {', '.join(PROTOCOL_NAMES)}"
                      + (f" ({', '.join(map(str, bad))} is unknown)" if bad else ""))
    for name, text, lo, hi in (("λ values", lambdas, 0.0, 1.0),
                               ("τ values", taus, *TEMPERATURE_RANGE)):
        try:
            vals = parse_numbers(text, name, lo, hi)
            lam, tau = (vals, tau) if name.startswith("λ") else (lam, vals)
        except ValueError as e:
            errors.append(str(e))
    if config not in CONFIG_COST:
        errors.append(f"Config: {config!r} is not one of {', '.join(CONFIG_COST)}")
    else:
        over = tuple(str(overrides or "").split())
        try:
            reserved = [o for o in over if o.split("=", 1)[0] in RESERVED_OVERRIDES]
            if reserved:
                raise ValueError(f"{', '.join(reserved)}: set protocol and λ with the form")
            p = preset(config)
            m, t = apply_overrides(p.model, p.train, list(over))
            ModelConfig(**{"vocab_size": 50_000, **m})
            TrainConfig(**t)
        except (ValueError, TypeError) as e:
            errors.append(f"Overrides: {e}")
    if eval_tokens is not None and (not isinstance(eval_tokens, int) or eval_tokens < 0):
        errors.append(f"Evaluation tokens must be a whole number ≥ 0, got {eval_tokens!r}")
    cache, runs = (_folder(t) if str(t).strip() else None for t in (cache_dir, runs_dir))
    for name, path in (("Cache folder", cache), ("Checkpoints folder", runs)):
        if path is None:
            errors.append(f"{name}: give a folder")
        elif path.exists() and not path.is_dir():
            errors.append(f"{name}: {path} exists and is not a folder")
    for shipped in map(_folder, protected):
        if cache is not None and (cache == shipped or shipped in cache.parents):
            errors.append(f"Cache folder: {cache} holds the shipped results; pick another "
                          f"folder (e.g. {APP_SWEEPS / 'cache'})")
    if str(data_dir or "").strip() and not _folder(data_dir).is_dir():
        errors.append(f"Data folder: {_folder(data_dir)} is not a folder")
    if errors:
        return None, errors
    return SweepRequest(tuple(dict.fromkeys(protocols)), lam, tau, config, cache, runs, over,
                        eval_tokens or None,
                        str(_folder(data_dir)) if str(data_dir or "").strip() else None), []


def sweep_command(req: SweepRequest, python: str = sys.executable) -> list[str]:
    """The command line that runs ``req`` (also shown to the user, to rerun by hand)."""
    cmd = [python, "-m", "localist_core", "sweep", "--config", req.config,
           "--protocols", ",".join(req.protocols),
           "--lambdas", ",".join(f"{v:g}" for v in req.lambdas),
           "--taus", ",".join(f"{v:g}" for v in req.taus),
           "--cache", str(req.cache_dir), "--runs-dir", str(req.runs_dir),
           "--prompts", req.prompts or ""]
    if req.eval_tokens:
        cmd += ["--eval-tokens", str(req.eval_tokens)]
    if req.data_dir:
        cmd += ["--data-dir", req.data_dir]
    return cmd + list(req.overrides)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


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


def running_pid(folder: str | Path) -> int | None:
    """The pid of a live sweep writing into ``folder``, from its progress or launch record."""
    prog = read_progress(folder) or {}
    if prog.get("phase") != "done" and pid_alive(prog.get("pid")):
        return prog["pid"]
    launch = _read_json(Path(folder) / LAUNCH_FILE) or {}
    return launch["pid"] if pid_alive(launch.get("pid")) else None


def start_sweep(req: SweepRequest, low_priority: bool = True) -> subprocess.Popen:
    """Start ``req`` as a detached background process logging to ``<cache>/sweep.log``.

    Refuses (SweepBusy) while a live sweep writes into the same folder; a file lock makes the
    check-and-start atomic between app sessions.
    """
    req.cache_dir.mkdir(parents=True, exist_ok=True)
    with open(req.cache_dir / ".app-launch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = running_pid(req.cache_dir)
        if pid is not None:
            raise SweepBusy(f"A sweep (pid {pid}) is already writing into {req.cache_dir}; "
                            f"wait for it to finish or choose another cache folder.")
        cmd = sweep_command(req)
        if low_priority and shutil.which("nice"):
            cmd = ["nice", "-n", "10", *cmd]
        log = req.cache_dir / LOG_FILE
        with open(log, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        write_json_atomic(req.cache_dir / LAUNCH_FILE, {"pid": proc.pid, "command": cmd,
                                                        "log": str(log), "started": time.time()})
    return proc


def sweep_status(folder: str | Path, now: float | None = None) -> dict | None:
    """What the progress bar shows for a cache folder, or None if no sweep ever ran there.

    ``state`` is starting, running, finished or stopped (the process died before finishing).
    """
    prog, pid = read_progress(folder), running_pid(folder)
    launch = _read_json(Path(folder) / LAUNCH_FILE)
    if prog is None and launch is None:
        return None
    if prog is None or (launch and (launch.get("started") or 0) > (prog.get("updated") or 0)
                        and prog.get("pid") != launch.get("pid")):
        state = "starting" if pid else "stopped"
        return {"state": state, "fraction": 0.0, "pid": pid,
                "text": "Loading data and planning the runs…" if pid else
                "The sweep process ended before its first run started (see the log)."}
    total = prog.get("runs_total") if isinstance(prog.get("runs_total"), int) else 0
    done = prog.get("runs_done") if isinstance(prog.get("runs_done"), int) else 0
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    age = max(0.0, (now or time.time()) - (finite(prog.get("updated")) or 0.0))
    if prog.get("phase") == "done":
        return {"state": "finished", "fraction": 1.0, "pid": None,
                "text": f"Finished: {done} of {total} runs in the cache."}
    if pid is None:
        return {"state": "stopped", "fraction": frac, "pid": None,
                "text": f"Stopped after {done} of {total} runs (the process is gone). Start the "
                        f"same sweep again to resume; finished runs are kept."}
    return {"state": "running", "fraction": frac, "pid": pid,
            "text": f"Run {min(done + 1, total)} of {total}: {prog.get('current')} "
                    f"({prog.get('phase')}) · {done} done · updated {age:.0f} s ago"}


def log_tail(folder: str | Path, lines: int = 15) -> str:
    """The last lines of a sweep's log, with tqdm's carriage-return redraws collapsed."""
    try:
        with open(Path(folder) / LOG_FILE, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    rows = [r.split("\r")[-1] for r in text.split("\n")]
    return "\n".join([r for r in rows if r.strip()][-lines:])
