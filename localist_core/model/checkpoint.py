"""Checkpoints: a folder of ``model.safetensors`` + ``config.json`` + ``vocab.json``. Never pickle.

The anchor table (local entropy per word) is the ``local_entropy`` tensor inside the safetensors
file, and so are the bigram partition's Kneser–Ney tables (``bigram.TABLE_NAMES``), at the size
the config names (``bigram_pairs``). Every file is checked before it is parsed (the generic
checks are in ``files``): a pickle is refused unread, a truncated or foreign file is reported
with its name and the problem, and the weights' header is checked against the shapes the config
implies before any weight is read.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .bigram import TABLE_NAMES, BigramTables
from .config import ConfigError, ModelConfig, TrainConfig, config_from_dict, config_to_dict
from .files import (
    KiB,
    MiB,
    UnsafeFileError,
    atomic_write,
    check_safetensors_file,
    checked_size,
    read_json_file,
    refuse_pickle,
    safetensors_writer,
    short_repr,
)
from .tokenizer import Tokenizer
from .transformer import LocalistLM

FORMAT = "localist-checkpoint"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"
# How weights are stored (``export --precision``), not how they are computed
# (config.COMPUTE_PRECISIONS).
STORAGE_PRECISIONS = ("fp32", "fp16", "int8")
# Tensors stored as int8 with one scale per row in the "int8" precision: the big embedding and
# the adaptive-softmax tails.
INT8_PREFIXES = ("tok_emb.weight", "head.tail.")
SCALE_SUFFIX = "::row_scale"

# Limits (README "Limits"): the most bytes of each file a checkpoint check reads, compared with
# stat() before the file is opened, so an oversized file is refused unread (the safetensors
# header's limit is files.MAX_HEADER_BYTES). Measured on the shipped checkpoints: config.json
# 1.4 KB, vocab.json 368 KB (33,278 words; WikiText-103's 268k words would be about 3 MB).
MAX_CONFIG_BYTES = 64 * KiB
MAX_VOCAB_BYTES = 8 * MiB
# The most parameters a checkpoint may hold (the papers' size is ≈23M, the shipped models 10M):
# checked from the safetensors header against the config before any weight is read.
MAX_PARAMETERS = 250_000_000


class CheckpointError(UnsafeFileError):
    """A checkpoint file is unsafe, truncated, foreign or inconsistent."""


def _read_json(path: Path) -> dict:
    data = read_json_file(path, MAX_CONFIG_BYTES, CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _quantize(state: dict[str, torch.Tensor], precision: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()     # a model trained on a GPU is stored from the CPU
        if precision == "fp32" or not t.is_floating_point():
            out[name] = t.float() if t.is_floating_point() else t
        elif precision == "int8" and t.dim() == 2 and name.startswith(INT8_PREFIXES):
            scale = t.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
            out[name] = torch.round(t / scale).clamp(-127, 127).to(torch.int8)
            out[name + SCALE_SUFFIX] = scale.float()
        elif name == "local_entropy" or name in TABLE_NAMES:
            out[name] = t.float()  # the anchor and bigram tables decide blocks; keep them exact
        else:
            out[name] = t.half()
    return out


def _dequantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {}
    for name, t in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = tensors.get(name + SCALE_SUFFIX)
        if scale is not None:
            state[name] = t.float() * scale
        else:   # a bool mask (the punctuation partition's boundary ids) stays as it is
            state[name] = t.float() if t.is_floating_point() else t
    return state


def save_checkpoint(path: str | os.PathLike, model: LocalistLM, tokenizer: Tokenizer,
                    train_cfg: TrainConfig | None = None, meta: dict | None = None,
                    precision: str = "fp32") -> Path:
    """Write the checkpoint folder; each file is written atomically (temp file, then rename)."""
    if precision not in STORAGE_PRECISIONS:
        raise ValueError(f"precision must be one of {STORAGE_PRECISIONS}, got {precision!r}")
    if len(tokenizer) != model.cfg.vocab_size:
        raise CheckpointError(f"vocabulary has {len(tokenizer)} words but the model "
                              f"{model.cfg.vocab_size}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _quantize(model.state_dict(), precision)
    atomic_write(folder / WEIGHTS, safetensors_writer(tensors))
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "precision": precision,
              "model": config_to_dict(model.cfg),
              "train": config_to_dict(train_cfg) if train_cfg is not None else None,
              "meta": meta or {}}
    atomic_write(folder / CONFIG, lambda p: Path(p).write_text(json.dumps(config, indent=1)))
    atomic_write(folder / VOCAB, lambda p: tokenizer.save(p))
    return folder


def read_config(path: str | os.PathLike) -> dict:
    """The checkpoint's config.json (at most MAX_CONFIG_BYTES), checked for format and version,
    and for the types of ``train``, ``meta`` and ``precision`` (``model`` is checked by
    ``ModelConfig``)."""
    folder = _folder(path)
    where = folder / CONFIG
    cfg = _read_json(where)
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a localist checkpoint config "
                              f"(format={short_repr(cfg.get('format'))})")
    version = cfg.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {short_repr(version)} is not supported "
                              f"(this code reads {FORMAT_VERSION})")
    if cfg.get("precision", "fp32") not in STORAGE_PRECISIONS:
        raise CheckpointError(f"{where}: precision {short_repr(cfg.get('precision'))} is not "
                              f"one of {STORAGE_PRECISIONS}")
    if not isinstance(cfg.get("meta", {}), (dict, type(None))):
        raise CheckpointError(f"{where}: 'meta' must be an object")
    _train_config(where, cfg.get("train"))
    return cfg


def _train_config(where: Path, train) -> TrainConfig | None:
    """``train`` of a config.json: null, or an object whose known keys are valid TrainConfig
    values (unknown keys are ignored: they only describe how the model was trained)."""
    if train is None:
        return None
    if not isinstance(train, dict):
        raise CheckpointError(f"{where}: 'train' must be an object or null, got "
                              f"{type(train).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**{k: v for k, v in train.items() if k in known})
    except ConfigError as e:
        raise CheckpointError(f"{where}: bad train config: {e}") from None


def _folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    refuse_pickle(p, CheckpointError)
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such checkpoint folder")
    return p


def _model_config(folder: Path, cfg: dict) -> ModelConfig:
    """The model config; ModelConfig refuses wrong types and sizes over MODEL_SIZE_LIMITS."""
    model = cfg.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{folder / CONFIG}: bad model config: 'model' must be an object, "
                              f"got {type(model).__name__}")
    try:
        cfg = config_from_dict(ModelConfig, model)
    except ConfigError as e:
        raise CheckpointError(f"{folder / CONFIG}: bad model config: {e}") from None
    if not cfg.cutoffs:   # ModelConfig allows none (partition tests); the adaptive head does not
        raise CheckpointError(f"{folder / CONFIG}: bad model config: cutoffs must not be empty")
    return cfg


def _tokenizer(folder: Path) -> Tokenizer:
    """The vocabulary, read only when vocab.json is at most MAX_VOCAB_BYTES and parsed here (not
    by Tokenizer.load) so a non-string word is refused as a CheckpointError."""
    path = folder / VOCAB
    data = read_json_file(path, MAX_VOCAB_BYTES, CheckpointError)
    words = data.get("words") if isinstance(data, dict) else None
    if not isinstance(words, list):
        raise CheckpointError(f"{path}: not a vocabulary file (expected {{'words': [...]}})")
    if not all(type(w) is str for w in words):
        raise CheckpointError(f"{path}: every word must be a string")
    try:
        return Tokenizer(words)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


@functools.lru_cache(maxsize=32)
def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of a model with ``cfg``, from a one-layer model on the meta device
    (nothing allocated) whose block tensors are repeated for every layer: all blocks are built
    from the same config, and one layer costs the same few milliseconds whatever n_layers is
    (the full 64-layer meta build costs ~120 ms)."""
    with torch.device("meta"):
        one = LocalistLM(dataclasses.replace(cfg, n_layers=1)).state_dict()
    shapes = {}
    for name, t in one.items():
        if name.startswith("blocks.0."):
            for i in range(cfg.n_layers):
                shapes[f"blocks.{i}.{name[len('blocks.0.'):]}"] = tuple(t.shape)
        else:
            shapes[name] = tuple(t.shape)
    return shapes


