"""Sweeps on Ray (``sweep --executor ray``): each unfinished run is one Ray task running
``sweep.run_one``; the local executor is ``sweep.run_sweep``. Ray is imported here only, and only
when this executor is chosen: the library runs without it (``pip install -e ".[cluster]"``).

What a task asks for: ``num_cpus`` = the run's ``TrainConfig.threads``, and ``num_gpus`` = a share
of a GPU (``gpu_share``) when the run computes on cuda: ``device=cuda``, or ``auto`` on a cluster
that has a GPU (``resolve_device``'s rule, applied to the cluster instead of this machine). A run
given no GPU sees none (``CUDA_VISIBLE_DEVICES=""``), so ``auto`` resolves to cpu inside it, as it
was scheduled; Ray gives a GPU task a fresh worker process each time (a reused one would keep the
device it first saw).

The corpus is put in Ray's object store once (``ray.put``) rather than loaded in each task: the
driver has loaded it already (to size the vocabulary and write the baselines), each node gets one
copy, the workers need no data folder or Hub access, and every run trains on the vocabulary its
config was planned with (a node reading another copy of the data would build another one).

The cache and runs folders are made absolute, and every node must reach them (one machine, or a
shared filesystem). Each task writes its own result atomically, as ``run_sweep`` does, so a killed
driver or a lost node costs only the runs in flight, and of those only the steps since their last
checkpoint (``ckpt_interval``): running the sweep again skips every finished run and resumes the
others from ``runs_dir``. The driver shows a bar over finished runs and keeps ``progress.json``
up to date (``in_flight``: the runs submitted and not yet finished).
"""
from __future__ import annotations

import logging
import math
import os
import socket
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .cache import read_result
from .data import Corpus
from .sweep import RunSpec, finished, prepare_cache, run_dir_for, run_one, write_progress

INSTALL_HINT = 'pip install -e ".[cluster]" (or pip install -r requirements-cluster.txt)'
# Four runs share a GPU by default: a tiny or cpu-ref run uses a small part of one.
DEFAULT_GPU_SHARE = 0.25
WAIT_S = 10.0           # how often the driver looks again at the cluster and rewrites progress
IN_FLIGHT_SHOWN = 64    # run ids listed in progress.json (its reader caps the file at 64 KiB)


class RayNotInstalled(ImportError):
    """``--executor ray`` without Ray installed."""


def import_ray():
    """The ``ray`` module, or RayNotInstalled saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise RayNotInstalled(f"the ray executor needs Ray, which is not installed ({e}); "
                              f"install it with {INSTALL_HINT}") from None
    return ray


def local_cpus() -> int:
    """The CPUs this process may run on: the size of a local Ray."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


def task_resources(spec: RunSpec, cluster_gpus: float, gpu_share: float) -> dict[str, float]:
    """What one run's task asks Ray for: its threads as CPUs, and ``gpu_share`` of a GPU when it
    computes on cuda (asked for, or ``auto`` on a cluster with a GPU).

    >>> from localist_core.model.config import TrainConfig
    >>> spec = RunSpec("r", "attention", None, TrainConfig(threads=3), ())
    >>> task_resources(spec, 0, 0.25), task_resources(spec, 8, 0.25)
    ({'num_cpus': 3, 'num_gpus': 0}, {'num_cpus': 3, 'num_gpus': 0.25})
    """
    device = spec.train.device
    on_gpu = device == "cuda" or (device == "auto" and cluster_gpus > 0)
    return {"num_cpus": spec.train.threads, "num_gpus": gpu_share if on_gpu else 0}


