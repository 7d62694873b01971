"""Which compute precision and device a run uses: one decision, with its reason.

``auto`` runs bf16 only where the hardware runs it natively, fp32 elsewhere. On a CPU with
AVX2 only, a bf16 matmul is emulated and ran about 60× slower than fp32; on CPUs with
AVX512-BF16 or AMX-BF16 (and on CUDA GPUs with bf16 support) it is native.

How a CPU is told apart: ``torch.backends.cpu.get_cpu_capability()`` names the vector ISA torch
dispatches to ("DEFAULT", "NO AVX", "AVX2", "AVX512", "VSX", "Z VECTOR", "SVE256", …); it says
"AVX512" with or without the BF16 extension, so it cannot decide alone. The flags come from
``torch.cpu.get_capabilities()`` (torch ≥ 2.10: ``avx512_bf16``, ``amx_bf16``) or, failing that,
from /proc/cpuinfo on Linux (``avx512_bf16``, ``amx_bf16``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import COMPUTE_PRECISIONS as PRECISIONS
from .config import DEVICES

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_capability() -> str:
    """torch's dispatch ISA for this CPU ("AVX2", "AVX512", …), or "unknown"."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:   # noqa: BLE001 — an old or odd build: treat as unknown
        return "unknown"


def _torch_cpu_flags() -> dict | None:
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None:
        return None
    try:
        return dict(get())
    except Exception:   # noqa: BLE001
        return None


def _cpuinfo_flags() -> set[str] | None:
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_bf16_flags() -> tuple[list[str], str]:
    """The native-bf16 flags this CPU has, and where they were read from."""
    caps = _torch_cpu_flags()
    if caps is not None and any(f in caps for f in NATIVE_BF16_FLAGS):
        return [f for f in NATIVE_BF16_FLAGS if caps.get(f)], "torch.cpu.get_capabilities()"
    flags = _cpuinfo_flags()
    if flags is not None:
        return [f for f in NATIVE_BF16_FLAGS if f in flags], str(CPUINFO)
    return [], "no source of CPU flags"


def cpu_has_native_bf16() -> tuple[bool, str]:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX-BF16), and why."""
    cap = cpu_capability()
    flags, source = cpu_bf16_flags()
    if flags:
        return True, f"CPU capability {cap}, {'+'.join(flags)} ({source})"
    return False, f"CPU capability {cap}, no avx512_bf16/amx_bf16 ({source})"


def cuda_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_device(requested: str = "auto") -> tuple[str, str]:
    """``auto`` → cuda when available, else cpu. Returns (device, reason)."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda asked for, but torch sees no CUDA device")
    if requested != "auto":
        return requested, "asked for"
    if torch.cuda.is_available():
        return "cuda", "auto: CUDA is available"
    return "cpu", "auto: no CUDA device"


def resolve_precision(requested: str = "auto", device: str = "cpu") -> tuple[str, str]:
    """The compute precision a run uses, ``"fp32"`` or ``"bf16"``, and the reason.

    An explicit ``fp32``/``bf16`` is kept as asked (bf16 on a CPU without native support runs,
    slowly, and the reason says so). ``auto`` is bf16 only on a CUDA device with bf16 support
    or a CPU with AVX512-BF16/AMX-BF16, fp32 elsewhere.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    device = str(device).split(":")[0]
    if device == "cuda":
        native, why = cuda_bf16(), ("CUDA bf16 supported" if cuda_bf16()
                                     else "CUDA without bf16 support")
    else:
        native, why = cpu_has_native_bf16()
    if requested == "fp32":
        return "fp32", f"asked for; the hardware: {why}"
    if requested == "bf16":
        return "bf16", f"asked for; the hardware: {why}{'' if native else ' (emulated, slow)'}"
    return ("bf16" if native else "fp32"), f"auto: {why}"

