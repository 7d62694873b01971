"""Every benchmark runs in its --quick mode and prints its tables. No timing is asserted: speed
bars are checked by the benchmarks themselves and recorded in BENCHMARKS.md."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = {
    "bench.live": ["Live core", "Figure build", "App rerun"],
    "bench.train": ["Training throughput", "ours ÷ (a)", "matmul peak", "Fresh float32 tensors",
                    "bf16 autocast vs fp32"],
    "bench.evaluate": ["One full-valid evaluation", "Sweep wall time"],
    "bench.head": ["the adaptive head, side by side", "time vs adaptive_nll"],
    "bench.checks": ["Checkpoint checks", "Rule pattern verdicts"],
    "bench.sweep_executors": ["Sweep executors, side by side", "local ÷ ray",
                              "largest relative difference"],
    "bench.distributed": ["Data-parallel training", "2 × 1 thread", "vs 1 × 2"],
}


@pytest.mark.parametrize("module", sorted(BENCHMARKS))
def test_benchmark_runs_in_quick_mode_and_prints_its_tables(module):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", module, "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for title in BENCHMARKS[module]:
        assert title in proc.stdout, (title, proc.stdout[-2000:])
    assert "| --- |" not in proc.stdout and "|---|" in proc.stdout     # Markdown tables
    assert "nan" not in proc.stdout.lower().replace("nanogpt", "")


def test_train_benchmark_can_keep_freed_memory():
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench.train", "--quick", "--quality-steps", "0",
                           "--keep-freed-memory"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "allocator: glibc keeps freed memory" in proc.stdout
    assert "ours ÷ (a)" in proc.stdout and "bf16 autocast vs fp32" not in proc.stdout


@pytest.mark.parametrize("argv,message", [
    (["bench.head", "--rounds", "0"], "must be ≥ 1"),
    (["bench.train", "--quality-steps", "-1"], "must be ≥ 0"),
    (["bench.train", "--threads", "two"], "expected an integer"),
    (["bench.head", "--data-dir", "/nonexistent"], "error: /nonexistent lacks train.txt"),
])
def test_bad_benchmark_arguments_exit_2_with_one_line(argv, message):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
