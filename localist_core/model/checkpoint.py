"""Checkpoints: a folder of ``model.safetensors`` + ``config.json`` + ``vocab.json``. Never pickle.

The anchor table (local entropy per word) is the ``local_entropy`` tensor inside the safetensors
file. Every file is checked before it is parsed: a pickle is refused unread, a truncated or
foreign file is reported with its name and the problem.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import json
import math
import os
import re
import reprlib
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import ConfigError, ModelConfig, TrainConfig, config_from_dict, config_to_dict
from .tokenizer import Tokenizer
from .transformer import LocalistLM

FORMAT = "localist-checkpoint"
FORMAT_VERSION = 1
WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
PRECISIONS = ("fp32", "fp16", "int8")
# Tensors stored as int8 with one scale per row in the "int8" precision: the big embedding and
# the adaptive-softmax tails.
INT8_PREFIXES = ("tok_emb.weight", "head.tail.")
SCALE_SUFFIX = "::row_scale"

# Limits (README "Limits"): the most bytes of each file a checkpoint check reads, compared with
# stat() before the file is opened, so an oversized file is refused unread. Measured on the
# shipped checkpoints: config.json 1.4 KB, vocab.json 368 KB (33,278 words; WikiText-103's
# 268k words would be about 3 MB), safetensors header 3.3 KB (2 layers; ~1.5 KB more a layer).
KiB, MiB = 2**10, 2**20
MAX_CONFIG_BYTES = 64 * KiB
MAX_VOCAB_BYTES = 8 * MiB
MAX_HEADER_BYTES = 1 * MiB
# The shipped JSON files nest at most 9 levels deep (a sweep result); deeper is refused, so no
# reader, cache (pickle) or page that walks the data recursively can hit Python's recursion limit.
MAX_JSON_DEPTH = 32
# The most parameters a checkpoint may hold (the papers' size is ≈23M, the shipped models 10M):
# checked from the safetensors header against the config before any weight is read.
MAX_PARAMETERS = 250_000_000
# Bytes per element of each safetensors dtype (the header's shapes must account for the file).
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class CheckpointError(ValueError):
    """A checkpoint file is unsafe, truncated, foreign or inconsistent."""


def _r(v) -> str:
    """A short repr for messages (a hostile value may be megabytes long)."""
    return reprlib.repr(v)


def checked_size(path: Path, max_bytes: int, error: type[Exception] = CheckpointError) -> int:
    """The size of the regular file ``path``, from one stat(); raises ``error`` naming the file
    when it is missing, not a regular file (a FIFO would block a read forever) or bigger than
    ``max_bytes``, so an oversized file is refused without being opened."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file; refused unread")
    if st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size:,} bytes, over the {max_bytes:,}-byte limit for this "
                    f"file; refused unread")
    return st.st_size


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """How deeply the valid JSON text ``raw`` nests ([] and {}), counted in C-speed passes: the
    strings are cut out, every byte but the brackets dropped, and the running sum's maximum
    taken. A recursive walk of the parsed value costs ~50× more on a 4-MiB file."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    step = np.frombuffer(brackets, dtype=np.uint8)
    step = np.where((step == ord("[")) | (step == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(step).max())


def parse_json(raw: bytes, where: Path, error: type[Exception] = CheckpointError,
               invalid: str = "not valid JSON") -> Any:
    """Parse ``raw`` (already size-capped) as JSON; raises ``error`` naming ``where`` when it is
    not JSON (``invalid`` says how), nests more than MAX_JSON_DEPTH deep, or overflows Python's
    recursion limit (json raises RecursionError, not ValueError, on ``[[[[…``)."""
    # The cyclic garbage collector runs again and again while json allocates hundreds of
    # thousands of containers, for nothing (a fresh parse holds no cycles): 0.5 s instead of
    # 0.05 s for 4 MiB of ``[[],[],…]``. Re-enabled only if it was on.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        data = json.loads(raw)
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply; refused") from None
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
        raise error(f"{where}: {invalid} ({e})") from None
    finally:
        if was_enabled:
            gc.enable()
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{where}: JSON nested {depth} levels deep, over the limit of "
                    f"{MAX_JSON_DEPTH}; refused")
    return data


def read_json_file(path: Path, max_bytes: int, error: type[Exception] = CheckpointError,
                   invalid: str = "not valid JSON") -> Any:
    """The JSON value in ``path``, read only after stat() shows at most ``max_bytes`` (see
    ``checked_size`` and ``parse_json`` for what is refused; every refusal names the file)."""
    checked_size(path, max_bytes, error)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)   # the file may have grown since stat()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) > max_bytes:
        raise error(f"{path}: over the {max_bytes:,}-byte limit for this file; refused")
    return parse_json(raw, path, error, invalid)


def _header_problem(header) -> str | None:
    """What is wrong with a parsed safetensors header, or None. Every tensor entry needs a known
    dtype, a shape of non-negative integers and two offsets spanning exactly its bytes."""
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        return "__metadata__ is not an object of strings"
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(v, dict):
            return f"tensor {_r(name)} is not described by an object"
        dtype, shape, offsets = v.get("dtype"), v.get("shape"), v.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            return f"tensor {_r(name)} has an unknown dtype {_r(dtype)}"
        if not isinstance(shape, list) or len(shape) > 8 or not all(
                type(d) is int and d >= 0 for d in shape):
            return f"tensor {_r(name)} has a malformed shape {_r(shape)}"
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(
                type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]:
            return f"tensor {_r(name)} has malformed data_offsets {_r(offsets)}"
        need = math.prod(shape) * DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != need:
            return (f"tensor {_r(name)}: dtype {dtype} and shape {shape} need {need:,} bytes, "
                    f"its offsets span {offsets[1] - offsets[0]:,}")
    return None


def check_safetensors_file(path: Path) -> dict:
    """Raise CheckpointError unless ``path`` is a complete safetensors file; return its header
    (tensor name → dtype, shape, offsets). Only the header is read, and only when it is at most
    MAX_HEADER_BYTES; every tensor's shape and dtype must account for its bytes."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: {path.suffix} files are pickle-based and are refused "
                              f"unread; checkpoints are safetensors + JSON only")
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path}: not a regular file; refused unread")
        size = st.st_size
        with open(path, "rb") as f:
            head = f.read(9)
            n = int.from_bytes(head[:8], "little")
            plausible = len(head) == 9 and 1 < n <= size - 8 and head[8:9] == b"{"
            # A header length whose low byte is 0x80 looks like pickle's magic, so the magic
            # only counts when the bytes are not a plausible safetensors header.
            if not plausible and (head[:1] == b"\x80" or head[:2] == b"PK"):
                raise CheckpointError(f"{path}: this is a pickle / torch.save file, not "
                                      f"safetensors; refused unread")
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated ({size} bytes; no safetensors header)")
            if n <= 1 or n > size - 8:
                raise CheckpointError(f"{path}: not a safetensors file, or truncated (header "
                                      f"length {n} does not fit a {size}-byte file)")
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: safetensors header of {n:,} bytes, over the "
                                      f"{MAX_HEADER_BYTES:,}-byte limit; refused unread")
            f.seek(8)
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if not raw.lstrip().startswith(b"{"):
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)")
    header = parse_json(raw, path, invalid="not a safetensors file, or truncated (header is "
                                           "not valid JSON)")
    problem = _header_problem(header)
    if problem:
        raise CheckpointError(f"{path}: not a valid safetensors header: {problem}")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
              default=0)
    if 8 + n + end != size:
        raise CheckpointError(f"{path}: truncated or padded: the header describes "
                              f"{8 + n + end} bytes, the file has {size}")
    return header