def _check_shapes(folder: Path, model_cfg: ModelConfig, header: dict) -> None:
    """The header's tensors against the shapes the config implies (names, shapes, each int8
    tensor's row scales), and the parameter count against MAX_PARAMETERS: arithmetic on the
    header, before any weight is read."""
    weights = folder / WEIGHTS
    try:
        want = expected_shapes(model_cfg)
    except (ValueError, RuntimeError, OverflowError) as e:   # torch's own checks of the shape
        raise CheckpointError(f"{folder / CONFIG}: no model can be built from this config "
                              f"({type(e).__name__}: {e})") from None
    n_params = sum(math.prod(s) for s in want.values())
    if n_params > MAX_PARAMETERS:
        raise CheckpointError(f"{folder / CONFIG}: the model has {n_params:,} parameters, over "
                              f"this server's limit of {MAX_PARAMETERS:,}")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    have = {k: tuple(v["shape"]) for k, v in tensors.items() if not k.endswith(SCALE_SUFFIX)}
    if have.keys() != want.keys():
        gone, extra = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
        raise CheckpointError(f"{weights}: does not match {folder / CONFIG}: missing tensors "
                              f"{short_repr(gone[:3])}, unexpected tensors {short_repr(extra[:3])}")
    for name, shape in want.items():
        if have[name] != shape:
            raise CheckpointError(f"{weights}: does not match {folder / CONFIG}: {name} has "
                                  f"shape {list(have[name])}, the config implies {list(shape)}")
    for name, v in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            of = name[: -len(SCALE_SUFFIX)]
            if of not in want or len(want[of]) != 2 or tuple(v["shape"]) != (want[of][0], 1):
                raise CheckpointError(f"{weights}: row scale {short_repr(name)} has shape "
                                      f"{v['shape']}, which fits no tensor of {folder / CONFIG}")
    _check_dtypes(weights, model_cfg, tensors)


