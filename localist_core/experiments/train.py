"""Training (docs/design.md, "Training protocols"): the *penalty* protocol (one model per λ,
λ_f = 0 in training) and the *dial* protocol (λ_f drawn per batch, one model for the whole dial).

Every step draws its batch, its dial value and its dropout from generators seeded by
(seed, step), and the trainer state (weights, AdamW moments, step, wall time) is saved as
safetensors + JSON. So a run that is interrupted and resumed ends with the same weights as a run
that never stopped.

Under ``torchrun --nproc_per_node N`` (distributed.py) N processes train the one model: each draws
the same global batch and takes its own slice, DistributedDataParallel averages the gradients,
and rank 0 alone evaluates, writes and prints. With dropout = 0 the weights equal one process's
up to float rounding; with dropout > 0 the masks depend on N. A run resumes only with its own N.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..analysis.evaluate import evaluate_stream
from ..model.bigram import kn_bigram_tables
from ..model.blocks import local_entropy_table
from ..model.checkpoint import load_model, read_config, save_checkpoint
from ..model.config import (
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    what_is_computed,
)
from ..model.dial import Dial
from ..model.files import atomic_write, remove_own_temps, safetensors_writer
from ..model.precision import resolve_device, resolve_precision
from ..model.transformer import LocalistLM, autocast_ctx
from .data import Corpus, random_windows
from .distributed import Distributed, one_process

LAST = "last"            # sub-folder holding the resumable trainer state
TRAINER_STATE = "trainer.safetensors"
TRAINER_META = "trainer.json"     # a readable copy of the step, times and history
MODEL_PREFIX = "model::"          # weights inside trainer.safetensors
DIAL_EXACT_P = 0.15      # dial protocol: P(λ_f = 0) = P(λ_f = 1) = 0.15, else λ_f ~ U(0, 1)


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or inf."""


@dataclass
class TrainResult:
    model: LocalistLM
    steps: int
    tokens: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    stopped: str = "max_steps"      # "max_steps", "time_budget" (ended early) or "interrupted"
    precision: str = "fp32"         # the compute precision used ("fp32" or "bf16")
    precision_reason: str = ""      # why (model/precision.py)
    device: str = "cpu"             # the device it ran on ("cpu" or "cuda")
    device_reason: str = ""         # why
    world_size: int = 1             # processes that trained it together (torchrun)
    backend: str = "none"           # their process group's backend ("gloo", "nccl")


