"""Concurrent users: N sessions move the λ and τ sliders of a running app for S seconds. Prints
errors, rerun latency (p50/p95), the server's CPU per rerun and its memory (peak, and over time)
as tables; the bars are in BENCHMARKS.md ("Serving a class").

    python bench/load_test.py --sessions 30 --seconds 60                    # websocket clients
    python bench/load_test.py --sessions 30 --seconds 60 --profile p.pstats # + cProfile's top
    python bench/load_test.py --sessions 20 --seconds 60 --client browser   # headless Chromium

``--client ws`` (the default, and the test suite's) speaks Streamlit's own protocol over
``/_stcore/stream``: BackMsg ``rerun_script`` requests out, ForwardMsgs back, as the frontend does,
so thirty sessions cost the client almost nothing and the latency is the server's: from sending
the rerun to its ``script_finished``. ``--client browser`` drives one headless Chromium with a
context per session; there a latency runs from the key press to the settled page.

The server's CPU per rerun is the CPU it used while the sliders moved (from the first move to
the last one finished; its start and the first views are left out) over the moves. Its memory is
the resident set of its process tree, sampled every 0.5 s; ``--json`` keeps every sample and
every move's (time, latency).

Errors: exception elements (boxes), error alerts, scripts that finish with an error, moves that
never finish, disconnects, a session that never loads, tracebacks in the server log, a session
shown another setting than it asked for, and two sessions shown different metric tiles for the
same setting (the shared cached model must not mix sessions up). The browser client also counts
page errors, console errors and failed requests.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run as a script (python bench/load_test.py): the repo's packages
from bench.common import machine  # noqa: E402
from localist_core.model.config import LOCALITY_RANGE, TEMPERATURE_RANGE  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SLIDERS = {"lam": ("λ — locality", *LOCALITY_RANGE), "tau": ("τ — temperature", *TEMPERATURE_RANGE)}
STEP = 0.05
START_QUERY = "ckpt=dial"     # the Explorer (the default page) on the shipped dial model
WS_LOAD_TIMEOUT_S = 180       # the first run loads the model while the others wait
WS_MOVE_TIMEOUT_S = 60        # a move whose script has not finished by then is an error
LOAD_TIMEOUT_MS = 600_000     # the browser client's: twenty renderers make everything slower
MOVE_TIMEOUT_MS = 600_000
# The Explorer heatmap's title ends with the setting it shows.
SETTING = re.compile(r"λ=(\S+) τ=(\S+) γ=(\S+)")

# Settled: no script running, no stale element left from the previous run, one heatmap drawn.
SETTLED = """() => !document.querySelector('[data-testid=stStatusWidget]')
    && !document.querySelector('[data-stale=true]')
    && document.querySelectorAll('.st-key-heatmap .js-plotly-plot').length === 1"""
IN_URL = "([k, v]) => new URLSearchParams(location.search).get(k) === v"
# What the session shows: the heatmap title (checkpoint setting) and the metric tiles.
SHOWN = """() => {
    const gd = document.querySelector('.st-key-heatmap .js-plotly-plot');
    const t = gd && gd.layout && gd.layout.title;
    const tiles = [...document.querySelectorAll('[data-testid=stMetric]')].map(
        m => m.innerText.split('\\n').slice(0, 2).join('='));
    return {title: String((t && t.text) || t || ''), tiles: tiles.join(' | '),
            exceptions: document.querySelectorAll('[data-testid=stException]').length};
}"""


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)   # when each move finished (monotonic)
    errors: list[str] = field(default_factory=list)
    shown: dict[str, str] = field(default_factory=dict)   # heatmap title → metric tiles
    sessions_loaded: int = 0
    sessions_failed: int = 0
    moves: dict[int, int] = field(default_factory=dict)   # session → slider moves finished
    moving_s: float = 0.0       # from the first move to the last one finished
    started: float = 0.0        # when the moves started (monotonic)

    def see(self, session: int, title: str, tiles: str) -> None:
        if not title:
            return
        first = self.shown.setdefault(title, tiles)
        if first != tiles:
            self.errors.append(f"session {session}: {title!r} shows {tiles!r}, another session "
                               f"showed {first!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ``--profile``: the server runs under cProfile, one profiler on the main thread (the event loop:
# protobuf serialisation, websocket writes) and one per script run (ScriptRunner._run_script, so
# the post-script collection counts too); at exit their sum goes to the file named first. They
# count each thread's own CPU time (time.thread_time), so waiting for the GIL, a lock or a socket
# costs nothing; torch's worker threads are not counted.
PROFILED = """
import atexit, cProfile, pstats, sys, threading, time
from streamlit.runtime.scriptrunner.script_runner import ScriptRunner
from streamlit.web import cli
out, runs, lock, run_script = sys.argv.pop(1), [], threading.Lock(), ScriptRunner._run_script
def profiled(self, *args, **kwargs):
    p = cProfile.Profile(time.thread_time)
    p.enable()
    try:
        return run_script(self, *args, **kwargs)
    finally:
        p.disable()
        with lock:
            runs.append(p)
