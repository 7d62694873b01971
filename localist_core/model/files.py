"""Reading and writing this project's files safely: JSON and safetensors, never pickle.

Every file is checked before it is parsed: its size with stat() before it is opened, a JSON
value's depth, a safetensors header's structure against the file's length. A pickle is refused
unread. Each refusal names the file and the problem and raises the ``error`` class the caller
passes (``UnsafeFileError`` by default). Writes are atomic: a temporary file of ours, then a
rename; safetensors files are serialised in memory and written by us, never through the
library's own temp file, so a kill or a full disk leaves nothing this project cannot recognise.
"""
from __future__ import annotations

import gc
import json
import math
import os
import re
import reprlib
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")

# Limits (README "Limits"): the most bytes of a file a check reads, compared with stat() before
# the file is opened, so an oversized file is refused unread. The shipped checkpoints' safetensors
# header is 3.3 KB (2 layers; ~1.5 KB more a layer).
KiB, MiB = 2**10, 2**20
MAX_HEADER_BYTES = 1 * MiB
# The shipped JSON files nest at most 9 levels deep (a sweep result); deeper is refused, so no
# reader, cache (pickle) or page that walks the data recursively can hit Python's recursion limit.
MAX_JSON_DEPTH = 32
# The sample texts (assets/prompts.json, 1 KB; ``read_prompts``).
MAX_PROMPTS_BYTES = 64 * KiB
# Bytes per element of each safetensors dtype (the header's shapes must account for the file).
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class UnsafeFileError(ValueError):
    """A file is unsafe (a pickle), truncated, foreign, malformed or over its size limit."""


def short_repr(v) -> str:
    """A short repr for messages (a hostile value may be megabytes long)."""
    return reprlib.repr(v)


def refuse_pickle(path: Path, error: type[Exception] = UnsafeFileError) -> None:
    """Raise ``error`` when ``path``'s suffix names a pickle-based format; nothing is read."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise error(f"{path}: {path.suffix} files are pickle-based and are refused unread; "
                    f"this project reads safetensors + JSON only")


def checked_size(path: Path, max_bytes: int, error: type[Exception] = UnsafeFileError) -> int:
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


def parse_json(raw: bytes, where: Path, error: type[Exception] = UnsafeFileError,
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


def read_json_file(path: Path, max_bytes: int, error: type[Exception] = UnsafeFileError,
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


def read_prompts(path: Path, error: type[Exception] = UnsafeFileError) -> list[dict]:
    """The sample texts in ``path``, ``{"prompts": [{"name": …, "text": …}, …]}``, as that
    list: read only after stat() shows at most MAX_PROMPTS_BYTES (``read_json_file``), then
    every entry checked, so a reader can rely on both keys being strings. Every refusal raises
    ``error`` naming the file."""
    data = read_json_file(path, MAX_PROMPTS_BYTES, error)
    if not isinstance(data, dict) or "prompts" not in data:
        raise error(f'{path}: expected a JSON object with a "prompts" list')
    prompts = data["prompts"]
    if not isinstance(prompts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str)
            and isinstance(p.get("text"), str) for p in prompts):
        raise error(f'{path}: "prompts" must be a list of {{"name": …, "text": …}} objects')
    return prompts


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
            return f"tensor {short_repr(name)} is not described by an object"
        dtype, shape, offsets = v.get("dtype"), v.get("shape"), v.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            return f"tensor {short_repr(name)} has an unknown dtype {short_repr(dtype)}"
        if not isinstance(shape, list) or len(shape) > 8 or not all(
                type(d) is int and d >= 0 for d in shape):
            return f"tensor {short_repr(name)} has a malformed shape {short_repr(shape)}"
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(
                type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]:
            return f"tensor {short_repr(name)} has malformed data_offsets {short_repr(offsets)}"
        need = math.prod(shape) * DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != need:
            return (f"tensor {short_repr(name)}: dtype {dtype} and shape {shape} need "
                    f"{need:,} bytes, its offsets span {offsets[1] - offsets[0]:,}")
    return None


def check_safetensors_file(path: Path, error: type[Exception] = UnsafeFileError) -> dict:
    """Raise ``error`` unless ``path`` is a complete safetensors file; return its header (tensor
    name → dtype, shape, offsets). Only the header is read, and only when it is at most
    MAX_HEADER_BYTES; every tensor's shape and dtype must account for its bytes."""
    refuse_pickle(path, error)
    size = checked_size(path, sys.maxsize, error)   # no cap on the weights; the header has one
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            n = int.from_bytes(head[:8], "little")
            plausible = len(head) == 9 and 1 < n <= size - 8 and head[8:9] == b"{"
            # A header length whose low byte is 0x80 looks like pickle's magic, so the magic
            # only counts when the bytes are not a plausible safetensors header.
            if not plausible and (head[:1] == b"\x80" or head[:2] == b"PK"):
                raise error(f"{path}: this is a pickle / torch.save file, not safetensors; "
                            f"refused unread")
            if len(head) < 8:
                raise error(f"{path}: truncated ({size} bytes; no safetensors header)")
            if n <= 1 or n > size - 8:
                raise error(f"{path}: not a safetensors file, or truncated (header length {n} "
                            f"does not fit a {size}-byte file)")
            if n > MAX_HEADER_BYTES:
                raise error(f"{path}: safetensors header of {n:,} bytes, over the "
                            f"{MAX_HEADER_BYTES:,}-byte limit; refused unread")
            f.seek(8)
            raw = f.read(n)
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    if not raw.lstrip().startswith(b"{"):
        raise error(f"{path}: not a safetensors file (header is not JSON)")
    header = parse_json(raw, path, error, invalid="not a safetensors file, or truncated "
                                                  "(header is not valid JSON)")
    problem = _header_problem(header)
    if problem:
        raise error(f"{path}: not a valid safetensors header: {problem}")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
              default=0)
    if 8 + n + end != size:
        raise error(f"{path}: truncated or padded: the header describes {8 + n + end} bytes, "
                    f"the file has {size}")
    return header


