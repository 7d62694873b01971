"""Checkpoints: a folder of ``model.safetensors`` + ``config.json`` + ``vocab.json``. Never pickle.

The anchor table (local entropy per word) is the ``local_entropy`` tensor inside the safetensors
file. Every file is checked before it is parsed: a pickle is refused unread, a truncated or
foreign file is reported with its name and the problem.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import ConfigError, ModelConfig, TrainConfig, config_from_dict, config_to_dict
from .model import LocalistLM
from .tokenizer import Tokenizer

FORMAT = "localist-checkpoint"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
PRECISIONS = ("fp32", "fp16", "int8")
# Tensors stored as int8 with one scale per row in the "int8" precision: the big embedding and
# the adaptive-softmax tails.
INT8_PREFIXES = ("tok_emb.weight", "head.tail.")
SCALE_SUFFIX = "::row_scale"


class CheckpointError(ValueError):
    """A checkpoint file is unsafe, truncated, foreign or inconsistent."""


def check_safetensors_file(path: Path) -> dict:
    """Raise CheckpointError unless ``path`` is a complete safetensors file; return its header
    (tensor name → dtype, shape, offsets). Only the header is read."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: {path.suffix} files are pickle-based and are refused "
                              f"unread; checkpoints are safetensors + JSON only")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
            n = int.from_bytes(head[:8], "little")
            plausible = len(head) == 9 and 1 < n <= min(size - 8, 100 * 2**20) \
                and head[8:9] == b"{"
            # A header length whose low byte is 0x80 looks like pickle's magic, so the magic
            # only counts when the bytes are not a plausible safetensors header.
            if not plausible and (head[:1] == b"\x80" or head[:2] == b"PK"):
                raise CheckpointError(f"{path}: this is a pickle / torch.save file, not "
                                      f"safetensors; refused unread")
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated ({size} bytes; no safetensors header)")
            f.seek(8)
            if n <= 1 or n > min(size - 8, 100 * 2**20):
                raise CheckpointError(f"{path}: not a safetensors file, or truncated (header "
                                      f"length {n} does not fit a {size}-byte file)")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if not raw.lstrip().startswith(b"{"):
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file, or truncated (header is not valid "
                              f"JSON)") from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"
            and isinstance(v, dict) and "data_offsets" in v]
    if 8 + n + max(ends, default=0) != size:
        raise CheckpointError(f"{path}: truncated or padded: the header describes "
                              f"{8 + n + max(ends, default=0)} bytes, the file has {size}")
    return header


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _quantize(state: dict[str, torch.Tensor], precision: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state.items():
        t = t.detach().contiguous()
        if precision == "fp32" or not t.is_floating_point():
            out[name] = t.float() if t.is_floating_point() else t
        elif precision == "int8" and t.dim() == 2 and name.startswith(INT8_PREFIXES):
            scale = t.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
            out[name] = torch.round(t / scale).clamp(-127, 127).to(torch.int8)
            out[name + SCALE_SUFFIX] = scale.float()
        elif name == "local_entropy":
            out[name] = t.float()  # the anchor table decides ties; keep it exact
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


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, model: LocalistLM, tokenizer: Tokenizer,
                    train_cfg: TrainConfig | None = None, meta: dict | None = None,
                    precision: str = "fp32") -> Path:
    """Write the checkpoint folder; each file is written atomically (temp file, then rename)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if len(tokenizer) != model.cfg.vocab_size:
        raise CheckpointError(f"vocabulary has {len(tokenizer)} words but the model "
                              f"{model.cfg.vocab_size}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _quantize(model.state_dict(), precision)
    _atomic_write(folder / WEIGHTS, lambda p: save_file(tensors, p))
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "precision": precision,
              "model": config_to_dict(model.cfg),
              "train": config_to_dict(train_cfg) if train_cfg is not None else None,
              "meta": meta or {}}
    _atomic_write(folder / CONFIG, lambda p: Path(p).write_text(json.dumps(config, indent=1)))
    _atomic_write(folder / VOCAB, lambda p: tokenizer.save(p))
    return folder


def read_config(path: str | os.PathLike) -> dict:
    """The checkpoint's config.json, checked for format and version."""
    folder = _folder(path)
    cfg = _read_json(folder / CONFIG)
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG}: not a localist checkpoint config "
                              f"(format={cfg.get('format')!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{folder / CONFIG}: format_version {cfg.get('format_version')!r} "
                              f"is not supported (this code reads {FORMAT_VERSION})")
    return cfg


def _folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{p}: {p.suffix} files are pickle-based and are refused unread; "
                              f"checkpoints are safetensors + JSON only")
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise CheckpointError(f"{p}: no such checkpoint folder")
    return p


def _model_config(folder: Path, cfg: dict) -> ModelConfig:
    try:
        return config_from_dict(ModelConfig, cfg.get("model") or {})
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{folder / CONFIG}: bad model config: {e}") from None


def _tokenizer(folder: Path) -> Tokenizer:
    try:
        return Tokenizer.load(folder / VOCAB)
    except FileNotFoundError:
        raise CheckpointError(f"{folder / VOCAB}: missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder / VOCAB}: {e}") from None


def check_checkpoint(path: str | os.PathLike) -> dict:
    """Check a checkpoint folder without reading its weights: config, vocabulary and the
    safetensors header against the shapes the config implies. Returns the config; raises
    CheckpointError naming the file and the problem. Cheap enough to run on every listing."""
    folder = _folder(path)
    cfg = read_config(folder)
    model_cfg = _model_config(folder, cfg)
    tok = _tokenizer(folder)
    if len(tok) != model_cfg.vocab_size:
        raise CheckpointError(f"{folder / VOCAB}: {len(tok)} words, but the config says "
                              f"vocab_size={model_cfg.vocab_size}")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    header = check_safetensors_file(weights)
    with torch.device("meta"):   # shapes only: nothing is allocated or initialised
        want = {k: tuple(v.shape) for k, v in LocalistLM(model_cfg).state_dict().items()}
    have = {k: tuple(v.get("shape", ())) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and not k.endswith(SCALE_SUFFIX)}
    if have.keys() != want.keys():
        gone, extra = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
        raise CheckpointError(f"{weights}: does not match {folder / CONFIG}: missing tensors "
                              f"{gone[:3]}, unexpected tensors {extra[:3]}")
    for name, shape in want.items():
        if have[name] != shape:
            raise CheckpointError(f"{weights}: does not match {folder / CONFIG}: {name} has "
                                  f"shape {list(have[name])}, the config implies {list(shape)}")
    return cfg


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[LocalistLM, Tokenizer]:
    """Load ``(model, tokenizer)`` from a checkpoint folder, in eval mode. Never unpickles."""
    folder = _folder(path)
    cfg = read_config(folder)
    model_cfg = _model_config(folder, cfg)
    tok = _tokenizer(folder)
    if len(tok) != model_cfg.vocab_size:
        raise CheckpointError(f"{folder / VOCAB}: {len(tok)} words, but the config says "
                              f"vocab_size={model_cfg.vocab_size}")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    check_safetensors_file(weights)
    try:
        state = _dequantize(load_file(str(weights)))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{weights}: cannot be read as safetensors ({e})") from None
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{weights}: tensor {name} holds NaN or inf values")
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