def dump():
    main.disable()
    stats = pstats.Stats(main)
    with lock:
        for p in runs:
            stats.add(p)
    stats.dump_stats(out)
ScriptRunner._run_script = profiled
atexit.register(dump)
main = cProfile.Profile(time.thread_time)
main.enable()
sys.argv[0] = "streamlit"
cli.main()
"""


def start_server(port: int, log_path: Path, env: dict | None = None,
                 profile: Path | None = None) -> subprocess.Popen:
    """``streamlit run app.py`` on ``port``; with ``profile``, under cProfile (``PROFILED``)."""
    launch = ["-c", PROFILED, str(profile)] if profile else ["-m", "streamlit"]
    cmd = [sys.executable, *launch, "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no health answer from {url} within {timeout_s} s")


class Sampler(threading.Thread):
    """Resident memory of the server's process tree over time (its peak, and one sample every
    ``every_s``), and CPU seconds used by the server and by this process's other descendants
    (the browsers, if any), from /proc: no psutil needed. ``mark`` notes the server's CPU so far,
    so the CPU of the slider moves can be told from the server's start and first views."""

    def __init__(self, server_pid: int, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.server_pid, self.every_s, self.peak_kb = server_pid, every_s, 0
        self.ticks: dict[int, tuple[bool, int]] = {}    # pid → (is server, utime + stime)
        self.rss: list[tuple[float, int]] = []          # (seconds since start, server kB)
        self.marked_ticks = 0
        self._t0, self._lock, self._halt = time.monotonic(), threading.Lock(), threading.Event()

    @staticmethod
    def _status(pid: int, key: str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    @staticmethod
    def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
        out, todo = [], [root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        cpu: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid = int(stat.parent.name)
                children.setdefault(int(fields[1]), []).append(pid)
                cpu[pid] = int(fields[11]) + int(fields[12])       # utime + stime, in ticks
            except (OSError, ValueError, IndexError):
                continue
        server = set(self._tree(self.server_pid, children))
        rss = sum(self._status(p, "VmRSS") for p in server)
        with self._lock:
            self.peak_kb = max(self.peak_kb, rss)
            self.rss.append((time.monotonic() - self._t0, rss))
            for pid in self._tree(os.getpid(), children):
                if pid != os.getpid() and pid in cpu:
                    self.ticks[pid] = (pid in server,
                                       max(cpu[pid], self.ticks.get(pid, (0, 0))[1]))

    def _server_ticks(self) -> int:
        return sum(t for srv, t in self.ticks.values() if srv)

    def mark(self) -> None:
        """Note the server's CPU so far (``stop`` reports what it used after)."""
        self.sample()
        with self._lock:
            self.marked_ticks = self._server_ticks()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every_s)

    def stop(self) -> dict:
        """Stop sampling: peak server RSS (kB; the kernel's VmHWM counts too), the RSS samples,
        CPU seconds in all and the server's since ``mark``."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)
        self.sample()
        hz = os.sysconf("SC_CLK_TCK")
        return {"peak_kb": max(self.peak_kb, self._status(self.server_pid, "VmHWM")),
                "rss_kb": list(self.rss),
                "server_cpu_s": self._server_ticks() / hz,
                "server_cpu_marked_s": (self._server_ticks() - self.marked_ticks) / hz,
                "others_cpu_s": sum(t for srv, t in self.ticks.values() if not srv) / hz}


# -- websocket clients: Streamlit's own protocol ---------------------------------------------

@dataclass
class Run:
    """What one script run sent a session: the heatmap title, the metric tiles, what went wrong
    and how the run finished (a ForwardMsg.ScriptFinishedStatus; -1 before it has)."""

    title: str = ""
    tiles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    status: int = -1


class WsUser:
    """One session held as Streamlit's frontend holds it: the query string and page it is on, the
    value of each slider, and the large messages it has cached. Every rerun request carries all
    of them, so the server replies to a cached message with a reference, as it does to a browser.
    """

    def __init__(self, ws, query_string: str):
        self.ws, self.query_string, self.page_script_hash = ws, query_string, ""
        self.sliders: dict[str, tuple[str, float]] = {}    # label → (widget id, value)
        self.cache: dict[str, list] = {}                   # hash → [ForwardMsg, run last used]
        self.runs, self.max_age = 0, 2                     # the frontend's default age

    async def rerun(self, timeout_s: float, moved: dict[str, float] | None = None) -> Run:
        """Ask for a script run with the sliders at their values (``moved``: label → new
        value) and read ForwardMsgs until it finishes; TimeoutError after ``timeout_s``."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        for label, value in (moved or {}).items():
            self.sliders[label] = (self.sliders[label][0], value)
        back = BackMsg()
        state = back.rerun_script
        state.query_string, state.page_script_hash = self.query_string, self.page_script_hash
        state.cached_message_hashes.extend(self.cache)
        for widget_id, value in self.sliders.values():
            widget = state.widget_states.widgets.add()
            widget.id = widget_id
            widget.double_array_value.data.append(value)    # a slider's value is an array
        await self.ws.send(back.SerializeToString())
        run, deadline = Run(), time.monotonic() + timeout_s
        while run.status < 0:
            msg = ForwardMsg()
            msg.ParseFromString(await asyncio.wait_for(self.ws.recv(),
                                                       deadline - time.monotonic()))
            self._read(msg, run)
        return run

    def _read(self, msg, run: Run) -> None:
        kind = msg.WhichOneof("type")
        if kind == "ref_hash":                      # "you have this one": a cached message
            if msg.ref_hash not in self.cache:
                run.problems.append(f"reference to a message never sent: {msg.ref_hash}")
                return
            self.cache[msg.ref_hash][1] = self.runs
            msg, kind = self.cache[msg.ref_hash][0], "delta"
        elif msg.metadata.cacheable:
            self.cache[msg.hash] = [msg, self.runs]
        if kind == "new_session":
            self.page_script_hash = msg.new_session.page_script_hash
            self.max_age = msg.new_session.config.max_cached_message_age or self.max_age
        elif kind == "page_info_changed":          # st.query_params wrote the URL
            self.query_string = msg.page_info_changed.query_string
        elif kind == "page_not_found":
            run.problems.append(f"page not found: {msg.page_not_found.page_name!r}")
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            self._element(msg.delta.new_element, run)
        elif kind == "script_finished":
            run.status, self.runs = msg.script_finished, self.runs + 1
            for h in [h for h, (_, used) in self.cache.items() if self.runs - used > self.max_age]:
                del self.cache[h]

    def _element(self, el, run: Run) -> None:
        from streamlit.proto.Alert_pb2 import Alert
        from streamlit.proto.Slider_pb2 import Slider

        kind = el.WhichOneof("type")
        if kind == "exception":
            run.problems.append(f"exception: {el.exception.type}: {el.exception.message[:150]}")
        elif kind == "alert" and el.alert.format == Alert.ERROR:
            run.problems.append(f"error box: {el.alert.body[:150]}")
        elif kind == "metric":
            run.tiles.append(f"{el.metric.label}={el.metric.body}")
        elif kind == "plotly_chart":
            title = json.loads(el.plotly_chart.spec).get("layout", {}).get("title", "")
            title = title.get("text", "") if isinstance(title, dict) else str(title)
            if SETTING.search(title):
                run.title = title
        elif kind == "slider" and el.slider.type == Slider.SLIDER and (
                el.slider.data_type == Slider.FLOAT):
            # The frontend keeps its own value unless the server sets one (session state).
            sl, known = el.slider, self.sliders.get(el.slider.label)
            value = sl.value[0] if sl.set_value else known[1] if known else sl.default[0]
            self.sliders[sl.label] = (sl.id, value)


def _check(stats: Stats, i: int, user: WsUser, run: Run, what: str) -> None:
    """Errors of one finished run: problems, a bad status, another setting than was asked for,
    tiles that differ from another session's for the same setting."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    stats.errors += [f"session {i}, {what}: {p}" for p in run.problems]
    if run.status != ForwardMsg.FINISHED_SUCCESSFULLY:
        stats.errors.append(f"session {i}, {what}: script finished with status "
                            f"{ForwardMsg.ScriptFinishedStatus.Name(run.status)}")
    shown = SETTING.search(run.title)
    asked = tuple(f"{user.sliders[SLIDERS[k][0]][1]:g}" for k in ("lam", "tau"))
    if not shown or shown.groups()[:2] != asked:
        stats.errors.append(f"session {i}, {what}: asked for λ={asked[0]} τ={asked[1]}, "
                            f"shown {run.title!r}")
    stats.see(i, run.title, " | ".join(run.tiles))


async def ws_session(i: int, url: str, start: asyncio.Event, stop_at: list[float],
                     stats: Stats, rng: random.Random) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    what = "first run"
    await asyncio.sleep(0.2 * i)                     # arrivals spread over a few seconds
    try:
        async with connect(url.replace("http", "ws", 1) + "/_stcore/stream",
                           subprotocols=["streamlit"], max_size=None, open_timeout=60,
                           ping_interval=20, ping_timeout=60) as ws:
            user = WsUser(ws, START_QUERY)
            run = await user.rerun(WS_LOAD_TIMEOUT_S)
            if not run.title or any(SLIDERS[k][0] not in user.sliders for k in SLIDERS):
                raise RuntimeError(f"no Explorer heatmap or sliders; {run.problems[:2]}")
            stats.sessions_loaded += 1
            _check(stats, i, user, run, what)
            await start.wait()
            while time.monotonic() < stop_at[0]:
                key = rng.choice(list(SLIDERS))
                label, lo, hi = SLIDERS[key]
                value = user.sliders[label][1]
                up = value + STEP <= hi + 1e-9 and (value - STEP < lo - 1e-9 or rng.random() < 0.5)
                new = round(value + (STEP if up else -STEP), 2)
                what = f"move {key} {value:g}→{new:g}"
                t0 = time.perf_counter()
                run = await user.rerun(WS_MOVE_TIMEOUT_S, {label: new})
                stats.latencies.append(time.perf_counter() - t0)
                stats.finished.append(time.monotonic())
                stats.moves[i] = stats.moves.get(i, 0) + 1
                _check(stats, i, user, run, what)
    except (OSError, TimeoutError, WebSocketException, RuntimeError) as e:
        kind = "timed out" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
        stats.errors.append(f"session {i}, {what}: {kind}"[:300])
        if what == "first run":
            stats.sessions_failed += 1


# -- browser clients: one headless Chromium, a context per session ----------------------------

@contextlib.asynccontextmanager
async def chromium():
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def browser_session(i: int, url: str, start: asyncio.Event, stop_at: list[float],
                          stats: Stats, rng: random.Random, browser=None) -> None:
    context = await browser.new_context(viewport={"width": 1200, "height": 900},
                                        reduced_motion="reduce")
    page = await context.new_page()
    page.on("pageerror", lambda e: stats.errors.append(f"session {i}: page error: {e}"))
    page.on("console", lambda m: m.type == "error" and stats.errors.append(
        f"session {i}: console error: {m.text[:200]} ({m.location.get('url', '')[:120]})"))
    page.on("requestfailed", lambda r: stats.errors.append(
        f"session {i}: request failed: {r.url[:120]} ({r.failure})"))
    try:
        await asyncio.sleep(0.2 * i)                 # arrivals spread over a few seconds
        await page.goto(f"{url}/?{START_QUERY}", wait_until="domcontentloaded",
                        timeout=LOAD_TIMEOUT_MS)
        await page.wait_for_function(SETTLED, timeout=LOAD_TIMEOUT_MS)
        stats.sessions_loaded += 1
    except Exception as e:  # noqa: BLE001 (any failure to load is an error of the run)
        stats.errors.append(f"session {i}: never loaded: {type(e).__name__}: {str(e)[:200]}")
        stats.sessions_failed += 1
        await context.close()
        return
    await start.wait()
    sidebar = page.locator("[data-testid=stSidebar]")
    while time.monotonic() < stop_at[0]:
        key = rng.choice(list(SLIDERS))
        label, lo, hi = SLIDERS[key]
        slider = sidebar.get_by_role("slider", name=label)
        try:
            value = float(await slider.input_value())
            press = "ArrowRight" if value + STEP <= hi + 1e-9 and (
                value - STEP < lo - 1e-9 or rng.random() < 0.5) else "ArrowLeft"
            want = f"{round(value + (STEP if press == 'ArrowRight' else -STEP), 2):g}"
            await slider.focus()
            t0 = time.perf_counter()
            await page.keyboard.press(press)
            await page.wait_for_function(IN_URL, arg=[key, want], timeout=MOVE_TIMEOUT_MS)
            await page.wait_for_function(SETTLED, timeout=MOVE_TIMEOUT_MS)
            stats.latencies.append(time.perf_counter() - t0)
            stats.finished.append(time.monotonic())
            stats.moves[i] = stats.moves.get(i, 0) + 1
            shown = await page.evaluate(SHOWN)
        except Exception as e:  # noqa: BLE001
            stats.errors.append(f"session {i}: move of {key} failed: {type(e).__name__}: "
                                f"{str(e)[:200]}")
            break
        if shown["exceptions"]:
            stats.errors.append(f"session {i}: Streamlit exception shown at {shown['title']}")
        stats.see(i, shown["title"], shown["tiles"])
    await context.close()


async def drive(url: str, sessions: int, seconds: float, client: str = "ws",
                seed: int = 0, on_start=None) -> Stats:
    """Open the sessions, wait until each has loaded or failed, then let them move sliders for
    ``seconds``; ``on_start()`` is called as the moves start."""
    stats, start = Stats(), asyncio.Event()
    stop_at = [float("inf")]
    async with contextlib.AsyncExitStack() as stack:
        if client == "browser":
            one = functools.partial(browser_session,
                                    browser=await stack.enter_async_context(chromium()))
        else:
            one = ws_session
        tasks = [asyncio.create_task(one(i, url, start, stop_at, stats,
                                         random.Random(seed * 1000 + i)))
                 for i in range(sessions)]
        while stats.sessions_loaded + stats.sessions_failed < sessions and not all(
                t.done() for t in tasks):
            await asyncio.sleep(0.2)
        print(f"{stats.sessions_loaded} sessions loaded; moving sliders for {seconds:g} s",
              file=sys.stderr, flush=True)
        if on_start is not None:
            on_start()
        t0 = stats.started = time.monotonic()
        stop_at[0] = t0 + seconds
        start.set()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException):
                stats.errors.append(f"a session crashed: {result!r}"[:300])
        stats.moving_s = time.monotonic() - t0
    return stats


def run(sessions: int = 30, seconds: float = 60, log_dir: Path | None = None,
        client: str = "ws", profile: Path | None = None) -> dict:
    """Start the app (under cProfile with ``profile``), drive it with ``client`` ("ws" or
    "browser"), stop it; return the measurements as a dict."""
    log_dir = log_dir or ROOT / "test-artifacts"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "load-test-streamlit.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, log_path, profile=profile)
    sampler = Sampler(proc.pid)
    try:
        wait_healthy(url, proc)
        sampler.start()
        t0, cpu0 = time.monotonic(), time.process_time()
        stats = asyncio.run(drive(url, sessions, seconds, client, on_start=sampler.mark))
        wall, own_cpu = time.monotonic() - t0, time.process_time() - cpu0
    finally:
        used = sampler.stop()
        proc.terminate()
        try:
            proc.wait(timeout=60 if profile else 15)    # the profile is written at exit
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    log = log_path.read_text(encoding="utf-8", errors="replace")
    stats.errors += [f"server log: {line[:200]}" for line in log.splitlines()
                     if "Traceback" in line or "Uncaught app exception" in line]
    lat = sorted(stats.latencies)
    q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan"))
    return {"client": client, "sessions": sessions, "seconds": seconds,
            "sessions_loaded": stats.sessions_loaded, "reruns": len(lat),
            "fewest_moves": min((stats.moves.get(i, 0) for i in range(sessions)), default=0),
            "errors": len(stats.errors), "error_messages": stats.errors[:20],
            "p50_s": q(0.50), "p95_s": q(0.95), "max_s": lat[-1] if lat else float("nan"),
            "mean_s": statistics.fmean(lat) if lat else float("nan"),
            "settings_seen": len(stats.shown), "peak_rss_mb": used["peak_kb"] / 1024,
            "rss_mb": [(round(t, 1), round(kb / 1024, 1)) for t, kb in used["rss_kb"]],
            "server_cpu_s": used["server_cpu_s"],
            # the server's CPU while the sliders moved, per move: the start and first views
            # (imports, the model's load) are left out
            "moves_cpu_s": used["server_cpu_marked_s"],
            "cpu_per_rerun_ms": (1e3 * used["server_cpu_marked_s"] / len(lat) if lat
                                 else float("nan")),
            "moving_s": stats.moving_s,
            # (seconds after the moves started, latency) of every move, for --json
            "moves": [(round(t - stats.started, 3), round(x, 4))
                      for t, x in zip(stats.finished, stats.latencies)],
            "client_cpu_s": used["others_cpu_s"] + own_cpu, "wall_s": wall}


def table(r: dict) -> str:
    head = ("| client | sessions | seconds | reruns | errors | p50 rerun (s) | p95 rerun (s) "
            "| max (s) | server CPU per rerun (ms) | peak server RSS (MB) | server CPU (s) "
            "| clients' CPU (s) | wall (s) |")
    row = (f"| {r['client']} | {r['sessions']} | {r['seconds']:g} | {r['reruns']} | "
           f"{r['errors']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['max_s']:.2f} | "
           f"{r['cpu_per_rerun_ms']:.0f} | {r['peak_rss_mb']:.0f} | {r['server_cpu_s']:.0f} | "
           f"{r['client_cpu_s']:.0f} | {r['wall_s']:.0f} |")
    return "\n".join([head, "|" + "---|" * 13, row])


def rss_table(r: dict, rows: int = 10) -> str:
    """The server's RSS over the run: ``rows`` equal spans of time, each with the largest
    sample in it (the samples come every 0.5 s; ``--json`` keeps all of them)."""
    samples = r["rss_mb"]
    if not samples:
        return ""
    end = samples[-1][0]
    lines = ["| until t (s) | server RSS, largest sample (MB) |", "|---|---|"]
    for k in range(1, rows + 1):
        span = [mb for t, mb in samples if (k - 1) * end / rows < t <= k * end / rows]
        if span:
            lines.append(f"| {k * end / rows:.0f} | {max(span):.0f} |")
    return "\n".join(lines)


def profile_top(path: Path, n: int = 15) -> str:
    """The ``n`` functions of a ``--profile`` file with the most time of their own, and the
    ``n`` with the most time including what they call."""
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out).strip_dirs()
    for key in ("tottime", "cumulative"):
        stats.sort_stats(key).print_stats(n)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--client", choices=["ws", "browser"], default="ws",
                    help="ws: Streamlit's websocket protocol (default); browser: Chromium")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    ap.add_argument("--profile", default=None, type=Path,
                    help="run the server under cProfile, write its stats here and print the "
                         "top entries (the latencies then measure the profiler too)")
    args = ap.parse_args(argv)
    if args.client == "browser" and not Path(CHROMIUM).exists():
        print(f"no Debian chromium at {CHROMIUM} (apt-get install -y chromium)")
        return 2
    print(f"machine: {machine()}")
    r = run(args.sessions, args.seconds, client=args.client, profile=args.profile)
    print(table(r))
    print()
    print(rss_table(r))
    for e in r["error_messages"]:
        print("error:", e)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    if args.profile:
        print(profile_top(args.profile))
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
