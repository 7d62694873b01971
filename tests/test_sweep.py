"""Sweeps: finished runs are skipped, a killed sweep resumes losing nothing, writes are atomic."""
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localist_core.experiments.cache import (
    SCHEMA_VERSION,
    load_cache,
    read_result,
    run_id_problem,
)
from localist_core.experiments.sweep import plan_runs, run_id_for, run_sweep
from localist_core.model.config import TrainConfig, preset

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("wall_time_s", "git_commit", "checkpoint")


def stable(result: dict) -> dict:
    """A run's result without what legitimately differs between two runs (times, paths)."""
    out = {k: v for k, v in result.items() if k not in VOLATILE}
    out["training"] = dict(out["training"], history=[
        {k: v for k, v in h.items() if k != "train_seconds"} for h in out["training"]["history"]])
    return out


def _runs(tiny_model_cfg, lambdas=(0.0, 1.0), protocols=("attention", "dial")):
    tcfg = TrainConfig(**{**preset("tiny").train, "max_steps": 10, "eval_interval": 5,
                          "ckpt_interval": 5})
    return plan_runs(tiny_model_cfg, tcfg, list(protocols), list(lambdas), [0.5, 1.0])


def test_plan_has_one_run_per_penalty_lambda_and_one_dial(tiny_model_cfg):
    runs = _runs(tiny_model_cfg, lambdas=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    ids = [r.run_id for r in runs]
    assert ids == [f"attention-l{x:.1f}" for x in (0, .2, .4, .6, .8, 1)] + ["dial"]

    assert runs[3].settings == ((0.0, 0.5), (0.0, 1.0), (0.6, 0.5), (0.6, 1.0))
    assert len(runs[-1].settings) == 12


def test_a_fine_lambda_grid_gives_every_run_its_own_id():
    """λ = 0.05 and 0.1 once shared the id attention-l0.1 (one decimal); the study's grid
    needs them apart, and every id the shipped cache already holds stays as it was."""
    ids = [run_id_for("attention", lam, []) for lam in (0, 0.05, 0.1, 0.2, 0.6, 1.0)]
    assert len(set(ids)) == len(ids)
    assert ids[1] == "attention-l0.05" and ids[2] == "attention-l0.1"


def test_an_eval_beta_run_reuses_the_trained_model_folder(tiny_model_cfg):
    from localist_core.experiments.sweep import run_dir_for
    tcfg = TrainConfig(**preset("tiny").train)
    base = plan_runs(tiny_model_cfg, tcfg, ["dial"], [0.0, 1.0], [1.0])[0]
    beta = plan_runs(tiny_model_cfg, tcfg, ["dial"], [0.0, 1.0], [1.0],
                     eval_barrier_sharpness=64)[0]
    assert beta.run_id == "dial-beta64" and base.run_id == "dial"
    assert run_dir_for(beta) == run_dir_for(base)
    assert beta.stored_config()["eval"] == {"barrier_sharpness": 64}


@pytest.mark.slow
def test_sweep_writes_results_and_skips_finished_runs(tmp_path, tiny_model_cfg, tiny_corpus):
    runs = _runs(tiny_model_cfg)
    prompts = [{"name": "p", "text": "the cat sees the bridge ."}]
    first = run_sweep(runs, tiny_corpus, tmp_path / "cache", tmp_path / "runs", prompts=prompts,
                      progress=False)
    assert [r["run_id"] for r in first] == ["attention-l0.0", "attention-l1.0", "dial"]
    for r in first:
        assert r["schema_version"] == SCHEMA_VERSION and r["leak_test"]["passed"]
        assert r["metrics"]["valid"][0]["attention"]["in_block_mass"]["per_head"]
        assert (tmp_path / "cache" / f"{r['run_id']}.maps.safetensors").is_file()
        t = r["training"]   # what bounded the run and the precision it used are recorded
        assert t["stopped"] == "max_steps" and t["steps"] == t["max_steps"]
        assert t["precision"] == "fp32" and t["precision_reason"].startswith("asked for")
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.json")}
    again = run_sweep(runs, tiny_corpus, tmp_path / "cache", tmp_path / "runs", progress=False)
    assert [stable(r) for r in again] == [stable(r) for r in first]
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items() if p.name != "progress.json")
    loaded, problems = load_cache(tmp_path / "cache")
    assert len(loaded) == 3 and not problems


PROMPTS = {"prompts": [{"name": "p", "text": "the cat sees the bridge ."}]}


def _sweep_cmd(data_dir, cache, runs, prompts):
    # One thread: two spinning OpenMP threads per process cost 4x the CPU on a busy machine.
    return [sys.executable, "-m", "localist_core", "sweep", "--config", "tiny",
            "--data-dir", str(data_dir), "--protocols", "attention", "--lambdas", "0,0.5,1",
            "--taus", "1", "--cache", str(cache), "--runs-dir", str(runs), "--prompts",
            str(prompts), "max_steps=40", "ckpt_interval=5", "eval_interval=20", "threads=1"]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_OFFLINE": "1"}
