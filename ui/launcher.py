"""Starting, listing and stopping the sweeps that the Sweeps page runs as background processes,
and reading their progress and logs. No streamlit here.

Anyone who can open the dashboard can reach these entry points, so they are guarded (README
"Security"), each guard in one place:

- off unless the operator sets ``LOCALIST_APP_SWEEPS_ENABLED=1``, checked here as well as on
  the page (``ui.launch_root.sweeps_enabled``);
- a visitor names a sweep; its cache and checkpoints go to ``<root>/<name>/cache`` and
  ``<root>/<name>/runs`` under one root folder (``$LOCALIST_APP_SWEEPS``, else
  ``runs/app-sweeps``), and a folder that resolves outside the root (a link) is refused
  (``ui.launch_limits.sweep_folder``, checked again here under the lock);
- the sweep reads the server's own corpus, never a folder a visitor names;
- every override, list and count has an upper bound, all in ``ui.launch_limits.APP_LIMITS``
  and ``OVERRIDE_BOUNDS``;
- at most ``$LOCALIST_APP_SWEEPS_MAX_JOBS`` (default 1) sweeps run under the root at once,
  checked and started here under one file lock;
- bytes on disk are bounded per run, per sweep folder and for the root (what they hold plus
  what the new sweep plans), checked here under the lock (``ui.launch_budget``); a finished
  run's resumable trainer state is removed, and a thread waits for each started sweep, so a
  finished one never stays a zombie;
- nothing shown to a visitor holds a server path (``ui.notices.shown``).
"""
from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from localist_core.experiments.cache import (
    MAX_SMALL_JSON_BYTES,
    PROGRESS_FILE,
    SweepCacheError,
    write_json_atomic,
)
from localist_core.experiments.stats import finite
from localist_core.model.files import read_json_file
from localist_core.paths import PROMPTS_FILE, REPO
from ui.launch_budget import budget_problems, held_bytes, prune_finished, watch
from ui.launch_limits import APP_LIMITS, NAME, SweepRequest, run_disk_bytes, sweep_folder
from ui.launch_root import (
    ROOT_VAR,
    app_root,
    disabled_message,
    max_jobs,
    root_problems,
    sweeps_enabled,
)
from ui.notices import shown as without_paths

# Beside the cache, in <root>/<name>/, never inside it: the cache holds only what run_sweep
# writes (the CLI refuses a --cache folder holding anything else).
LAUNCH_FILE = "app-launch.info"               # JSON, but not *.json: load_cache would refuse it
LOG_FILE = "sweep.log"
LOCK_FILE = ".app-sweeps.lock"                # at the root: one lock for every app sweep
PROMPTS = str(PROMPTS_FILE.relative_to(REPO))  # relative: the sweep runs with cwd=REPO


class LaunchError(RuntimeError):
    """A sweep cannot be started or stopped; the message is safe to show to a visitor."""


class SweepsDisabled(LaunchError):
    """Starting and stopping sweeps from the app is off on this server."""


class SweepBusy(LaunchError):
    """A live sweep already writes into this folder, or the server runs all it may."""


# -- the command ------------------------------------------------------------------------------

def sweep_command(req: SweepRequest, python: str = sys.executable,
                  shown: bool = False) -> list[str]:
    """The command line that runs ``req``; ``shown=True`` gives it without server paths (see
    ``shown_command``). The data are the server's default corpus: no ``--data-dir``."""
    def where(p: Path) -> str:
        return without_paths(p, req.root) if shown else str(p)

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
    updated; the ray executor adds in_flight, runs_in_flight), or None when absent or
    unreadable."""
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
    if prog is None or (launch and (finite(launch.get("started")) or 0)
                        > (finite(prog.get("updated")) or 0)
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
    flying = prog.get("in_flight")     # the ray executor: every run submitted, not finished
    flying = [r[:80] for r in flying if isinstance(r, str)] if isinstance(flying, list) else []
    n = prog.get("runs_in_flight")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n >= len(flying) else len(flying)
    if n > 1 and flying:
        more = f" and {n - len(flying[:3])} more" if n > len(flying[:3]) else ""
        return {"state": "running", "fraction": frac, "pid": pid,
                "text": f"{n} runs in flight: {', '.join(flying[:3])}{more} · {done} of {total} "
                        f"done · updated {age:.0f} s ago"}
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
        if not NAME.fullmatch(child.name) or len(child.name) > APP_LIMITS["name_chars"]:
            continue
        try:
            folder = sweep_folder(child.name, root)
        except ValueError:
            continue
        if folder.is_dir():
            out[child.name] = folder
    return out


def app_caches(root: Path | None = None, protected: tuple = ()) -> dict[str, Path]:
    """Name → cache folder of every sweep under the root that has one (for the Tradeoff and
    Sweeps pages' cache menus); none while the root is misplaced (``root_problems``, with the
    ``protected`` sweep caches): an operator's mistake is neither listed nor written."""
    root = app_root() if root is None else root
    if root_problems(root, protected):
        return {}
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
        rows.append({"name": name, **view, "started": finite(launch.get("started"))})
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
        prune_finished(req.cache_dir, req.runs_dir)   # a server restarted mid-sweep
        held = held_bytes([folder])
        others = held_bytes([f for n, f in kept.items() if n != req.name])
        problems = budget_problems(run_disk_bytes(req), req.n_runs, req.name, held, others)
        if problems:
            raise LaunchError(problems[0])
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
    watch(proc, req.cache_dir, req.runs_dir)   # reaps it, and prunes each finished run
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
    server's folders hidden (``ui.notices.shown``)."""
    try:
        fd = os.open(Path(folder) / LOG_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    rows = without_traces([r.split("\r")[-1] for r in text.split("\n")])
    return without_paths("\n".join([r for r in rows if r.strip()][-lines:]))


TRACE_START = "Traceback (most recent call last):"
TRACE_SHOWN = "(a Python stack trace: the operator finds it in this sweep's log on the server)"


def without_traces(rows: list[str]) -> list[str]:
    """The log's lines with each Python stack trace cut to one line saying where it is and the
    exception's last line: a visitor never sees the server's code or frames."""
    out, inside = [], False
    for row in rows:
        head = row.strip()
        if (head == TRACE_START or head.startswith(('File "', "During handling of ",
                                                   "The above exception was the direct"))):
            # a frame line starts a trace too: the tail may begin inside one
            if not inside:
                out.append(TRACE_SHOWN)
            inside = True
            continue
        if inside and (row.startswith((" ", "\t")) or not row.strip()):
            continue            # a frame, its source line, a caret line or a blank
        inside = False
        out.append(row)
    return out