# What atomic_write leaves behind when its writer is killed: mkstemp's ".<name>.<8 random>.tmp"
# for one of the JSON or safetensors files this project writes (group "of": that file's name).
# The one rule for which temp files are ours: removed here, and not counted as a user's by the
# CLI's folder checks (cli.guards).
OWN_TEMP = re.compile(r"\.(?P<of>.+\.(?:json|safetensors))\.[a-z0-9_]{8}\.tmp")
# What safetensors' own ``save_file`` leaves when killed mid-write: it writes through a temp
# file of the Rust tempfile crate, ".tmp" and 6 letters or digits, beside its target. This
# project no longer calls save_file (``safetensors_writer``), but a folder written by an earlier
# version may hold one; such a name counts as ours only when it holds the start of a
# safetensors file or nothing (``is_library_temp``).
LIBRARY_TEMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")
# os.write's chunk: a signal handler runs between two chunks, so a SIGTERM abandons a big write
# within one chunk's time (the CLI's handler: cli.errors.sigterm_raises).
WRITE_CHUNK_BYTES = 16 * MiB


def own_temp_of(name: str) -> str | None:
    """The name of the file whose ``atomic_write`` temp file ``name`` is, or None when ``name``
    is not one (OWN_TEMP).

    >>> own_temp_of(".config.json.ab12_x9z.tmp"), own_temp_of(".notes.tmp")
    ('config.json', None)
    """
    m = OWN_TEMP.fullmatch(name)
    return m["of"] if m else None


def is_library_temp(path: Path) -> bool:
    """Whether ``path`` is a temp file that a killed safetensors ``save_file`` left: named like
    LIBRARY_TEMP, a regular file (not a link), and empty, shorter than the 8-byte header length,
    or with ``{`` where a safetensors header starts. Anything else of that name is someone
    else's file."""
    path = Path(path)
    if not LIBRARY_TEMP.fullmatch(path.name):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 9)
    except OSError:
        return False
    finally:
        os.close(fd)
    return len(head) < 9 or head[8:9] == b"{"


def remove_own_temps(folder: Path) -> None:
    """Delete the temporary files a killed writer left in ``folder``, and nobody else's: only
    names matching OWN_TEMP, and safetensors' own temp files (``is_library_temp``)."""
    for stale in Path(folder).glob(".tmp*"):
        if is_library_temp(stale):
            stale.unlink(missing_ok=True)
    for stale in Path(folder).glob(".*.tmp"):
        if OWN_TEMP.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


def _naming(e: OSError, path: Path, tmp: str | None) -> OSError:
    """``e`` naming ``path`` (the file being written) instead of its temp file or nothing, so a
    full disk reads "PATH: No space left on device"; a failed rename keeps both its names."""
    temp = e.filename in (None, tmp) or (isinstance(e.filename, str)   # mkstemp's own try
                                         and own_temp_of(Path(e.filename).name) == path.name)
    if e.errno is None or e.filename2 is not None or not temp:
        return e
    return OSError(e.errno, e.strerror, str(path))   # the errno's subclass (PermissionError, …)


def atomic_write(path: Path, write) -> None:
    """Write ``path`` by calling ``write(temp_path)`` on a temporary file beside it, then
    renaming it over ``path``: a reader sees the old file or the new one, never half of one. A
    failed or interrupted write (a full disk, a SIGTERM turned into an exception) removes its
    temporary file and leaves ``path`` as it was; an OSError names ``path``."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        named = _naming(e, path, tmp) if isinstance(e, OSError) else e
        if named is e:
            raise
        raise named from e


def bytes_writer(data: bytes) -> Callable[[str], None]:
    """A ``write`` for ``atomic_write`` that puts ``data`` into the temp file with os.write, in
    WRITE_CHUNK_BYTES chunks (a full disk raises OSError ENOSPC, which atomic_write reports
    naming its file)."""
    def write(tmp: str) -> None:
        view = memoryview(data)
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            while view:
                view = view[os.write(fd, view[:WRITE_CHUNK_BYTES]):]
        finally:
            os.close(fd)
    return write


def safetensors_writer(tensors: dict, metadata: dict[str, str] | None = None
                       ) -> Callable[[str], None]:
    """A ``write`` for ``atomic_write`` holding ``tensors`` as a safetensors file: serialised
    now, in memory (``safetensors.torch.save``, the same bytes ``save_file`` writes), then
    written by ``bytes_writer``. Never ``save_file``: it writes through a temp file of its own
    (LIBRARY_TEMP) that a kill leaves behind, and a full disk raises its SafetensorError."""
    from safetensors.torch import save
    return bytes_writer(save(tensors, metadata=metadata))
