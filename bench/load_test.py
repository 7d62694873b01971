"""Concurrent users: N headless-Chromium sessions move the λ and τ sliders of a running app for
S seconds. Prints errors, rerun latency (p50/p95) and the server's peak memory as a table.

    python bench/load_test.py --sessions 20 --seconds 60

A rerun's latency runs from the key press on a slider to the end of the script run it causes
(the new value in the URL, no "running" indicator, no stale element). Errors: Streamlit exception
boxes, uncaught page errors, console errors, moves that never settle, a session that never
loads, tracebacks in the server log, and two sessions shown different numbers for the same
setting (the shared cached model must not mix sessions up).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SLIDERS = {"lam": ("λ — locality", 0.0, 1.0), "tau": ("τ — temperature", 0.05, 10.0)}
STEP = 0.05
LOAD_TIMEOUT_MS = 600_000     # the first view loads the model while the others wait
MOVE_TIMEOUT_MS = 600_000     # a move that has not settled by then counts as an error

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
    errors: list[str] = field(default_factory=list)
    shown: dict[str, str] = field(default_factory=dict)   # heatmap title → metric tiles
    sessions_loaded: int = 0
    sessions_failed: int = 0

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


def start_server(port: int, log_path: Path, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
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
    """Peak resident memory of the server's process tree, and CPU seconds used by the server and
    by the browsers (this process's other descendants), from /proc: no psutil needed."""

    def __init__(self, server_pid: int, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.server_pid, self.every_s, self.peak_kb = server_pid, every_s, 0
        self.ticks: dict[int, tuple[bool, int]] = {}    # pid → (is server, utime + stime)
        self._halt = threading.Event()

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
        self.peak_kb = max(self.peak_kb, sum(self._status(p, "VmRSS") for p in server))
        for pid in self._tree(os.getpid(), children):
            if pid != os.getpid() and pid in cpu:
                self.ticks[pid] = (pid in server, max(cpu[pid], self.ticks.get(pid, (0, 0))[1]))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every_s)

    def stop(self) -> dict:
        """Stop sampling: peak server RSS (kB; the kernel's VmHWM counts too) and CPU seconds."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)
        self.sample()
        hz = os.sysconf("SC_CLK_TCK")
        return {"peak_kb": max(self.peak_kb, self._status(self.server_pid, "VmHWM")),
                "server_cpu_s": sum(t for srv, t in self.ticks.values() if srv) / hz,
                "browser_cpu_s": sum(t for srv, t in self.ticks.values() if not srv) / hz}


async def session(i: int, browser, url: str, start: asyncio.Event, stop_at: list[float],
                  stats: Stats, rng: random.Random) -> None:
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
        await page.goto(url + "/?ckpt=dial", wait_until="domcontentloaded",
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
            shown = await page.evaluate(SHOWN)
        except Exception as e:  # noqa: BLE001
            stats.errors.append(f"session {i}: move of {key} failed: {type(e).__name__}: "
                                f"{str(e)[:200]}")
            break
        if shown["exceptions"]:
            stats.errors.append(f"session {i}: Streamlit exception shown at {shown['title']}")
        stats.see(i, shown["title"], shown["tiles"])
    await context.close()


async def drive(url: str, sessions: int, seconds: float, seed: int = 0) -> Stats:
    from playwright.async_api import async_playwright

    stats, start = Stats(), asyncio.Event()
    stop_at = [float("inf")]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tasks = [asyncio.create_task(session(i, browser, url, start, stop_at, stats,
                                                 random.Random(seed * 1000 + i)))
                     for i in range(sessions)]
            while stats.sessions_loaded + stats.sessions_failed < sessions and not all(
                    t.done() for t in tasks):
                await asyncio.sleep(0.2)
            print(f"{stats.sessions_loaded} sessions loaded; moving sliders for {seconds:g} s",
                  file=sys.stderr, flush=True)
            stop_at[0] = time.monotonic() + seconds
            start.set()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException):
                    stats.errors.append(f"a session crashed: {result!r}"[:300])
        finally:
            await browser.close()
    return stats


def run(sessions: int = 20, seconds: float = 60, log_dir: Path | None = None) -> dict:
    """Start the app, drive it, stop it; return the measurements as a dict."""
    log_dir = log_dir or ROOT / "test-artifacts"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "load-test-streamlit.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, log_path)
    sampler = Sampler(proc.pid)
    try:
        wait_healthy(url, proc)
        sampler.start()
        t0 = time.monotonic()
        stats = asyncio.run(drive(url, sessions, seconds))
        wall = time.monotonic() - t0
    finally:
        used = sampler.stop()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    log = log_path.read_text(encoding="utf-8", errors="replace")
    stats.errors += [f"server log: {line[:200]}" for line in log.splitlines()
                     if "Traceback" in line or "Uncaught app exception" in line]
    lat = sorted(stats.latencies)
    q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan"))
    return {"sessions": sessions, "seconds": seconds, "sessions_loaded": stats.sessions_loaded,
            "reruns": len(lat), "errors": len(stats.errors), "error_messages": stats.errors[:20],
            "p50_s": q(0.50), "p95_s": q(0.95), "max_s": lat[-1] if lat else float("nan"),
            "mean_s": statistics.fmean(lat) if lat else float("nan"),
            "settings_seen": len(stats.shown), "peak_rss_mb": used["peak_kb"] / 1024,
            "server_cpu_s": used["server_cpu_s"], "browser_cpu_s": used["browser_cpu_s"],
            "wall_s": wall}


def table(r: dict) -> str:
    head = ("| sessions | seconds | reruns | errors | p50 rerun (s) | p95 rerun (s) | max (s) "
            "| peak server RSS (MB) | server CPU (s) | browsers' CPU (s) | wall (s) |")
    row = (f"| {r['sessions']} | {r['seconds']:g} | {r['reruns']} | {r['errors']} | "
           f"{r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['max_s']:.2f} | {r['peak_rss_mb']:.0f} | "
           f"{r['server_cpu_s']:.0f} | {r['browser_cpu_s']:.0f} | {r['wall_s']:.0f} |")
    return "\n".join([head, "|" + "---|" * 11, row])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no Debian chromium at {CHROMIUM} (apt-get install -y chromium)")
        return 2
    r = run(args.sessions, args.seconds)
    print(table(r))
    for e in r["error_messages"]:
        print("error:", e)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
