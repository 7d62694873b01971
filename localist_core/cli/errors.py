"""How a failure a user can cause becomes one ``error: …`` line and an exit code: the CLI's own
exceptions, the wording for allocation, divergence and OS errors, and SIGTERM as an exception."""
from __future__ import annotations

import contextlib
import errno
import re
import signal
import sys
import threading
from collections.abc import Iterator

from ..model.config import ConfigError
from .args import PLACEHOLDER_VOCAB, configs

EXIT_USAGE = 2
EXIT_FAILURE = 1        # missing data (no corpus), or an export outside its tolerance
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143   # 128 + SIGTERM, as a shell reports a command that SIGTERM ended
EXIT_BROKEN_PIPE = 141  # as a shell reports a command killed by SIGPIPE (`report | head`)
# What to shrink when an allocation cannot succeed, per command.
ALLOCATION_HINTS = {
    "train": "reduce batch_size, n_ctx, d_model, d_ff or n_layers",
    "sweep": "reduce batch_size, n_ctx, d_model, d_ff or n_layers",
    "eval": "reduce --max-tokens, or evaluate a smaller checkpoint",
    "export": "export a smaller checkpoint, or free memory",
    "report": "free memory",
}


class UsageError(ValueError):
    """A command line that cannot succeed as given (a path in the way, a bad target)."""


class CannotAllocate(Exception):
    """A run needs more memory than this machine has; found before torch tries to allocate."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``sigterm_raises``). A KeyboardInterrupt, so it unwinds like ^C: no
    ``except Exception`` swallows it, and every write in flight is abandoned cleanly (atomic_write
    removes its temp file; the file it was replacing stays as it was)."""


def _raise_terminated(signum, frame) -> None:
    # A second SIGTERM while this one unwinds ends the process at once (the default action):
    # the only thing it can leave is a temp file of ours, which the next run removes.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` in the main thread instead of ending the
    process wherever it is (in the middle of a checkpoint write, say). Python runs the handler
    between bytecodes, so a write in C (an os.write chunk, safetensors' serialisation) finishes
    first and the exception is raised right after it. Outside the main thread (where no handler
    can be installed) it does nothing; the previous handler is restored on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line(text: str) -> str:
    """A message on one line, however many lines the exception text had."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print ``error: message`` on one line to stderr and return ``code``."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    return code


def is_overflow(e: BaseException) -> bool:
    """A size past any C integer: Python's OverflowError, or torch's TypeError/RuntimeError
    "Overflow when unpacking long long"."""
    text = str(e).lower()
    return isinstance(e, OverflowError) or (isinstance(e, (TypeError, RuntimeError)) and any(
        s in text for s in ("overflow when unpacking", "multiplication overflow",
                            "too large to convert")))


def is_allocation_failure(e: BaseException) -> bool:
    """Torch's allocators raise RuntimeError (CPU "can't allocate memory", CUDA "out of
    memory"); Python raises MemoryError; an absurd size overflows (``is_overflow``)."""
    if isinstance(e, (CannotAllocate, MemoryError)) or is_overflow(e):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("allocat" in text or "out of memory" in text
                                            or "not enough memory" in text)


def bytes_text(n: float) -> str:
    """``n`` bytes in the largest binary unit up to TiB.

    >>> bytes_text(2.4e17)
    '218,278.7 TiB'
    """
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:,.0f} bytes" if i == 0 else f"{n:,.1f} {units[i]}"


def allocation_message(e: BaseException, command: str) -> str:
    """One line: how much could not be allocated, the reason, and what to reduce."""
    hint = ALLOCATION_HINTS.get(command, "reduce the model or batch size")
    if isinstance(e, CannotAllocate):
        return f"cannot allocate {e}: {hint}"
    # Torch appends C++ frames after the first line, and prefixes "[enforce fail at …]": noise.
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*(err == 0\.)?\s*", "", text).rstrip('"')
    if is_overflow(e):
        return f"cannot allocate: a size is out of range ({text or type(e).__name__}): {hint}"
    size = ""
    if m := re.search(r"allocate (\d+) bytes", text):
        size = f" {bytes_text(int(m.group(1)))}"
    elif m := re.search(r"allocate ([\d.]+ ?[KMGTP]i?B)", text):
        size = f" {m.group(1)}"
    return f"cannot allocate{size} ({text or 'out of memory'}): {hint}"


def diverged_message(e: BaseException, args) -> str:
    """Say that training diverged, and suggest a concrete lower learning rate."""
    try:
        lr = configs(args.config, args.overrides, vocab_size=PLACEHOLDER_VOCAB)[1].lr
        hint = f"; e.g. lr={lr / 10:g}"
    except (ConfigError, AttributeError):
        hint = ""
    return f"training diverged: {str(e).rstrip('.')}{hint}"


def os_error_message(e: OSError) -> str:
    """``FILE: why`` (or ``cannot move A to B: why``) for a disk, permission or path error. A
    full disk says what was kept: every write is atomic (files.atomic_write), so the file being
    written was not replaced and no part of it is left."""
    why = e.strerror or str(e) or type(e).__name__
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        why += ("; nothing was replaced (what was there before is kept, and no partial file is "
                "left): free some space and run the same command again")
    if e.filename is not None and e.filename2 is not None:
        return f"cannot move {e.filename} to {e.filename2}: {why}"
    if e.filename is not None:
        return f"{e.filename}: {why}"
    return why
