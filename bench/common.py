"""Shared pieces of the benchmarks: timing with percentiles, the machine line, table printing."""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from localist_core.model.precision import cpu_has_native_bf16


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``minimum``, or a one-line usage error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {value}")
        return value
    return parse


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a few iterations on small inputs: checks the benchmark runs, "
                        "its numbers mean nothing")
    p.add_argument("--threads", type=count(1), default=2, help="torch threads (default 2)")
    return p


def run(main: Callable[[], object]) -> None:
    """Run a benchmark's ``main``; a missing corpus or a bad config ends with one line on
    stderr and exit code 2, not a traceback."""
    from localist_core.experiments.data import DataNotFound
    from localist_core.model.config import ConfigError

    try:
        main()
    except (DataNotFound, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def machine() -> str:
    """One line naming the machine a table was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in open("/proc/meminfo") if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GB"
    except (OSError, StopIteration):
        pass
    native, why = cpu_has_native_bf16()     # names torch's CPU capability and its bf16 flags
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {why}; bf16 {'native' if native else 'emulated'}"
            f"; torch {torch.__version__}, {torch.get_num_threads()} threads")


def fresh_tensor_ms(shape: tuple[int, ...], repeat: int = 5, warmup: int = 2) -> float:
    """Median ms to allocate and zero a float32 tensor of ``shape``, after ``warmup`` untimed
    ones: the page faults a training step pays for each big tensor it makes."""
    for _ in range(warmup):
        torch.zeros(shape)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.zeros(shape)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    """Wall times (ms) of ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95),
            "mean": statistics.fmean(ms)}


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """A Markdown table, so the output can be pasted into BENCHMARKS.md as is."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(_fmt(x) for x in r) + " |")


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.2f}"
    return str(x)
