"""The dial: locality λ_f, temperature τ and anchor strength γ, one frozen value.

``Dial.__post_init__`` is the one place a dial value is checked: anything outside its range in
``config`` is clamped to the nearest edge with a notice; NaN or a non-number is refused.
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

from .config import (
    ANCHOR_STRENGTH_RANGE,
    LOCALITY_RANGE,
    TEMPERATURE_RANGE,
    ConfigError,
)


class DialNotice(UserWarning):
    """A dial value was out of range and has been clamped."""


# field → (symbol, range): the order of the checks and of the notices.
_LIMITS = {"locality": ("λ", LOCALITY_RANGE), "attn_temperature": ("τ", TEMPERATURE_RANGE),
           "rule_strength": ("γ", ANCHOR_STRENGTH_RANGE)}


@dataclass(frozen=True)
class Dial:
    """The inference-time settings: locality λ_f, temperature τ and anchor rule strength γ.

    Out-of-range values (±inf included) are clamped to the nearest edge of their range in
    ``config``; ``notices`` says what was clamped, and each notice is also a ``DialNotice``
    warning. NaN, or anything that is not a number, raises ``ConfigError`` (a ValueError).

    >>> Dial(locality=0.6)
    Dial(locality=0.6, attn_temperature=1.0, rule_strength=0.0)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     d = Dial(attn_temperature=0.0)
    >>> d.attn_temperature, d.notices
    (0.05, ('τ=0.0 is outside [0.05, 10.0]; using τ=0.05.',))
    """

    locality: float = 0.0
    attn_temperature: float = 1.0
    rule_strength: float = 0.0
    # What was clamped, for the user. Not compared: a clamped dial equals the one it became.
    notices: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        notices = []
        for name, (sym, (lo, hi)) in _LIMITS.items():
            v = _as_float(getattr(self, name), sym)
            if math.isnan(v):
                raise ConfigError(f"{sym} is NaN; give a number in [{lo}, {hi}]")
            if not lo <= v <= hi:
                clamped = min(max(v, lo), hi)
                notices.append(f"{sym}={v} is outside [{lo}, {hi}]; using {sym}={clamped}.")
                v = clamped
            object.__setattr__(self, name, v)     # a float: 1 and 1.0 are one cache key
        object.__setattr__(self, "notices", tuple(notices))
        for note in notices:
            warnings.warn(note, DialNotice, stacklevel=3)   # at the caller of Dial(...)

    def as_dict(self) -> dict[str, float]:
        """``{"locality", "attn_temperature", "rule_strength"}``: the JSON form results store."""
        return {name: getattr(self, name) for name in _LIMITS}


def _as_float(raw, sym: str) -> float:
    """A real number (not a bool) as a float; an integer too large for a float is ±inf."""
    if not isinstance(raw, numbers.Real) or isinstance(raw, bool):
        raise ConfigError(f"{sym} must be a number, got {raw!r}")
    try:
        return float(raw)
    except OverflowError:
        return math.inf if raw > 0 else -math.inf
