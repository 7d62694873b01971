"""Data-parallel training (experiments/distributed.py): the helpers without processes, then
`train` under torchrun with two gloo processes on the tiny config, against one process."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from localist_core import load_model
from localist_core.cli import main
from localist_core.cli.args import configs
from localist_core.experiments.distributed import (
    ONE_PROCESS,
    Distributed,
    from_env,
    one_process,
)
from localist_core.experiments.train import (
    LAST,
    TRAINER_META,
    TRAINER_STATE,
    dropout_seed,
    train,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--standalone"]
STEPS = 200     # long enough that a kill lands between the first checkpoint and the end
# The attention penalty is on, so the test also holds its mean over the batch to the slices'.
OVERRIDES = ["threads=1", f"max_steps={STEPS}", "eval_interval=50", "ckpt_interval=10",
             "locality=0.6"]
TOLERANCE = 1e-5


# -- the helpers, in one process -------------------------------------------------------------

def test_without_torchrun_it_is_one_process():
    assert from_env({}) == ONE_PROCESS == Distributed()
    assert from_env({"WORLD_SIZE": "1"}) == ONE_PROCESS
    assert not ONE_PROCESS.active and ONE_PROCESS.is_main and ONE_PROCESS.backend == "none"


def test_torchrun_variables_are_read():
    info = from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    assert info.active and not info.is_main and info.backend == "none"     # nothing started
    assert info.device_for("cuda") == "cuda:1" and info.device_for("cpu") == "cpu"
    assert ONE_PROCESS.device_for("cuda") == "cuda"


@pytest.mark.parametrize("env,message", [
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK is not set"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, r"rank must be in \[0, 2\)"),
])
def test_bad_torchrun_variables_are_refused(env, message):
    with pytest.raises(ValueError, match=message):
        from_env(env)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_slices_cover_the_global_batch_once_in_equal_parts(world):
    rows = [list(range(16))[Distributed(rank=r, world_size=world).shard(16)]
            for r in range(world)]
    assert sum(rows, []) == list(range(16))
    assert {len(r) for r in rows} == {16 // world}


def test_a_batch_that_does_not_split_evenly_is_refused_before_training(tiny_model_cfg,
                                                                      tiny_corpus, tmp_path):
    cfg = configs("tiny", OVERRIDES, len(tiny_corpus.tokenizer))[1]      # batch_size 8
    with pytest.raises(ValueError, match="batch_size=8 does not split evenly over 3 processes"
                                         r".*multiple of 3 \(e\.g\. 6 or 9\)"):
        train(tiny_model_cfg, cfg, tiny_corpus, tmp_path / "run", progress=False,
              dist=Distributed(rank=0, world_size=3))
    assert not (tmp_path / "run").exists()


def test_one_process_collectives_change_nothing():
    values = {"loss": 1.5, "nll": 2.0}
    assert ONE_PROCESS.mean_over_ranks(values) == values
    assert ONE_PROCESS.max_over_ranks(0.25) == 0.25
    module = torch.nn.Linear(2, 2)
    assert ONE_PROCESS.wrap(module) is module
    ONE_PROCESS.barrier()


def test_a_caller_that_trains_alone_is_refused_under_torchrun():
    assert one_process({}) is ONE_PROCESS
    with pytest.raises(ValueError, match="only `train` splits one model"):
        one_process({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})


def test_rank_0_keeps_the_one_process_dropout_seed_and_ranks_never_share_one():
    assert [dropout_seed(1234, s) for s in range(3)] == [1234 + 7919 * s for s in range(3)]
    seeds = {dropout_seed(1234, s, r) for s in range(1000) for r in range(8)}
    assert len(seeds) == 8000


# -- two processes under torchrun --------------------------------------------------------------

def _env() -> dict:
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _torchrun(data_dir, out) -> list[str]:
    return [*TORCHRUN, "-m", "localist_core", "train", "--config", "tiny", "--data-dir",
            str(data_dir), "--out", str(out), *OVERRIDES]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def two_process_run(tiny_data_dir, tmp_path_factory):
    """The tiny config trained by two gloo processes from start to end: (folder, stdout)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = subprocess.run(_torchrun(tiny_data_dir, out), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_two_processes_train_the_weights_one_process_trains(two_process_run, tiny_corpus):
    out, stdout = two_process_run
    mcfg, tcfg = configs("tiny", OVERRIDES, len(tiny_corpus.tokenizer))
    alone = train(mcfg, tcfg, tiny_corpus, progress=False)
    together, _ = load_model(out)        # rank 0's checkpoint loads like any other
    assert _max_diff(together.state_dict(), alone.model.state_dict()) <= TOLERANCE
    assert together.meta["world_size"] == 2 and together.meta["backend"] == "gloo"
    assert alone.world_size == 1 and alone.backend == "none"
    state = json.loads((out / LAST / TRAINER_META).read_text())
    assert state["world_size"] == 2 and state["step"] == STEPS
    # Rank 0 evaluated on the global batch's train NLL (the mean of the two slices').
    assert [h["step"] for h in state["history"]] == [h["step"] for h in alone.history]
    for h2, h1 in zip(state["history"], alone.history):
        assert h2["train_nll"] == pytest.approx(h1["train_nll"], rel=1e-4)
        assert h2["valid_ppl"] == pytest.approx(h1["valid_ppl"], rel=1e-4)
    assert stdout.count("trained 200 steps") == 1 and "2 processes (gloo)" in stdout


def _kill_workers(torchrun_pid: int) -> None:
    """SIGKILL torchrun's workers (the processes whose parent it is, found in /proc): a crash,
    with no handler, no finally and no last checkpoint."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == torchrun_pid:
            os.kill(int(stat.parent.name), signal.SIGKILL)


def _saved_step(out: Path) -> int:
    try:
        return json.loads((out / LAST / TRAINER_META).read_text())["step"]
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds workers in /proc")
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(two_process_run,
                                                                      tiny_data_dir, tmp_path):
    out = tmp_path / "run"
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen(_torchrun(tiny_data_dir, out), cwd=ROOT, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while _saved_step(out) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        _kill_workers(proc.pid)
        assert proc.wait(timeout=60) != 0       # torchrun reports its workers' failure
    finally:
        if proc.poll() is None:                 # a failure above: leave nothing running
            _kill_workers(proc.pid)
            proc.kill()
            proc.wait()
        log.close()
    killed_at = _saved_step(out)
    assert 0 < killed_at < STEPS, (killed_at, (tmp_path / "log.txt").read_text()[-2000:])
    assert not (out / "model.safetensors").exists()
    proc = subprocess.run(_torchrun(tiny_data_dir, out), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed, _ = load_model(out)
    straight, _ = load_model(two_process_run[0])
    # The same N: the same sums in the same order (two ranks: a + b = b + a), bit for bit.
    a, b = resumed.state_dict(), straight.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.meta["step"] == STEPS


def test_a_two_process_run_is_not_resumed_by_one_process(two_process_run, tiny_data_dir,
                                                         tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(two_process_run[0], out)
    code = main(["train", "--config", "tiny", "--data-dir", str(tiny_data_dir), "--out",
                 str(out), *OVERRIDES])
    err = capsys.readouterr().err
    assert code == 2
    assert "trained by 2 process(es) (world_size=2), not 1" in err
    assert "torchrun --nproc_per_node 2" in err


def _forget_world_size(folder: Path) -> None:
    """Make ``folder``'s trainer state look written before data parallelism."""
    path = folder / TRAINER_STATE
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        header = f.metadata()
    state = json.loads(header["state"])
    del state["world_size"]
    save_file(tensors, path, metadata={**header, "state": json.dumps(state)})


def test_a_one_process_run_is_not_resumed_by_two_processes(tiny_corpus, tiny_data_dir,
                                                          tmp_path):
    """An older state, without world_size, counts as one process."""
    out = tmp_path / "run"
    mcfg, tcfg = configs("tiny", OVERRIDES, len(tiny_corpus.tokenizer))
    train(mcfg, tcfg, tiny_corpus, out, progress=False, stop_after=10)
    _forget_world_size(out / LAST)
    proc = subprocess.run(_torchrun(tiny_data_dir, out), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "trained by 1 process(es) (world_size=1), not 2" in proc.stderr
    assert "resume it with one process, without torchrun" in proc.stderr
    assert _saved_step(out) == 10       # the state is left as it was
