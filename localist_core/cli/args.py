"""What the command line's words mean: argparse types for numbers (the one home of the CLI's
number checks) and a named config with its ``key=value`` overrides."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..model.config import BIGRAM_MAX_VOCAB, ModelConfig, TrainConfig, apply_overrides, preset

# Only for checking overrides before the corpus (and so the real vocabulary) is loaded: the
# largest vocabulary every partition accepts (the bigram one's codes are int32), so a valid
# partition=bigram is not refused for a vocabulary it will never have.
PLACEHOLDER_VOCAB = BIGRAM_MAX_VOCAB


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _range_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if lo_open else '≥'} {lo:g}"
    if hi is not None:
        return f"≤ {hi:g}"
    return ""


def finite_float(lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] (``lo_open``: strictly above ``lo``).

    NaN and ±inf are refused here because every later check (``x < lo``) lets NaN through.
    """
    want = " ".join(filter(None, ["a finite number", _range_text(lo, hi, lo_open)]))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        below = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or below or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = "finite_float"
    return parse


def float_list(lo: float | None = None, hi: float | None = None, *,
               lo_open: bool = False) -> Callable[[str], list[float]]:
    """An argparse type: one or more comma-separated numbers, each checked as ``finite_float``."""
    one = finite_float(lo, hi, lo_open=lo_open)

    def parse(text: str) -> list[float]:
        parts = [x for x in text.split(",") if x.strip()]
        try:
            [float(x) for x in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers, got {text!r}") from None
        if not parts:
            raise argparse.ArgumentTypeError("expected at least one number")
        return [one(x) for x in parts]

    parse.__name__ = "float_list"
    return parse


def configs(name: str, overrides: list[str], vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """The preset ``name`` (``tiny``, ``cpu-ref``, ``paper``) with ``key=value`` overrides applied;
    raises ConfigError naming a bad key or value."""
    p = preset(name)
    model_kw, train_kw = apply_overrides(p.model, p.train, overrides)
    model_kw.setdefault("vocab_size", vocab_size)
    return ModelConfig(**model_kw), TrainConfig(**train_kw)


def check_overrides(name: str, overrides: list[str]) -> None:
    """Validate names and values before the (slow) corpus load."""
    configs(name, overrides, vocab_size=PLACEHOLDER_VOCAB)