def make_model(model_cfg: ModelConfig, corpus: Corpus, seed: int = 1234) -> LocalistLM:
    """A fresh model with its anchor table computed from the training split (the warm-up pass),
    and for partition=bigram the Kneser–Ney tables of the same split."""
    torch.manual_seed(seed)
    table = local_entropy_table(corpus.train.numpy(), model_cfg.vocab_size)
    tok = getattr(corpus, "tokenizer", None)
    if model_cfg.partition == "punctuation" and tok is None:
        raise ValueError("the punctuation partition needs the corpus's vocabulary")
    bigram = (kn_bigram_tables(corpus.train.numpy(), model_cfg.vocab_size,
                               capacity=model_cfg.bigram_pairs)
              if model_cfg.partition == "bigram" else None)
    return LocalistLM(model_cfg, table, words=tok.words if tok is not None else None,
                      bigram=bigram)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def dropout_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of the dropout masks of ``step`` on rank ``rank``. Rank 0 keeps the one-process
    seed; rank r adds r·2⁴⁰, apart from every rank-0 seed while seed + 7919·step < 2⁴⁰."""
    return seed + 7919 * step + (rank << 40)


def sample_dial_locality(gen: torch.Generator) -> float:
    u = float(torch.rand((), generator=gen))
    if u < DIAL_EXACT_P:
        return 0.0
    if u < 2 * DIAL_EXACT_P:
        return 1.0
    return float(torch.rand((), generator=gen))


def lr_at(cfg: TrainConfig, progress: float, step: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio·lr`` as progress goes 0 → 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


def make_optimizer(model: LocalistLM, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "emb" not in n)]
    # fused: one kernel per step over all parameters. The unfused loop spent ~85 ms per step
    # on cpu-ref's 11.7M parameters (one thread), fused ~11 ms (BENCHMARKS.md).
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8, fused=True)


def uses_bf16(cfg: TrainConfig, device: str = "cpu") -> bool:
    """Whether ``cfg.precision`` resolves to bf16 on ``device`` of this machine (an explicit
    fp32 or bf16 is kept as asked: ``resolve_precision``)."""
    return resolve_precision(cfg.precision, device)[0] == "bf16"


def training_loss(model: LocalistLM, cfg: TrainConfig, x, y, dial: Dial,
                  bf16: bool | None = None) -> tuple[torch.Tensor, dict]:
    """Mean NLL plus the configured penalty terms; returns the loss and its parts.

    ``bf16`` is the resolved precision; None resolves ``cfg.precision`` here."""
    kind = x.device.type
    if bf16 is None:
        bf16 = uses_bf16(cfg, kind)
    attn_pen = cfg.protocol == "penalty" and cfg.penalty_form == "attention" and cfg.locality > 0
    with autocast_ctx(bf16, kind):
        out = model(x, dial, attention_penalty=attn_pen)
    nll = model.token_nll(out.hidden, y, bf16_matmuls=bf16).mean()
    loss, parts = nll, {"nll": nll.item()}
    if cfg.protocol == "penalty" and cfg.locality > 0:
        if cfg.penalty_form == "attention":
            pen = out.attention_penalty
        elif cfg.penalty_form == "weights":
            pen = model.cross_channel_group_norm()
        else:
            pen = None
        if pen is not None:
            loss = loss + cfg.locality * cfg.penalty_scale * pen
            parts["penalty"] = pen.item()
    if cfg.value_l2 > 0:
        loss = loss + cfg.value_l2 * model.value_sq_norm()
    return loss, parts


class TrainingLoss(torch.nn.Module):
    """``training_loss`` as a module. DistributedDataParallel syncs the gradients of what runs
    in its module's forward, and the loss reaches the head and the penalties outside
    ``LocalistLM.forward``: so it wraps this, not the model.

    Split over N equal slices, every term's mean over the ranks is the global batch's: the NLL
    and the attention penalty are means over the slice's rows, and the weight penalties
    (``cross_channel_group_norm``, ``value_sq_norm``) are the same on every rank. So the
    averaged gradient is the global batch's gradient.
    """

    def __init__(self, model: LocalistLM, cfg: TrainConfig, bf16: bool):
        super().__init__()
        self.model, self.cfg, self.bf16 = model, cfg, bf16

    def forward(self, x: torch.Tensor, y: torch.Tensor, locality: float
                ) -> tuple[torch.Tensor, dict]:
        return training_loss(self.model, self.cfg, x, y, Dial(locality=locality), bf16=self.bf16)


def _save_trainer(folder: Path, model, tok, cfg, opt, step, train_s, history, meta) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"{MODEL_PREFIX}{k}": v.detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    scalars = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if not st:
                continue
            n = names[id(p)]
            tensors[f"{n}::exp_avg"] = st["exp_avg"].cpu().contiguous()
            tensors[f"{n}::exp_avg_sq"] = st["exp_avg_sq"].cpu().contiguous()
            scalars[n] = float(st["step"])
    state = {"step": step, "train_seconds": train_s, "history": history, "adam_steps": scalars,
             "precision": meta.get("compute_precision"),
             "precision_reason": meta.get("compute_precision_reason"),
             "device": meta.get("device"), "device_reason": meta.get("device_reason"),
             "world_size": meta.get("world_size", 1)}
    header = {"state": json.dumps(state), "model": json.dumps(config_to_dict(model.cfg)),
              "train": json.dumps(config_to_dict(cfg))}
    # Resuming reads this one file only, and it is replaced in one atomic step: a kill at any
    # moment leaves the previous complete state or the new one, never the weights of one step
    # with the optimiser moments or step count of another.
    # It is written first, so a full disk (the biggest file fails first) leaves all of
    # ``folder`` at the previous checkpoint, and a write interrupted later keeps the new state.
    atomic_write(folder / TRAINER_STATE, safetensors_writer(tensors, metadata=header))
    atomic_write(folder / TRAINER_META, lambda p: Path(p).write_text(json.dumps(state)))
    # A loadable checkpoint of the current weights, for inspection (load_model(OUT/last)).
    save_checkpoint(folder, model, tok, cfg, meta={**meta, "step": step})


def _load_trainer(folder: Path, model, opt, cfg: TrainConfig) -> tuple[int, float, list, dict]:
    tensors = load_file(str(folder / TRAINER_STATE))
    with safe_open(str(folder / TRAINER_STATE), "pt") as f:
        header = f.metadata() or {}
    if "state" in header:
        state = json.loads(header["state"])
        saved = {"model": json.loads(header["model"]), "train": json.loads(header["train"])}
        weights = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items()
                   if k.startswith(MODEL_PREFIX)}
    else:  # the older layout: weights in the checkpoint files beside the optimiser state
        state = json.loads((folder / TRAINER_META).read_text())
        saved = read_config(folder)
        weights = load_model(folder)[0].state_dict()
    try:   # a state written before `precision` holds bf16=true/false: read it as precision
        saved_train = config_to_dict(config_from_dict(TrainConfig, saved["train"]))
    except (ValueError, TypeError):
        saved_train = saved["train"]
    try:   # a state written before a model field was added holds no value for it: its default
        saved_model = config_to_dict(config_from_dict(ModelConfig, saved["model"]))
    except (ValueError, TypeError):
        saved_model = saved["model"]
    if (saved_model != config_to_dict(model.cfg)
            or what_is_computed(saved_train) != what_is_computed(config_to_dict(cfg))):
        raise ValueError(f"{folder} holds a run with another config; resume with the same "
                         f"config, or start again (--no-resume, or another --out)")
    model.load_state_dict(weights)
    params = dict(model.named_parameters())
    for n, s in state["adam_steps"].items():
        p = params[n]
        opt.state[p] = {"step": torch.tensor(s),    # Adam keeps its step count on the CPU
                        "exp_avg": tensors[f"{n}::exp_avg"].to(p.device, copy=True),
                        "exp_avg_sq": tensors[f"{n}::exp_avg_sq"].to(p.device, copy=True)}
    return state["step"], state["train_seconds"], state["history"], state


def _check_world_size(folder: Path, state: dict, dist: Distributed) -> None:
    """A run resumes only with the number of processes it started with: the dropout masks (and
    the order of the float sums) depend on it. States written before data parallelism: one."""
    saved = state.get("world_size", 1)
    if saved != dist.world_size:
        how = ("one process, without torchrun" if saved == 1
               else f"torchrun --nproc_per_node {saved}")
        raise ValueError(f"{folder} holds a run trained by {saved} process(es) "
                         f"(world_size={saved}), not {dist.world_size}: resume it with {how}, "
                         f"or start again (--no-resume, or another --out)")


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus,
          out_dir: str | Path | None = None, resume: bool = True, progress: bool = True,
          stop_after: int | None = None, eval_tokens: int = 32_768, meta: dict | None = None,
          dist: Distributed | None = None) -> TrainResult:
    """Train one model. With ``out_dir`` it checkpoints every ``ckpt_interval`` steps into
    ``out_dir/last`` and resumes from there; the final model is written to ``out_dir``.

    ``stop_after`` ends the run after that many steps *without* finishing it (used to test
    resumption). ``dist`` (``distributed.start()``) makes this process one of N training the
    model together: ``batch_size`` stays the global batch, split into N equal slices; rank 0
    evaluates, writes ``out_dir`` and shows progress, and only its result holds the history.
    With dropout > 0 the masks depend on N (rank r draws its own), so N is part of the run.
    """
    cfg = train_cfg
    dist = dist if dist is not None else one_process()
    rows = dist.shard(cfg.batch_size)       # refuses a batch that does not split evenly
    torch.set_num_threads(cfg.threads)
    device_kind, device_reason = resolve_device(cfg.device)
    device = dist.device_for(device_kind)
    model = make_model(model_cfg, corpus, cfg.seed).to(device)
    opt = make_optimizer(model, cfg)
    step, train_s, history = 0, 0.0, []
    last = Path(out_dir) / LAST if out_dir is not None else None
    meta = {"protocol": cfg.protocol, "penalty_form": cfg.penalty_form, "locality": cfg.locality,
            **(meta or {})}
    for folder in ([Path(out_dir), last] if last is not None and dist.is_main else []):
        remove_own_temps(folder)   # a killed writer's temp files; never a checkpoint
    dist.barrier()
    precision, precision_reason = resolve_precision(cfg.precision, device_kind)
    if last is not None and resume and (last / TRAINER_STATE).is_file():
        step, train_s, history, state = _load_trainer(last, model, opt, cfg)
        _check_world_size(last, state, dist)
        if cfg.precision == "auto" and state.get("precision") in ("fp32", "bf16"):
            # "auto" is decided once per run: a run resumed on other hardware keeps its choice.
            precision = state["precision"]
            why, tag = str(state.get("precision_reason")), " (kept on resume)"
            precision_reason = why if why.endswith(tag) else why + tag
    n_tokens_step = cfg.batch_size * model_cfg.n_ctx
    bf16 = precision == "bf16"
    meta = {**meta, "compute_precision": precision, "compute_precision_reason": precision_reason,
            "device": device_kind, "device_reason": device_reason,
            "world_size": dist.world_size, "backend": dist.backend}
    loss_of = dist.wrap(TrainingLoss(model, cfg, bf16))     # DDP for N > 1
    stopped = "max_steps"
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and dist.is_main),
               unit="step", dynamic_ncols=True,
               desc=f"train {cfg.protocol}/{cfg.penalty_form} λ={cfg.locality}")
    model.train()
    try:
        while step < cfg.max_steps:
            if train_s >= cfg.time_budget_s:
                stopped = "time_budget"
                break
            if stop_after is not None and step >= stop_after:
                stopped = "interrupted"
                break
            t0 = time.perf_counter()
            gen = step_generator(cfg.seed, step)
            x, y = random_windows(corpus.train, cfg.batch_size, model_cfg.n_ctx, gen)
            x, y = x[rows].to(device), y[rows].to(device)     # every rank drew the same batch
            lam = sample_dial_locality(gen) if cfg.protocol == "dial" else 0.0
            torch.manual_seed(dropout_seed(cfg.seed, step, dist.rank))
            frac = step / cfg.max_steps
            if cfg.lr_by_time:
                frac = max(frac, train_s / cfg.time_budget_s)
            lr = lr_at(cfg, frac, step)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, parts = loss_of(x, y, lam)
            # The global batch's numbers (the mean of the slices' means), the same on every
            # rank, so that all ranks stop together on a non-finite loss.
            parts = dist.mean_over_ranks({"loss": loss.item(), **parts})
            loss_value = parts.pop("loss")
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss became {loss_value} at step {step} (lr {lr:.2e}); nothing was saved "
                    f"past the last checkpoint. Lower lr or grad_clip, or use precision=fp32.")
            opt.zero_grad(set_to_none=True)
            loss.backward()             # with N > 1, returns once the gradients are averaged
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if not math.isfinite(float(gnorm)):
                raise TrainingDiverged(f"gradient norm became {float(gnorm)} at step {step}; "
                                       f"lower lr or use precision=fp32.")
            opt.step()
            step += 1
            # The slowest rank's time: every rank adds the same, so the time budget and
            # lr_by_time decide alike everywhere.
            dt = dist.max_over_ranks(time.perf_counter() - t0)
            train_s += dt
            bar.update(1)
            bar.set_postfix(loss=f"{parts['nll']:.3f}", tok_s=f"{n_tokens_step / dt:,.0f}")
            evaluate = step % cfg.eval_interval == 0 or step == cfg.max_steps
            save = last is not None and step % cfg.ckpt_interval == 0
            if evaluate and dist.is_main:
                ev = evaluate_stream(model, corpus.valid, max_tokens=eval_tokens,
                                     with_attention=False)
                model.train()
                history.append({"step": step, "train_seconds": round(train_s, 2),
                                "train_nll": parts["nll"], "valid_ppl": ev["perplexity"],
                                "lr": lr, **{k: v for k, v in parts.items() if k == "penalty"}})
                bar.write(f"step {step}: train nll {parts['nll']:.3f}  valid ppl "
                          f"{ev['perplexity']:.1f}  ({train_s:.0f}s)")
            if save and dist.is_main:
                _save_trainer(last, model, corpus.tokenizer, cfg, opt, step, train_s, history, meta)
            if evaluate or save:
                dist.barrier()          # the other ranks wait while rank 0 evaluates and writes
    finally:
        bar.close()
    if stopped == "time_budget" and progress and dist.is_main:
        print(f"stopped early: time_budget_s={cfg.time_budget_s:g} reached after {step} of "
              f"{cfg.max_steps} steps; this run is not the step-bounded one")
    model.eval()
    if last is not None and dist.is_main:
        _save_trainer(last, model, corpus.tokenizer, cfg, opt, step, train_s, history, meta)
        if stopped != "interrupted":
            save_checkpoint(out_dir, model, corpus.tokenizer, cfg,
                            meta={**meta, "step": step, "train_seconds": round(train_s, 2),
                                  "tokens": step * n_tokens_step, "stopped": stopped})
    dist.barrier()
    return TrainResult(model, step, step * n_tokens_step, train_s, history, stopped, precision,
                       precision_reason, device_kind, device_reason, dist.world_size, dist.backend)
