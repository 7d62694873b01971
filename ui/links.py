"""Deep links and the values kept across pages: every value that arrives by link is validated
(a bad one falls back to its default with a notice), the settings are mirrored back into the URL,
and ``keep`` carries each widget's value from page to page."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import streamlit as st

from localist_core.analysis.inspection import cut_text
from localist_core.model.config import (
    ANCHOR_STRENGTH_RANGE,
    ANCHOR_STRENGTH_SLIDER_MAX,
    LOCALITY_RANGE,
    PARTITIONS,
    TEMPERATURE_RANGE,
    ModelConfig,
)
from ui.notices import show_notices
from ui.server_guard import LINK_CUT, QUERY_MAX_BYTES

if TYPE_CHECKING:
    from ui import Settings

# Deep-link parameter → (session key, parser). Parsers raise ValueError on bad input.
LINK_KEYS = ("ckpt", "lam", "tau", "gamma", "blocks", "block", "layer", "head", "prompt",
             "text")
BLOCK_CHOICES = ("as trained",) + PARTITIONS
# The fixed windows' size at inference, from the sidebar or a link's "block": a whole number in
# this range (narrower than ModelConfig's, which a checkpoint may use up to MODEL_SIZE_LIMITS),
# by default ModelConfig's own, the size the shipped models were trained with.
BLOCK_SIZE_RANGE = (1, 64)
BLOCK_SIZE_DEFAULT = ModelConfig.block_size


# -- deep links ------------------------------------------------------------------------------

def _number(raw: str, lo: float, hi: float, name: str) -> float:
    v = float(raw)
    if not math.isfinite(v):
        raise ValueError(f"{name}={raw!r} is not a finite number")
    if not lo <= v <= hi:
        raise ValueError(f"{name}={raw!r} is outside [{lo:g}, {hi:g}]")
    return v


def _whole(raw: str, lo: int, hi: int, name: str) -> int:
    v = _number(raw, lo, hi, name)
    if v != int(v):
        raise ValueError(f"{name}={raw!r} is not a whole number")
    return int(v)


def _index(raw: str, n: int, name: str) -> int | str:
    if raw == "mean":
        return "mean"
    v = int(raw)
    if not 0 <= v < n:
        raise ValueError(f"{name}={raw!r} is not in 0..{n - 1}")
    return v


def read_deep_link(ckpt_keys: list[str], prompts: dict[str, str], n_layers: int = 64,
                   n_heads: int = 64) -> tuple[dict, list[str]]:
    """Parse ``st.query_params`` into session values; bad ones are skipped with a notice."""
    qp = st.query_params
    values, notices = {}, []
    parsers = {
        "ckpt": lambda r: r if r in ckpt_keys else (_ for _ in ()).throw(
            ValueError(f"ckpt={r!r} is not a shipped checkpoint")),
        "lam": lambda r: _number(r, *LOCALITY_RANGE, "lam"),
        "tau": lambda r: _number(r, *TEMPERATURE_RANGE, "tau"),
        "gamma": lambda r: _number(r, ANCHOR_STRENGTH_RANGE[0], ANCHOR_STRENGTH_SLIDER_MAX,
                                   "gamma"),
        "blocks": lambda r: r if r in BLOCK_CHOICES[1:] else (_ for _ in ()).throw(
            ValueError(f"blocks={r!r} is not one of {PARTITIONS}")),
        "block": lambda r: _whole(r, *BLOCK_SIZE_RANGE, "block"),
        "layer": lambda r: _index(r, n_layers, "layer"),
        "head": lambda r: _index(r, n_heads, "head"),
        "prompt": lambda r: r if r in prompts else (_ for _ in ()).throw(
            ValueError(f"prompt={r!r} is not a sample prompt")),
        "text": str,   # cut to MAX_TEXT_CHARS, with a notice, by apply_deep_link
    }
    if LINK_CUT in qp:    # ui.server_guard cut a link too long to read
        notices.append(f"The link was {qp[LINK_CUT][:12]} characters long; only its first "
                       f"{QUERY_MAX_BYTES // 1024} KB were read, so the parameters after that "
                       f"(often a long text) use their defaults.")
    for key in LINK_KEYS:
        if key not in qp:
            continue
        raw = qp[key]
        try:
            values[key] = parsers[key](raw)
        except (ValueError, TypeError):
            shown = raw if len(raw) < 40 else raw[:40] + "…"
            notices.append(f"Link parameter {key}={shown!r} is not valid; using the default.")
    return values, notices


def write_deep_link(s: Settings, layer, head) -> None:
    """Mirror the current settings into the URL (only what differs, to avoid extra reruns)."""
    if not s.checkpoint_key:
        return
    want = {"ckpt": s.checkpoint_key, "lam": f"{s.locality:g}",
            "tau": f"{s.attn_temperature:g}", "gamma": f"{s.rule_strength:g}",
            "layer": str(layer), "head": str(head)}
    if s.partition is not None:
        want["blocks"] = s.partition
    if s.partition == "fixed" and s.block_size is not None:
        want["block"] = str(s.block_size)
    if s.text_source.startswith("prompt:"):
        want["prompt"] = s.text_source.split(":", 1)[1]
    else:
        want["text"] = s.text[:2000]
    current = st.query_params.to_dict()
    for k in ("prompt", "text", "blocks", "block"):
        if k in current and k not in want:
            del st.query_params[k]
    for k, v in want.items():
        if current.get(k) != v:
            st.query_params[k] = v


# -- values kept across pages ------------------------------------------------------------------
# Every page calls ``ui.page_setup()``, which draws the same sidebar. A widget's state is tied to
# the page that drew it, so each value is also kept under "_p_<key>" and re-seeded on every
# page: moving λ on Explorer keeps λ on Compare.

PERSIST = "_p_"


def _save(key: str) -> None:
    """A widget's on_change: persist its value (none for a stale widget id that is no longer
    in the session, which raised KeyError)."""
    if key in st.session_state:
        st.session_state[PERSIST + key] = st.session_state[key]


def keep(key: str, default, options=None):
    """Seed widget ``key`` from its persisted value (``default`` when absent or not among
    ``options``) on the first run of each page visit; returns the widget's keyword arguments.

    Seeding only when the page changes leaves the browser's value alone on ordinary reruns, so
    quick slider moves are never overwritten by an older value.
    """
    ss = st.session_state
    value = ss.get(PERSIST + key, default)
    if options is not None and value not in options:
        value = default
    seeded = ss.setdefault("_seeded", {})
    page = ss.get("_page")
    if seeded.get(key) != page or key not in ss or (
            options is not None and ss[key] not in options):
        ss[key] = value
        seeded[key] = page
    return {"key": key, "on_change": _save, "args": (key,)}


def apply_deep_link(usable_keys: list[str], prompts: dict[str, str]) -> None:
    """Read the link once per session into the persisted values (``keep`` seeds the widgets
    from them); its notices wait in session state for ``ui.page_setup``."""
    ss = st.session_state
    values, notices = read_deep_link(usable_keys, prompts)
    ss["_link_notices"] = notices
    for key in ("ckpt", "lam", "tau", "gamma", "layer", "head", "blocks", "block"):
        if key in values:
            ss[PERSIST + key] = values[key]
    if "block" in values and "blocks" not in values:   # a link from before the Blocks menu
        ss[PERSIST + "blocks"] = "fixed"
    if "prompt" in values:
        ss[PERSIST + "text_mode"], ss[PERSIST + "prompt"] = "Sample text", values["prompt"]
    elif "text" in values:
        text, cut = cut_text(values["text"], "The linked text")
        notices += cut
        ss[PERSIST + "text_mode"] = "Your own text"
        ss[PERSIST + "free_text"] = text


def fit_choice(key: str, options: list, name: str) -> None:
    """Reset the persisted choice ``key`` to its first option when it is not among
    ``options`` (a link asked for layer 10 of a 2-layer model), with a notice when it came
    from a link."""
    ss = st.session_state
    value = ss.get(PERSIST + key)
    if value is not None and value not in options:
        ss[PERSIST + key] = options[0]
        if key in st.query_params:
            show_notices([f"Link parameter {key}={value!r} is not a {name} of this model "
                          f"(it has {len(options) - 1}); showing the {options[0]}."])