RUNS = ("attention-l0.0", "attention-l0.5", "attention-l1.0")
N_KILLS = 4


@pytest.fixture(scope="module")
def sweep_args(tmp_path_factory, tiny_data_dir):
    folder = tmp_path_factory.mktemp("sweep-args")
    (folder / "prompts.json").write_text(json.dumps(PROMPTS))
    return tiny_data_dir, folder / "prompts.json"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sweep_args):
    """The cache of an uninterrupted run of the sweep command."""
    data_dir, prompts = sweep_args
    out = tmp_path_factory.mktemp("sweep-ref")
    ref = subprocess.run(_sweep_cmd(data_dir, out / "cache", out / "runs", prompts), env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return out / "cache"


def _assert_same_as_reference(cache: Path, ref: Path) -> None:
    assert sorted(p.name for p in cache.iterdir() if p.name != "progress.json") == sorted(
        p.name for p in ref.iterdir() if p.name != "progress.json")
    for run in RUNS:
        assert stable(read_result(cache / f"{run}.json")) == stable(
            read_result(ref / f"{run}.json"))
        maps = f"{run}.maps.safetensors"
        assert (cache / maps).read_bytes() == (ref / maps).read_bytes()
    assert (cache / "baselines.json").read_bytes() == (ref / "baselines.json").read_bytes()


@pytest.mark.slow
def test_killed_sweep_resumes_with_nothing_lost(tmp_path, sweep_args, reference):
    cmd = _sweep_cmd(*sweep_args[:1], tmp_path / "cache", tmp_path / "runs", sweep_args[1])
    cache = tmp_path / "cache"
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (cache / "attention-l0.0.json").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survived = read_result(cache / "attention-l0.0.json")
    assert not (cache / "attention-l1.0.json").exists(), "killed too late to test anything"
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert read_result(cache / "attention-l0.0.json") == survived   # not redone
    _assert_same_as_reference(cache, reference)
    assert not list(cache.glob(".*.tmp"))


def _position(cache: Path, pid: int) -> int:
    """Where process ``pid`` is in the sweep: 2·(run index) + (1 in evaluation), or -1."""
    try:
        p = json.loads((cache / "progress.json").read_text())
        if p["pid"] != pid or p["current"] not in RUNS:
            return -1
        return 2 * RUNS.index(p["current"]) + (p["phase"] == "evaluate")
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_sweep_killed_at_random_moments_ends_as_if_never_killed(tmp_path, sweep_args, reference):
    """SIGKILL at seeded random moments (in training, evaluation or writing results, in several
    runs), running the same command again after each kill."""
    cmd = _sweep_cmd(sweep_args[0], tmp_path / "cache", tmp_path / "runs", sweep_args[1])
    cache, rng = tmp_path / "cache", random.Random(9)
    # Random phases of the sweep, in order (run 0 training, run 0 evaluation, run 1 training, …;
    # not the very last one, which may end before the kill), and a random delay into each.
    targets = sorted(rng.sample(range(2 * len(RUNS) - 1), N_KILLS))
    seen: dict[str, bytes] = {}     # every finished file observed after a kill, as it was then
    kills = []
    for target in targets:
        delay = rng.uniform(0.0, 0.4)
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        while proc.poll() is None and _position(cache, proc.pid) < target:
            time.sleep(0.01)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills.append(f"{RUNS[target // 2]} {('train', 'evaluate')[target % 2]} +{delay:.2f}s")
        for path in sorted(cache.glob("*.json")) + sorted(cache.glob("*.maps.safetensors")):
            if path.name == "progress.json":
                continue
            if path.suffix == ".json" and path.name != "baselines.json":
                read_result(path)              # complete, never a partial write
            data = path.read_bytes()
            assert seen.setdefault(path.name, data) == data, f"{path.name} was rewritten"
    print("killed at:", "; ".join(kills))
    assert len(kills) == N_KILLS, f"the sweep finished before a kill (kills: {kills})"
    final = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    for name, data in seen.items():          # no finished run was lost or redone
        assert (cache / name).read_bytes() == data, name
    _assert_same_as_reference(cache, reference)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


# -- checked before trusted ------------------------------------------------------------------------

def test_every_run_id_a_sweep_writes_is_a_plain_name(tiny_model_cfg):
    rng = random.Random(3)
    for _ in range(200):
        overrides = [f"{rng.choice(['block_size', 'partition', 'd_model', 'lr'])}="
                     f"{rng.choice(['3', 'recruited', 'a b/c', '../x', 'é', '1e+06'])}"
                     for _ in range(rng.randint(0, 3))]
        rid = run_id_for(rng.choice(["attention", "weights", "dial"]), rng.random(), overrides)
        assert run_id_problem(rid) is None and run_id_problem(rid + "-beta1e+06") is None, rid


def test_a_sweep_removes_only_its_own_temp_files(tmp_path, tiny_corpus):
    cache = tmp_path / "cache"
    cache.mkdir()
    mine = [".dial.json.k3j_2x9a.tmp", ".dial.maps.safetensors.0az_91qx.tmp",
            ".progress.json.a1b2c3d4.tmp"]
    others = [".notes.tmp", ".editor.swp.tmp", ".dial.json.tmp", "dial.json.abc.tmp"]
    for name in mine + others:
        (cache / name).write_text("x")
    run_sweep([], tiny_corpus, cache, tmp_path / "runs", progress=False)
    assert sorted(p.name for p in cache.glob("*.tmp")) == sorted(others)


def test_seeds_make_one_run_each_and_the_config_seed_keeps_its_id(tiny_model_cfg):
    tcfg = TrainConfig(**preset("tiny").train)
    runs = plan_runs(tiny_model_cfg, tcfg, ["attention", "dial"], [0.6], [1.0],
                     seeds=[tcfg.seed, 2, 3])
    assert [r.run_id for r in runs] == ["attention-l0.6", "attention-l0.6-s2",
                                        "attention-l0.6-s3", "dial", "dial-s2", "dial-s3"]
    assert [r.train.seed for r in runs] == [tcfg.seed, 2, 3] * 2
    assert runs[1].stored_config()["train"]["seed"] == 2
    # No --seeds: exactly today's plan (the config's seed, no suffix).
    assert plan_runs(tiny_model_cfg, tcfg, ["attention"], [0.6], [1.0]) == [runs[0]]
    beta = plan_runs(tiny_model_cfg, tcfg, ["dial"], [0.0, 1.0], [1.0], seeds=[5],
                     eval_barrier_sharpness=64)[0]
    assert beta.run_id == "dial-beta64-s5" and beta.train_id == "dial-s5"


def test_a_killed_multi_seed_sweep_resumes_with_no_seed_lost(tmp_path, tiny_model_cfg,
                                                             tiny_corpus, monkeypatch):
    from localist_core.experiments import sweep as sweep_mod
    tcfg = TrainConfig(**{**preset("tiny").train, "max_steps": 6, "eval_interval": 3,
                          "ckpt_interval": 3})
    runs = plan_runs(tiny_model_cfg, tcfg, ["attention"], [0.5], [1.0], seeds=[1, 2])
    assert [r.run_id for r in runs] == ["attention-l0.5-s1", "attention-l0.5-s2"]
    real_train, trained = sweep_mod.train, []

    def killed_after_first(spec_model, spec_train, *args, **kwargs):
        if trained:
            raise RuntimeError("killed")    # the sweep dies after its first finished run
        trained.append(spec_train.seed)
        return real_train(spec_model, spec_train, *args, **kwargs)

    monkeypatch.setattr(sweep_mod, "train", killed_after_first)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="killed"):
        run_sweep(runs, tiny_corpus, cache, tmp_path / "runs", progress=False, test_eval=False)
    first = (cache / "attention-l0.5-s1.json").read_bytes()
    assert trained == [1] and not (cache / "attention-l0.5-s2.json").exists()

    def counting(spec_model, spec_train, *args, **kwargs):
        trained.append(spec_train.seed)
        return real_train(spec_model, spec_train, *args, **kwargs)

    monkeypatch.setattr(sweep_mod, "train", counting)
    done = run_sweep(runs, tiny_corpus, cache, tmp_path / "runs", progress=False,
                     test_eval=False)
    assert trained == [1, 2]                       # the first seed was not trained again
    assert (cache / "attention-l0.5-s1.json").read_bytes() == first
    assert [r["run_id"] for r in done] == ["attention-l0.5-s1", "attention-l0.5-s2"]
    assert [r["config"]["train"]["seed"] for r in done] == [1, 2]
    loaded, problems = load_cache(cache)
    assert {r["run_id"] for r in loaded} == {"attention-l0.5-s1", "attention-l0.5-s2"}
    assert not problems
    from localist_core.experiments.results import curve_points
    pt = next(p for p in curve_points(loaded) if "as trained" in p["series"])
    assert pt["n"] == 2 and pt["seeds"] == "1,2" and pt["perplexity_sd"] is not None


def test_adding_a_model_field_never_renames_a_run():
    """A run's folder is its id plus a hash of its config. The cpu-ref study run below was
    trained before ``bigram_boundary_bits`` and ``bigram_pairs`` existed; with them at their
    defaults its folder keeps its name, so its checkpoint is still found and resumed."""
    from localist_core.cli.commands import configs
    from localist_core.experiments.sweep import run_dir_for
    budget = ["max_steps=1500", "time_budget_s=86400", "lr_by_time=false", "precision=fp32"]
    model_cfg, train_cfg = configs("cpu-ref", budget, 33278)
    spec = plan_runs(model_cfg, train_cfg, ["attention"], [0.6], [0.5, 1, 2], budget)[0]
    assert run_dir_for(spec) == "attention-l0.6-9d5c326f"     # its folder in runs/ since then
    other = dataclasses.replace(model_cfg, bigram_boundary_bits=2.0)
    moved = plan_runs(other, train_cfg, ["attention"], [0.6], [0.5, 1, 2], budget)[0]
    assert run_dir_for(moved) != run_dir_for(spec)            # a value set by hand is identity
