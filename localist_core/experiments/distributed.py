"""Data-parallel training (torch.distributed): N processes started by ``torchrun`` train one model,
each on its own slice of every global batch. Without torchrun each helper here is a no-op for one
process (rank 0 of 1), and no process group is ever made.
"""
from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import torch
import torch.distributed as torch_dist
from torch import nn

from ..model.precision import resolve_device

BACKENDS = ("none", "gloo", "nccl")     # "none": one process, no process group


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run: rank ``rank`` of ``world_size`` processes,
    ``local_rank`` on its machine (the CUDA device it uses), and the process group's backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    def __post_init__(self) -> None:
        if not (isinstance(self.world_size, int) and self.world_size >= 1):
            raise ValueError(f"world_size must be an integer ≥ 1, got {self.world_size!r}")
        if not (isinstance(self.rank, int) and 0 <= self.rank < self.world_size):
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank!r}")
        if not (isinstance(self.local_rank, int) and self.local_rank >= 0):
            raise ValueError(f"local_rank must be an integer ≥ 0, got {self.local_rank!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    @property
    def active(self) -> bool:
        """More than one process: the collectives below really communicate."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that evaluates, writes checkpoints and prints."""
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """This rank's contiguous rows of a global batch of ``batch_size``; every rank gets
        ``batch_size / world_size`` rows, so the mean of the ranks' means is the batch's mean.

        >>> Distributed(rank=1, world_size=2).shard(8)
        slice(4, 8, None)
        """
        self.check_batch_size(batch_size)
        rows = batch_size // self.world_size
        return slice(self.rank * rows, (self.rank + 1) * rows)

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a global batch that does not split into equal slices, one per process."""
        if batch_size % self.world_size:
            n = self.world_size
            lower, upper = batch_size - batch_size % n, batch_size + n - batch_size % n
            nearest = " or ".join(str(b) for b in (lower, upper) if b > 0)
            raise ValueError(f"batch_size={batch_size} does not split evenly over {n} processes: "
                             f"batch_size is the global batch and every process takes an equal "
                             f"slice of it; give a multiple of {n} (e.g. {nearest})")

    def device_for(self, kind: str) -> str:
        """The torch device this rank computes on, for a run on ``kind`` ("cpu" or "cuda"): one
        process per GPU, ``cuda:<local_rank>``."""
        return f"cuda:{self.local_rank}" if kind == "cuda" and self.active else kind

    def _comm_device(self) -> str:
        # NCCL reduces tensors on the GPU, gloo on the CPU.
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"

    def barrier(self) -> None:
        """Wait until every rank reaches this point (a no-op for one process)."""
        if self.active:
            if self.backend == "nccl":
                torch_dist.barrier(device_ids=[self.local_rank])
            else:
                torch_dist.barrier()

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (returned unchanged for one process); every rank
        gets the same numbers back, so decisions taken on them agree."""
        if not self.active:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self._comm_device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
        return dict(zip(values, (t / self.world_size).tolist()))

    def max_over_ranks(self, value: float) -> float:
        """The largest of the ranks' ``value`` (``value`` itself for one process)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return float(t.item())

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DistributedDataParallel (its gradients averaged over the ranks
        during backward), or ``module`` itself for one process."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel
        # find_unused_parameters: an adaptive-softmax tail whose cluster has no target in this
        # rank's slice gets no gradient here (DDP warns once that it found none unused: it
        # checks the first step only). A parameter unused on every rank keeps grad None, and
        # AdamW skips it, as it does for one process.
        return DistributedDataParallel(
            module, device_ids=[self.local_rank] if self.backend == "nccl" else None,
            find_unused_parameters=True)


ONE_PROCESS = Distributed()


def _env_int(env: Mapping[str, str], key: str) -> int:
    text = env.get(key)
    if text is None:
        raise ValueError(f"WORLD_SIZE={env['WORLD_SIZE']} but {key} is not set; start "
                         f"data-parallel training with torchrun")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {text!r}") from None


def from_env(env: Mapping[str, str] | None = None) -> Distributed:
    """Where this process stands, read from the variables torchrun sets (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``); one process when ``WORLD_SIZE`` is unset or 1. Nothing is
    started: the backend stays "none"."""
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE") is None or _env_int(env, "WORLD_SIZE") == 1:
        return ONE_PROCESS
    return Distributed(rank=_env_int(env, "RANK"), world_size=_env_int(env, "WORLD_SIZE"),
                       local_rank=_env_int(env, "LOCAL_RANK"))


def start(device: str = "auto", env: Mapping[str, str] | None = None) -> Distributed:
    """Join the process group torchrun describes, for a run on ``device`` (as TrainConfig's
    ``device``): gloo on the CPU, NCCL on CUDA with one GPU per process. One process: nothing
    to join, ``ONE_PROCESS``."""
    info = from_env(env)
    if not info.active:
        return info
    kind, _ = resolve_device(device)
    backend = "nccl" if kind == "cuda" else "gloo"
    if kind == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={info.local_rank} but torch sees "
                             f"{torch.cuda.device_count()} CUDA devices: start at most one "
                             f"process per GPU")
        torch.cuda.set_device(info.local_rank)
    # torchrun's MASTER_ADDR and MASTER_PORT (env://) say where the ranks meet.
    torch_dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    return replace(info, backend=backend)


def stop() -> None:
    """Leave the process group, if this process is in one. A rank that stops on an error closes
    its connections, so the others fail in their next collective instead of waiting on it."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        # A DistributedDataParallel wrapper still alive in a reference cycle keeps the gloo
        # group's threads with it until the interpreter is torn down, and a rank then aborts
        # at exit ("terminate called without an active exception", SIGABRT). Free it first.
        gc.collect()
        torch_dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[Distributed]:
    """``start`` on entry, ``stop`` on the way out, whatever happened in between."""
    try:
        yield start(device)
    finally:
        stop()


def one_process(env: Mapping[str, str] | None = None) -> Distributed:
    """``ONE_PROCESS``, for a caller that does not take part in data parallelism; refused under
    torchrun, where N copies of it would each train the whole model into the same files."""
    info = from_env(env)
    if info.active:
        raise ValueError(f"started by torchrun with {info.world_size} processes, but only "
                         f"`train` splits one model over processes; run this without torchrun")
    return ONE_PROCESS
