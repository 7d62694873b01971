"""What people read for the project's internal names: runs' series, variants and partitions,
one map used by every page and figure (no streamlit here). A name the map does not know is
shown as it is, with underscores as spaces."""
from __future__ import annotations

import re

# A series is "<protocol> penalty · <how>[ · <variant>]" or "dial protocol[ · <variant>]"
# (localist_core.experiments.results._series); each part gets a reader's name.
PARTS = {
    "attention penalty · as trained": "trained for one λ",
    "attention penalty · dialled to λ_f=λ": "trained at λ = 0, dial turned",
    "weights penalty · as trained": "weights penalty, trained for one λ",
    "weights penalty · dialled to λ_f=λ": "weights penalty, dial turned",
    "dial protocol": "one model, dial turned",
}
VARIANTS = {
    "beta64": "",                                   # the shipped dial's sharpness: its default
    "block_size7": "blocks of 7",
    "partitionpunctuation": "punctuation blocks",
    "partitionrecruited": "recruited blocks",
    "partitionbigram": "bigram blocks",
    "partitionrandom": "random blocks of punctuation's lengths",
    "noncausal_diagnostictrue": "leak diagnostic (sees its block's later words)",
}
PARTITIONS = {"fixed": "fixed blocks", "punctuation": "punctuation blocks",
              "recruited": "recruited blocks", "bigram": "bigram blocks",
              "random": "random blocks of punctuation's lengths"}


def number(v, digits: int = 3) -> str:
    """A number as a person reads it: ``digits`` significant figures, never e-notation, "—"
    for a missing value, and "≈ 0 (< 10⁻⁶)" for one too small to matter.

    >>> [number(x) for x in (3.971e-16, 0.0, 1234.5, 0.012345, None, float("nan"), -2e-9)]
    ['≈ 0 (< 10⁻⁶)', '0', '1,234', '0.0123', '—', '—', '≈ 0 (< 10⁻⁶)']
    """
    if v is None or not isinstance(v, (int, float)) or v != v:
        return "—"
    if v == 0:
        return "0"
    if abs(v) < 1e-6:
        return "≈ 0 (< 10⁻⁶)"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}" if abs(v) < 1e15 else "more than 10¹⁵"
    return f"{float(f'{v:.{digits}g}'):,.{max(0, digits - 1 - int(_floor_log10(v)))}f}"


def _floor_log10(v: float) -> int:
    import math
    return math.floor(math.log10(abs(v)))


def leak_title(run: dict, why: str) -> str:
    """A leaky run's warning line, by what it is rather than its run id."""
    lam = run.get("locality")
    at = (f", trained at λ = {lam:g}" if isinstance(lam, (int, float))
          and not isinstance(lam, bool) else "")
    return f"A leak{at}: {why}"


def _variant(v: str) -> str:
    if v in VARIANTS:
        return VARIANTS[v]
    m = re.fullmatch(r"beta(\d+(?:\.\d+)?)", v)
    if m:
        return f"β = {m.group(1)}"
    m = re.fullmatch(r"block_size(\d+)", v)
    if m:
        return f"blocks of {m.group(1)}"
    return v.replace("_", " ")


def series_name(series: str) -> str:
    """A series as a person reads it.

    >>> series_name("dial protocol · beta64")
    'one model, dial turned'
    >>> series_name("attention penalty · as trained · block_size7")
    'trained for one λ, blocks of 7'
    >>> series_name("dial protocol")
    'one model, dial turned (β as trained)'
    >>> series_name("LEAK · attention-l0.6-noncausal_diagnostictrue")
    "leak diagnostic (sees its block's later words)"
    """
    if series.startswith("LEAK · "):
        return VARIANTS["noncausal_diagnostictrue"]
    for key, name in sorted(PARTS.items(), key=lambda kv: -len(kv[0])):
        if series == key or series.startswith(key + " · "):
            rest = series[len(key) + 3:] if series != key else ""
            if key == "dial protocol" and not rest:
                return f"{name} (β as trained)"
            extra = _variant(rest) if rest else ""
            return f"{name}, {extra}" if extra else name
    if series.startswith("fixed (b="):
        return f"fixed blocks of {series[len('fixed (b='):-1]}"
    return PARTITIONS.get(series, series.replace("_", " "))