def _read_json(path: Path) -> dict:
    data = read_json_file(path, MAX_CONFIG_BYTES)
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


# What _atomic_write leaves behind when its writer is killed: mkstemp's ".<name>.<8 random>.tmp"
# for one of the JSON or safetensors files this project writes.
OWN_TEMP = re.compile(r"\..+\.(?:json|safetensors)\.[a-z0-9_]{8}\.tmp")


def remove_own_temps(folder: Path) -> None:
    """Delete the temporary files a killed ``_atomic_write`` left in ``folder``, and nobody
    else's: only names matching OWN_TEMP."""
    for stale in Path(folder).glob(".*.tmp"):
        if OWN_TEMP.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


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
    """The checkpoint's config.json (at most MAX_CONFIG_BYTES), checked for format and version,
    and for the types of ``train``, ``meta`` and ``precision`` (``model`` is checked by
    ``ModelConfig``)."""
    folder = _folder(path)
    where = folder / CONFIG
    cfg = _read_json(where)
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a localist checkpoint config "
                              f"(format={_r(cfg.get('format'))})")
    version = cfg.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {_r(version)} is not supported (this "
                              f"code reads {FORMAT_VERSION})")
    if cfg.get("precision", "fp32") not in PRECISIONS:
        raise CheckpointError(f"{where}: precision {_r(cfg.get('precision'))} is not one of "
                              f"{PRECISIONS}")
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
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{p}: {p.suffix} files are pickle-based and are refused unread; "
                              f"checkpoints are safetensors + JSON only")
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
    data = read_json_file(path, MAX_VOCAB_BYTES)
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
                              f"{_r(gone[:3])}, unexpected tensors {_r(extra[:3])}")
    for name, shape in want.items():
        if have[name] != shape:
            raise CheckpointError(f"{weights}: does not match {folder / CONFIG}: {name} has "
                                  f"shape {list(have[name])}, the config implies {list(shape)}")
    for name, v in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            of = name[: -len(SCALE_SUFFIX)]
            if of not in want or len(want[of]) != 2 or tuple(v["shape"]) != (want[of][0], 1):
                raise CheckpointError(f"{weights}: row scale {_r(name)} has shape {v['shape']}, "
                                      f"which fits no tensor of {folder / CONFIG}")


def _checked(folder: Path) -> tuple[dict, ModelConfig, Tokenizer]:
    """Every check, cheapest first: the files' sizes (stat only), config.json, the weights'
    header against the config (names, shapes, parameter count), then the vocabulary."""
    checked_size(folder / VOCAB, MAX_VOCAB_BYTES)
    cfg = read_config(folder)
    model_cfg = _model_config(folder, cfg)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    _check_shapes(folder, model_cfg, check_safetensors_file(weights))
    tok = _tokenizer(folder)
    if len(tok) != model_cfg.vocab_size:
        raise CheckpointError(f"{folder / VOCAB}: {len(tok)} words, but the config says "
                              f"vocab_size={model_cfg.vocab_size}")
    return cfg, model_cfg, tok


def check_checkpoint(path: str | os.PathLike) -> dict:
    """Check a checkpoint folder without reading its weights: file sizes, config (types and
    MODEL_SIZE_LIMITS), the safetensors header against the shapes the config implies, and the
    vocabulary. Returns the config; raises CheckpointError naming the file and the problem.
    Milliseconds for the shipped checkpoints; ``live.list_checkpoints`` re-runs it only when a
    file changes."""
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
