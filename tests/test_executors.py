"""Sweeps on Ray (experiments/executors.py): the same cache as the local executor, finished runs
skipped without starting Ray, a run's own error, and the CLI's checks. One local Ray of 2 CPUs
serves the whole module (a process already connected is used as it is)."""
import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from localist_core.cli import main
from localist_core.experiments import executors
from localist_core.experiments.cache import read_result
from localist_core.experiments.sweep import plan_runs
from localist_core.model.config import TrainConfig, preset
from ui import launcher

pytestmark = pytest.mark.slow

VOLATILE = ("wall_time_s", "git_commit", "checkpoint")
RUNS = ["attention-l0.0", "attention-l1.0"]
# Two tiny runs of one thread each: the 2-CPU Ray runs both at once.
OVERRIDES = ["max_steps=10", "eval_interval=5", "ckpt_interval=5", "threads=1"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def stable(result: dict) -> dict:
    """A run's result without what legitimately differs between two runs (times, paths)."""
    out = {k: v for k, v in result.items() if k not in VOLATILE}
    out["training"] = dict(out["training"], history=[
        {k: v for k, v in h.items() if k != "train_seconds"} for h in out["training"]["history"]])
    return out


def assert_close(a, b, where: str = "result") -> None:
    """Equal, numbers to 1e-6 (two processes may sum in another order)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), where
    else:
        assert a == b, where


def sweep_argv(data_dir, cache, runs, prompts, *extra) -> list[str]:
    return ["sweep", "--config", "tiny", "--data-dir", str(data_dir), "--protocols", "attention",
            "--lambdas", "0,1", "--taus", "1", "--cache", str(cache), "--runs-dir", str(runs),
            "--prompts", str(prompts), *extra, *OVERRIDES]


def test_a_ray_sweep_writes_the_cache_the_local_executor_writes_and_a_rerun_starts_nothing(
        ray_cluster, tmp_path, tiny_data_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)     # relative --cache and --runs-dir: ray makes them absolute
    (tmp_path / "prompts.json").write_text(json.dumps(
        {"prompts": [{"name": "p", "text": "the cat sees the bridge ."}]}))
    assert main(sweep_argv(tiny_data_dir, "local/cache", "local/runs", "prompts.json")) == 0
    reports = []

    def recording(cache_dir, **state):
        reports.append(state)
        real(cache_dir, **state)

    real = executors.write_progress
    monkeypatch.setattr(executors, "write_progress", recording)
    assert main(sweep_argv(tiny_data_dir, "ray/cache", "ray/runs", "prompts.json",
                           "--executor", "ray")) == 0
    assert "wrote ray/cache" in capsys.readouterr().out

    local, ray = tmp_path / "local" / "cache", tmp_path / "ray" / "cache"
    assert sorted(p.name for p in ray.iterdir()) == sorted(p.name for p in local.iterdir())
    for run in RUNS:
        mine, theirs = read_result(ray / f"{run}.json"), read_result(local / f"{run}.json")
        assert_close(stable(mine), stable(theirs), run)
        assert Path(mine["checkpoint"]).parent == (tmp_path / "ray" / "runs").resolve()
        maps = f"{run}.maps.safetensors"
        a, b = load_file(ray / maps), load_file(local / maps)
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)
    assert (ray / "baselines.json").read_bytes() == (local / "baselines.json").read_bytes()

    # The driver reported both runs in flight at once, then the end.
    assert any(sorted(r.get("in_flight", [])) == RUNS and r["current"] in RUNS
               for r in reports), reports
    done = json.loads((ray / "progress.json").read_text())
    assert done["phase"] == "done" and done["runs_done"] == done["runs_total"] == 2
    assert done["in_flight"] == [] and done["current"] is None

    # Again: every run is finished, so nothing is trained and Ray is not even touched.
    stamps = {p: p.stat().st_mtime_ns for p in ray.iterdir() if p.name != "progress.json"}

    def no_ray(*args, **kwargs):
        raise AssertionError("a finished sweep started Ray")

    monkeypatch.setattr(executors, "_start", no_ray)
    monkeypatch.setattr(executors, "_schedule", no_ray)
    assert main(sweep_argv(tiny_data_dir, "ray/cache", "ray/runs", "prompts.json",
                           "--executor", "ray")) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_failed_run_raises_its_own_error(ray_cluster, tmp_path, tiny_model_cfg, tiny_corpus):
    tcfg = TrainConfig(**{**preset("tiny").train, "max_steps": 2, "threads": 1})
    runs = plan_runs(tiny_model_cfg, tcfg, ["attention"], [0.0], [1.0])
    (tmp_path / "runs").write_text("a file where the checkpoint folders should go")
    with pytest.raises(OSError) as err:
        executors.ray_sweep(runs, tiny_corpus, tmp_path / "cache", tmp_path / "runs",
                            progress=False, test_eval=False)
    assert not isinstance(err.value, executors.import_ray().exceptions.RayError)
    assert "in run attention-l0.0, a Ray task" in err.value.__notes__
    assert not (tmp_path / "cache" / "attention-l0.0.json").exists()


def test_a_run_no_node_can_hold_is_refused_on_the_local_ray_and_warned_about_on_a_cluster(
        capsys):
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    shapes = {"dial": {"num_cpus": 1, "num_gpus": 0.25}}      # device=cuda, no live GPU
    with pytest.raises(ValueError, match=r"asks Ray for 1 CPUs and 0\.25 GPU.*2 CPUs, no GPU"):
        executors._check_fits(nodes, shapes, local=True)
    executors._check_fits(nodes, shapes, local=False)
    assert "warning: run dial asks Ray for" in capsys.readouterr().err
    executors._check_fits(nodes, {"dial": {"num_cpus": 2, "num_gpus": 0}}, local=True)


def test_gpu_share_goes_to_cuda_runs_only(tiny_model_cfg):
    def run(device):
        tcfg = TrainConfig(**{**preset("tiny").train, "threads": 3, "device": device})
        return plan_runs(tiny_model_cfg, tcfg, ["dial"], [0.0], [1.0])[0]

    assert executors.task_resources(run("cuda"), 0, 0.5) == {"num_cpus": 3, "num_gpus": 0.5}
    assert executors.task_resources(run("cpu"), 8, 0.5) == {"num_cpus": 3, "num_gpus": 0}
    assert executors.task_resources(run("auto"), 8, 0.5)["num_gpus"] == 0.5
    assert executors.task_resources(run("auto"), 0, 0.5)["num_gpus"] == 0


def test_the_sweep_page_shows_every_run_in_flight(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "pid_alive", lambda pid: True)
    state = {"pid": os.getpid(), "updated": 0.0, "runs_total": 6, "runs_done": 1,
             "current": "attention-l0.0", "phase": "running", "executor": "ray",
             "in_flight": ["attention-l0.0", "attention-l0.5", "dial", "dial-s2"],
             "runs_in_flight": 5}
    (tmp_path / "progress.json").write_text(json.dumps(state))
    status = launcher.sweep_status(tmp_path, now=3.0)
    assert status["state"] == "running" and status["fraction"] == pytest.approx(1 / 6)
    assert status["text"] == ("5 runs in flight: attention-l0.0, attention-l0.5, dial and 2 "
                              "more · 1 of 6 done · updated 3 s ago")
    state["runs_in_flight"] = 9         # more than progress.json lists
    (tmp_path / "progress.json").write_text(json.dumps(state))
    assert launcher.sweep_status(tmp_path, now=3.0)["text"].startswith(
        "9 runs in flight: attention-l0.0, attention-l0.5, dial and 6 more · ")
    for junk in ({"in_flight": ["dial"], "runs_in_flight": None}, {"in_flight": "dial"},
                 {"in_flight": [1, None], "runs_in_flight": True}):
        (tmp_path / "progress.json").write_text(json.dumps({**state, **junk}))
        assert launcher.sweep_status(tmp_path, now=3.0)["text"].startswith(
            "Run 2 of 6: attention-l0.0 (running)")


# -- the command line ------------------------------------------------------------------------

def test_executor_ray_without_ray_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)      # `import ray` fails as if not installed
    argv = sweep_argv(tmp_path / "no-data", tmp_path / "cache", tmp_path / "runs", "",
                      "--executor", "ray")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the ray executor needs Ray") and len(err.splitlines()) == 1
    assert 'pip install -e ".[cluster]"' in err and "requirements-cluster.txt" in err
    assert "no-data" not in err         # refused before the corpus is looked for


@pytest.mark.parametrize("extra,message", [
    (["--ray-address", "auto"], "--ray-address and --gpu-share need --executor ray"),
    (["--gpu-share", "0.5"], "--ray-address and --gpu-share need --executor ray"),
    (["--executor", "ray", "--ray-address", " "], "--ray-address must be a Ray address"),
])
def test_ray_options_are_checked(extra, message, capsys, tmp_path):
    assert main(sweep_argv(tmp_path, tmp_path / "cache", tmp_path / "runs", "", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra", [["--executor", "spark"], ["--gpu-share", "0"],
                                   ["--executor", "ray", "--gpu-share", "1.5"]])
def test_bad_executor_arguments_are_usage_errors(extra, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(sweep_argv(tmp_path, tmp_path / "cache", tmp_path / "runs", "", *extra))
    assert e.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_the_cli_refuses_a_silent_address_before_writing_anything(capsys, tmp_path):
    argv = sweep_argv(tmp_path, tmp_path / "cache", tmp_path / "runs", "", "--executor", "ray",
                      "--ray-address", "127.0.0.1:1")
    assert main(argv) != 0
    assert capsys.readouterr().err.startswith("error: no Ray cluster answers at 127.0.0.1:1")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_an_address_nobody_answers_at_is_refused_at_once():
    with pytest.raises(ConnectionError, match=r"no Ray cluster answers at 127\.0\.0\.1:1 "):
        executors.check_address("127.0.0.1:1")      # a closed port on this machine
    executors.check_address("auto")                 # Ray's to resolve
