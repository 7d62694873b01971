"""The disk an app-started sweep may use is bounded (issue 30, item 6): per run, per sweep folder
and for the root, checked before a start; a finished run keeps no trainer state; a finished
sweep is reaped without anyone opening the Sweeps page; the Sweeps form's bigram partition is
accepted."""
import os
import time
from pathlib import Path

import pytest

from localist_core.experiments.cache import load_cache
from localist_core.model.config import ModelConfig, preset
from localist_core.model.transformer import LocalistLM
from tests import test_launcher
from tests.test_launcher import good, request
from ui import launch_budget as budget
from ui import launch_limits as limits
from ui import launcher as launch

root, fake = test_launcher.root, test_launcher.fake   # the launcher tests' fixtures
LARGEST = "max_steps=1 d_model=512 n_layers=4 d_ff=2048 n_ctx=256 n_heads=8"


def test_the_estimate_of_one_run_matches_what_tiny_writes():
    """tiny with one step wrote 4,754,776 + 14,001,360 + 4,754,776 bytes of weights and trainer
    state, two 368 kB vocabularies and 33 kB of maps (24.6 MB): the estimate is above it and
    within 10%."""
    cfg = ModelConfig(**{"vocab_size": limits.SERVER_VOCAB, **preset("tiny").model})
    model = LocalistLM(cfg)
    state = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    est = budget.run_bytes(state, sum(p.numel() for p in model.parameters()), 32_712)
    measured = 4_754_776 * 2 + 14_001_360 + 2 * 368_321 + 32_712 + 7_034 + 3 * 1_500
    assert measured <= est <= 1.1 * measured


def test_one_run_over_the_budget_is_refused_before_anything_starts(root, monkeypatch):
    """The largest config a visitor may ask for (632 MB measured after one step) fits the
    default; a run limit below its estimate refuses it before it starts."""
    req = good(protocols=["attention"], lambdas="0", config="cpu-ref", overrides=LARGEST)
    assert 632e6 < limits.run_disk_bytes(req) <= budget.DISK_LIMITS["run"]
    monkeypatch.setitem(budget.DISK_LIMITS, "run", 600 * budget.MiB)
    req, errors = request(protocols=["attention"], lambdas="0", config="cpu-ref",
                          overrides=LARGEST)
    assert req is None and "One run of this config writes about" in errors[0]


def test_a_sweep_whose_runs_together_exceed_the_folder_budget_is_refused(root, monkeypatch):
    req = good(protocols=["attention"], lambdas="0")
    per_run = limits.run_disk_bytes(req)
    monkeypatch.setitem(budget.DISK_LIMITS, "sweep", 3 * per_run)
    req, errors = request(protocols=["attention", "weights"], lambdas="0, 1")
    assert req is None and "one sweep folder may hold at most" in errors[0]


def test_restarting_a_name_with_another_seed_counts_the_old_runs(root, fake, monkeypatch):
    first = good(overrides="max_steps=5 seed=1")
    per_run = limits.run_disk_bytes(first)
    monkeypatch.setitem(budget.DISK_LIMITS, "sweep", first.n_runs * per_run + per_run // 2)
    proc = fake.start(first)
    os.killpg(proc.pid, 9)
    proc.wait()
    # what seed 1's runs left behind: most of a run
    (first.runs_dir / "attention-l0.0-seed1").mkdir(parents=True)
    (first.runs_dir / "attention-l0.0-seed1" / "model.safetensors").write_bytes(
        b"\0" * (per_run // 2 + 4096))
    second = good(overrides="max_steps=5 seed=2")
    with pytest.raises(launch.LaunchError, match="already holds"):
        fake.start(second)
    assert not any(p for p in fake.procs[1:])


def test_the_root_budget_counts_every_other_sweep(root, fake, monkeypatch):
    req = good("b")
    per_run = limits.run_disk_bytes(req)
    (root / "a" / "runs").mkdir(parents=True)
    (root / "a" / "runs" / "x").write_bytes(b"\0" * per_run)
    monkeypatch.setitem(budget.DISK_LIMITS, "root", req.n_runs * per_run + per_run // 2)
    with pytest.raises(launch.LaunchError, match="together"):
        fake.start(req)


def test_a_folder_of_too_many_files_is_refused_not_walked(root, fake, monkeypatch):
    monkeypatch.setitem(budget.DISK_LIMITS, "entries", 50)
    req = good()
    (req.folder / "junk").mkdir(parents=True)
    for i in range(60):
        (req.folder / "junk" / str(i)).touch()
    assert budget.folder_bytes(req.folder, 50) is None
    with pytest.raises(launch.LaunchError, match="more than 50 files"):
        fake.start(req)


def test_a_finished_sweep_is_reaped_without_the_page(root, fake):
    proc = fake.start(good())
    os.killpg(proc.pid, 9)
    for _ in range(100):                  # nobody calls poll() or wait(): the watcher does
        if not Path(f"/proc/{proc.pid}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{proc.pid}").exists(), "the ended sweep stays a zombie"


@pytest.mark.slow
def test_a_finished_run_keeps_no_trainer_state(root, monkeypatch, tiny_data_dir):
    monkeypatch.setenv("LOCALIST_DATA_DIR", str(tiny_data_dir))
    req = good("e2e", protocols=["attention"], lambdas="0", taus="1",
               overrides="max_steps=2 eval_interval=10 ckpt_interval=10")
    proc = launch.start_sweep(req)
    try:
        assert proc.wait(timeout=120) == 0, launch.log_tail(req.folder, 40)
    finally:
        proc.kill()
    runs, problems = load_cache(req.cache_dir)
    run = Path(runs[0]["checkpoint"])
    for _ in range(100):                  # the watcher prunes once more after the end
        if not (run / "last").exists():
            break
        time.sleep(0.05)
    assert not (run / "last").exists() and (run / "model.safetensors").is_file()
    kept = budget.folder_bytes(req.folder)
    assert kept < limits.run_disk_bytes(req) / 2


def test_pruning_keeps_the_state_of_a_run_trained_again_since_its_result(tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    (runs / "r-1" / "last").mkdir(parents=True)
    cache.mkdir()
    (cache / "r.json").write_text('{"checkpoint": "%s"}' % (runs / "r-1"))
    old = time.time() - 100
    os.utime(cache / "r.json", (old, old))
    (runs / "r-1" / "last" / "trainer.safetensors").write_bytes(b"x")
    assert budget.prune_finished(cache, runs) == 0 and (runs / "r-1" / "last").is_dir()
    (cache / "r.json").touch()
    assert budget.prune_finished(cache, runs) > 0 and not (runs / "r-1" / "last").exists()
    (cache / "s.json").write_text('{"checkpoint": "%s"}' % tmp_path)   # outside runs/: kept
    assert budget.prune_finished(cache, runs) == 0 and tmp_path.is_dir()


def test_the_bigram_partition_offered_by_the_form_is_accepted(root):
    good(protocols=["attention"], lambdas="0", overrides="max_steps=5 partition=bigram")