# safetensors' names of torch's dtypes; a float tensor may be stored as any float (the fp16
# export) or as I8 with a row scale (the int8 export), any other tensor only as the model's own.
_STORED = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
           torch.int32: "I32", torch.int64: "I64"}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def _check_dtypes(weights: Path, model_cfg: ModelConfig, tensors: dict) -> None:
    """Each tensor's stored dtype against the model's (header only): integer or bool weights
    loaded silently before, and gave an infinite perplexity."""
    with torch.device("meta"):
        one = LocalistLM(dataclasses.replace(model_cfg, n_layers=1)).state_dict()
    for name, v in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            ok, need = v["dtype"] in FLOAT_DTYPES, "a float"
        else:
            t = one[re.sub(r"^blocks\.\d+\.", "blocks.0.", name)]
            if t.is_floating_point():
                ok = v["dtype"] in FLOAT_DTYPES or (v["dtype"] == "I8"
                                                    and name + SCALE_SUFFIX in tensors)
                need = "a float (or I8 with a row scale)"
            else:
                ok, need = v["dtype"] == _STORED.get(t.dtype), _STORED.get(t.dtype, str(t.dtype))
        if not ok:
            raise CheckpointError(f"{weights}: tensor {short_repr(name)} is stored as "
                                  f"{v['dtype']}; the model needs {need}")


def _checked(folder: Path) -> tuple[dict, ModelConfig, Tokenizer]:
    """Every check, cheapest first: the files' sizes (stat only), config.json, the weights'
    header against the config (names, shapes, parameter count), then the vocabulary."""
    checked_size(folder / VOCAB, MAX_VOCAB_BYTES, CheckpointError)
    cfg = read_config(folder)
    model_cfg = _model_config(folder, cfg)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    _check_shapes(folder, model_cfg, check_safetensors_file(weights, CheckpointError))
    tok = _tokenizer(folder)
    if len(tok) != model_cfg.vocab_size:
        raise CheckpointError(f"{folder / VOCAB}: {len(tok)} words, but the config says "
                              f"vocab_size={model_cfg.vocab_size}")
    return cfg, model_cfg, tok


def check_checkpoint(path: str | os.PathLike) -> dict:
    """Check a checkpoint folder without reading its weights: file sizes, config (types and
    MODEL_SIZE_LIMITS), the safetensors header against the shapes the config implies, and the
    vocabulary. Returns the config; raises CheckpointError naming the file and the problem.
    Milliseconds for the shipped checkpoints; ``ui.catalogue.list_checkpoints`` re-runs it only
    when a file changes."""
    return _checked(_folder(path))[0]


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[LocalistLM, Tokenizer]:
    """Load ``(model, tokenizer)`` from a checkpoint folder, in eval mode. Never unpickles."""
    folder = _folder(path)
    cfg, model_cfg, tok = _checked(folder)   # nothing is read unless every check passes
    weights = folder / WEIGHTS
    try:
        state = _dequantize(load_file(str(weights)))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{weights}: cannot be read as safetensors ({e})") from None
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{weights}: tensor {name} holds NaN or inf values")
    if model_cfg.partition == "bigram":      # sorted codes, log-probabilities ≤ 0
        try:
            BigramTables.from_tensors(state, str(weights))
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    model = LocalistLM(model_cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: does not match {folder / CONFIG}: "
                              f"{str(e).splitlines()[0]} {str(e).splitlines()[1:2]}") from None
    model.train_config = cfg.get("train")
    model.meta = cfg.get("meta") or {}
    model.precision = cfg.get("precision", "fp32")
    return model.to(device).eval(), tok


def weights_sha256(folder: str | os.PathLike) -> str:
    """The SHA-256 of a checkpoint folder's weights file, read in 1 MiB chunks: what names a
    base model (the experts' results record it; the app matches a checkpoint to them by it)."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