def slots(nodes: list[dict], resources: dict[str, float]) -> int:
    """How many tasks asking for ``resources`` the live nodes (``ray.nodes()``) run at once.

    >>> node = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}
    >>> slots([node], {"num_cpus": 2, "num_gpus": 0})
    4
    >>> slots([node], {"num_cpus": 1, "num_gpus": 0.1})     # ten tenths of a GPU, eight CPUs
    8
    """
    def fit(have: float, need: float) -> int:
        return math.floor(have / need + 1e-9)   # 1.0 // 0.1 is 9 in floating point

    total = 0
    for node in nodes:
        if node.get("Alive"):
            have = node.get("Resources") or {}
            n = fit(have.get("CPU", 0.0), resources["num_cpus"])
            if resources["num_gpus"]:
                n = min(n, fit(have.get("GPU", 0.0), resources["num_gpus"]))
            total += n
    return total


def check_address(address: str) -> None:
    """A ``HOST:PORT`` address must answer a TCP connection within 5 s: Ray itself retries an
    unreachable one for minutes. ``auto``, ``local`` and ``ray://`` addresses are Ray's to check."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise ConnectionError(f"no Ray cluster answers at {address} ({e.strerror or e})") from None


def _run_task(spec: RunSpec, corpus: Corpus, cache_dir: str, runs_dir: str,
              prompts: list[dict] | None, eval_tokens: int | None, test_eval: bool) -> dict:
    """One run inside a Ray worker: ``run_one`` without progress bars (the driver shows one)."""
    return run_one(spec, corpus, cache_dir, runs_dir, prompts, eval_tokens, progress=False,
                   test_eval=test_eval)


def _start(ray, address: str | None, num_cpus: int | None) -> bool:
    """Connect to ``address``, or start a local Ray of ``num_cpus`` CPUs (default: this
    machine's); False when this process is connected already (then it is left as it is)."""
    if ray.is_initialized():
        return False
    opts = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address:
        check_address(address)
        try:
            ray.init(address=address, **opts)
        except ConnectionError as e:
            raise ConnectionError(f"cannot connect to the Ray cluster at {address}: {e}") from None
    else:   # "local": a new Ray of our own, even where $RAY_ADDRESS names a cluster
        ray.init(address="local", num_cpus=num_cpus or local_cpus(), **opts)
    return True


def ray_sweep(runs: list[RunSpec], corpus: Corpus, cache_dir: str | Path, runs_dir: str | Path,
              prompts: list[dict] | None = None, eval_tokens: int | None = None,
              progress: bool = True, test_eval: bool = True, address: str | None = None,
              gpu_share: float = DEFAULT_GPU_SHARE, num_cpus: int | None = None) -> list[dict]:
    """``run_sweep`` on Ray: every unfinished run as one task, as many at once as the cluster
    holds; return every run's result, in the order of ``runs``.

    ``address`` names an existing cluster; without it a local Ray of ``num_cpus`` CPUs (default:
    this machine's) is started and shut down again. A process already connected to Ray uses that
    connection. Nothing is started when every run is finished already.
    """
    if not 0 < gpu_share <= 1:
        raise ValueError(f"gpu_share must be in (0, 1], got {gpu_share}")
    ray = import_ray()
    cache_dir, runs_dir = Path(cache_dir).resolve(), Path(runs_dir).resolve()   # for every node
    prepare_cache(cache_dir, corpus)
    todo = [r for r in runs if not finished(cache_dir, r)]
    done = len(runs) - len(todo)
    results: dict[str, dict] = {}
    if todo:
        started = _start(ray, address, num_cpus)
        try:
            results = _schedule(ray, todo, corpus, cache_dir, runs_dir, prompts, eval_tokens,
                                progress, test_eval, gpu_share, local=started and not address,
                                total=len(runs), done=done)
        finally:
            if started:
                ray.shutdown()
    write_progress(cache_dir, runs_total=len(runs), runs_done=len(runs), current=None,
                   phase="done", in_flight=[], executor="ray")
    return [results.get(r.run_id) or read_result(cache_dir / f"{r.run_id}.json") for r in runs]


def _schedule(ray, todo: list[RunSpec], corpus: Corpus, cache_dir: Path, runs_dir: Path,
              prompts, eval_tokens, progress: bool, test_eval: bool, gpu_share: float,
              local: bool, total: int, done: int) -> dict[str, dict]:
    """Submit ``todo`` as tasks, at most as many at once as the cluster holds, and collect
    their results (run id → result) as they finish. A failed run cancels the others and
    raises its own error."""
    gpus = ray.cluster_resources().get("GPU", 0.0)
    shapes = {r.run_id: task_resources(r, gpus, gpu_share) for r in todo}
    _check_fits(ray.nodes(), shapes, local)
    corpus_ref = ray.put(corpus)
    remotes: dict[tuple, object] = {}

    def submit(spec: RunSpec):
        shape = shapes[spec.run_id]
        key = (shape["num_cpus"], shape["num_gpus"])
        if key not in remotes:
            # A run given no GPU on a cluster that has some must not see one (docstring).
            env = {} if shape["num_gpus"] or not gpus else {
                "runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}
            remotes[key] = ray.remote(**shape, **env)(_run_task)
        return remotes[key].remote(spec, corpus_ref, str(cache_dir), str(runs_dir), prompts,
                                   eval_tokens, test_eval)

    pending, in_flight, busy = list(todo), {}, set()
    results: dict[str, dict] = {}
    bar = tqdm(total=total, initial=done, disable=not progress, unit="run", desc="sweep (ray)")

    def report() -> None:
        ids = [s.run_id for s in in_flight.values()]
        write_progress(cache_dir, runs_total=total, runs_done=done, current=(ids or [None])[0],
                       phase="running", in_flight=ids[:IN_FLIGHT_SHOWN],
                       runs_in_flight=len(ids), executor="ray")

    try:
        while pending or in_flight:
            nodes = ray.nodes()     # looked at again each time: an autoscaler may add nodes
            for spec in list(pending):
                # Two runs that share a checkpoint folder (an --eval-beta run and its trained
                # run) never train at once.
                if len(in_flight) >= max(1, slots(nodes, shapes[spec.run_id])):
                    break
                if run_dir_for(spec) not in busy:
                    in_flight[submit(spec)] = spec
                    busy.add(run_dir_for(spec))
                    pending.remove(spec)
            report()
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=WAIT_S)
            for ref in ready:
                spec = in_flight.pop(ref)
                busy.discard(run_dir_for(spec))
                try:
                    results[spec.run_id] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    # The run's own error, as run_sweep would raise it (the CLI turns a user's
                    # error into one line); the remote traceback stays chained to it.
                    e.cause.add_note(f"in run {spec.run_id}, a Ray task")
                    raise e.cause from e
                except ray.exceptions.OutOfMemoryError as e:     # Ray's memory monitor
                    raise MemoryError(f"run {spec.run_id} was stopped by Ray for lack of "
                                      f"memory on its node ({str(e).splitlines()[0]})") from e
                done += 1
                bar.update()
    except BaseException:
        for ref in in_flight:       # their checkpoints stay: a rerun resumes them
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
    return results


def _check_fits(nodes: list[dict], shapes: dict[str, dict], local: bool) -> None:
    """A run no live node can hold would wait for ever: refused on the local Ray; on a cluster
    (where an autoscaler may add a node) a warning."""
    for run_id, shape in shapes.items():
        if slots(nodes, shape):
            continue
        need = f"{shape['num_cpus']} CPUs" + (f" and {shape['num_gpus']:g} GPU"
                                              if shape["num_gpus"] else "")
        if local:
            have = max(((n.get("Resources") or {}) for n in nodes if n.get("Alive")),
                       key=lambda r: r.get("CPU", 0.0), default={})
            gpus = f"{have['GPU']:g} GPU" if have.get("GPU") else "no GPU"
            raise ValueError(f"run {run_id} asks Ray for {need} (threads=, device=), more than "
                             f"the local Ray has ({have.get('CPU', 0.0):g} CPUs, {gpus}); "
                             f"lower threads=, or give --ray-address")
        print(f"warning: run {run_id} asks Ray for {need}, more than any live node of the "
              f"cluster has; it waits until one joins", file=sys.stderr)
        return
