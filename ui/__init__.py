"""The dashboard's one helper module: cached loaders, the shared sidebar and deep links.

Pages call ``settings()`` (built once per rerun by app.py) and the cached loaders here; they hold
no tensor maths. Every value that arrives by deep link is validated; a bad one falls back to
its default with a visible notice.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st

from localist_core import CheckpointError, load_model
from localist_core.analysis.inspection import (
    MAX_TEXT_CHARS,
    analyze,
    recruitment_trace,
    theory_report,
)
from localist_core.analysis.inspection import next_words as next_words_after
from localist_core.experiments.results import cache_stamp, read_baselines
from localist_core.experiments.sweep import cached_run_pattern, load_cache
from localist_core.model.config import PARTITIONS, RULE_STRENGTH_RANGE, TEMPERATURE_RANGE
from localist_core.paths import PROMPTS_FILE, REPO, SHIPPED_SWEEP
from ui.catalogue import list_checkpoints

LOG = logging.getLogger(__name__)
DEFAULTS = {"lam": 0.0, "tau": 1.0, "gamma": 0.0, "layer": "mean", "head": "mean"}
# Limits (README "Limits"): every cache is bounded. One analysis holds at most
# inspection.analysis_bytes_bound() bytes (0.42 MiB for the shipped models), so ≤ 80 MiB in all.
ANALYSES_KEPT = 192
MAPS_KEPT = 32    # stored sweep maps: 0.25 MiB each for the shipped runs, at most 4 MiB
GAMMA_MAX = 5.0   # the γ slider's top; a link may not ask for more than the slider can show
# Deep-link parameter → (session key, parser). Parsers raise ValueError on bad input.
LINK_KEYS = ("ckpt", "lam", "tau", "gamma", "blocks", "block", "layer", "head", "prompt",
             "text")
BLOCK_CHOICES = ("as trained",) + PARTITIONS


@dataclass(frozen=True)
class Settings:
    """What the shared sidebar chose, as plain values."""

    checkpoint_key: str | None
    checkpoint_path: str | None
    checkpoint_label: str
    protocol: str
    trained_locality: float | None
    locality: float
    attn_temperature: float
    rule_strength: float
    block_size: int | None
    text: str
    text_source: str
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)   # what was cut or changed, for the user
    partition: str | None = None   # re-block the text at inference; None: as trained


# -- cached loaders (each reads only its own arguments) --------------------------------------

@st.cache_resource(show_spinner="Loading the model…", max_entries=6)
def load_checkpoint(path: str):
    """(model, tokenizer); one copy shared by every session, safe to share (run lock)."""
    return load_model(path)


@st.cache_data(show_spinner=False, max_entries=ANALYSES_KEPT)
def cached_analysis(path: str, text: str, lam: float, tau: float, gamma: float,
                    block_size: int | None, partition: str | None = None,
                    rule: tuple | None = None):
    """``rule`` is ``(source_kind, source, target_kind, target, strength)``, already checked
    by ``make_rule`` (plain values keep the cache key simple)."""
    model, tok = load_checkpoint(path)
    return analyze(model, tok, text, lam, tau, gamma, block_size, partition, rule)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_trace(path: str, text: str):
    """Where the recruited partition starts blocks in ``text`` (live.recruitment_trace)."""
    model, tok = load_checkpoint(path)
    return recruitment_trace(model, tok, text)


@st.cache_data(show_spinner=False, max_entries=128)
def cached_theory(path: str, text: str, lam: float, layer: int):
    model, tok = load_checkpoint(path)
    return theory_report(model, tok, text, lam, layer)


@st.cache_data(show_spinner=False, max_entries=MAPS_KEPT)
def cached_map(cache_dir: str, run_id: str, prompt: str, lam: float, tau: float):
    """A stored ``[layer, head, T, T]`` map, kept as float16 as it is stored (at most
    sweep.MAX_MAP_BYTES each, so MAPS_KEPT of them at most 128 MiB)."""
    arr = cached_run_pattern(cache_dir, run_id, prompt, lam, tau)
    return None if arr is None else arr.astype(np.float16)


@st.cache_data(show_spinner=False, max_entries=4)
def sample_prompts(path: str) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {p["name"]: p["text"] for p in data["prompts"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {"castle": "The old castle stood on a hill above the river ."}


@st.cache_data(show_spinner=False, ttl=30, max_entries=8)
def _checkpoints(extra_dirs: str):
    return list_checkpoints(extra_dirs)


@st.cache_data(show_spinner="Reading the sweep cache…", max_entries=16)
def _sweep_results(folder: str, stamp: tuple) -> tuple[list[dict], list[str], dict | None]:
    runs, problems = load_cache(folder)
    return runs, problems, read_baselines(folder)


def sweep_results(folder: str) -> tuple[list[dict], list[str], dict | None]:
    """Runs, refused files (each named, with the reason) and baselines of a sweep cache; read
    again only when its files change."""
    return _sweep_results(str(folder), cache_stamp(folder))


def sweep_cache() -> str:
    """The sweep cache the pages read: $LOCALIST_SWEEP_CACHE, else the shipped one."""
    return os.environ.get("LOCALIST_SWEEP_CACHE") or str(SHIPPED_SWEEP)


def checkpoints():
    """Shipped checkpoints plus those under $LOCALIST_CHECKPOINT_DIRS (re-read every 30 s)."""
    return _checkpoints(os.environ.get("LOCALIST_CHECKPOINT_DIRS", ""))


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
        "lam": lambda r: _number(r, 0.0, 1.0, "lam"),
        "tau": lambda r: _number(r, *TEMPERATURE_RANGE, "tau"),
        "gamma": lambda r: _number(r, RULE_STRENGTH_RANGE[0], GAMMA_MAX, "gamma"),
        "blocks": lambda r: r if r in BLOCK_CHOICES[1:] else (_ for _ in ()).throw(
            ValueError(f"blocks={r!r} is not one of {PARTITIONS}")),
        "block": lambda r: _whole(r, 1, 64, "block"),
        "layer": lambda r: _index(r, n_layers, "layer"),
        "head": lambda r: _index(r, n_heads, "head"),
        "prompt": lambda r: r if r in prompts else (_ for _ in ()).throw(
            ValueError(f"prompt={r!r} is not a sample prompt")),
        "text": str,   # cut to MAX_TEXT_CHARS, with a notice, by _apply_deep_link
    }
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


# -- the shared sidebar ----------------------------------------------------------------------
# Every page calls ``page_setup()``, which draws the same sidebar. A widget's state is tied to
# the page that drew it, so each value is also kept under "_p_<key>" and re-seeded on every
# page: moving λ on Explorer keeps λ on Compare.

PERSIST = "_p_"


def _save(key: str) -> None:
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


def _apply_deep_link(usable_keys: list[str], prompts: dict[str, str]) -> None:
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
        text = values["text"]
        if len(text) > MAX_TEXT_CHARS:
            notices.append(f"The linked text has {len(text):,} characters; only the first "
                           f"{MAX_TEXT_CHARS:,} were read.")
        ss[PERSIST + "text_mode"] = "Your own text"
        ss[PERSIST + "free_text"] = text[:MAX_TEXT_CHARS]


def sidebar() -> Settings:
    """Render the shared controls and return the settings."""
    ss = st.session_state
    infos = checkpoints()
    usable = [c for c in infos if c.problem is None]
    prompts = sample_prompts(str(PROMPTS_FILE))
    if "_link_read" not in ss:
        ss["_link_read"] = True
        _apply_deep_link([c.key for c in usable], prompts)
    problems = [f"{c.key}: {c.problem}" for c in infos if c.problem]
    sb = st.sidebar
    if not usable:
        sb.error("No usable checkpoint in assets/checkpoints.")
        return Settings(None, None, "none", "none", None, 0.0, 1.0, 0.0, None, "", "none",
                        problems)
    keys = [c.key for c in usable]
    if ss.get(PERSIST + "ckpt") not in keys:
        ss[PERSIST + "ckpt"] = keys[0]
    labels = {c.key: c.label for c in usable}
    key = sb.selectbox("Checkpoint", keys, format_func=labels.get, **keep("ckpt", keys[0]),
                       help="The dial model was trained with λ drawn per batch, so one "
                            "checkpoint serves every λ. A penalty model was trained at one λ.")
    info = next(c for c in usable if c.key == key)
    lam = sb.slider("λ — locality", 0.0, 1.0, step=0.05, **keep("lam", DEFAULTS["lam"]),
                    help="0: ordinary (distributed) attention. 1: attention only inside the "
                         "query's block. In between, cross-block weights are scaled by "
                         "(1−λ)^(β/τ).")
    tau = sb.slider("τ — temperature", TEMPERATURE_RANGE[0], TEMPERATURE_RANGE[1], step=0.05,
                    **keep("tau", DEFAULTS["tau"]),
                    help="Lower τ sharpens attention; τ=1 is how the model was trained.")
    gamma = sb.slider("γ — rule strength toward anchors", RULE_STRENGTH_RANGE[0], GAMMA_MAX,
                      step=0.25, **keep("gamma", DEFAULTS["gamma"]),
                      help="Adds γ to the score of each block's anchor tokens.")
    blocks = sb.selectbox("Blocks", BLOCK_CHOICES, **keep("blocks", "as trained"),
                          help="How the text is cut into blocks. 'as trained' uses the "
                               "checkpoint's own partition; the others re-block the text at "
                               "inference only: fixed windows, punctuation (a block ends at . "
                               ", ; : ! ? or after 8 words) or recruited (a block starts where "
                               "the description-length test saves bits; see About).")
    block = 5
    if blocks == "fixed":
        block = sb.number_input("Block size (fixed windows)", 1, 64, **keep("block", 5),
                                help="The shipped models use 5.")
    mode = sb.radio("Text", ["Sample text", "Your own text"], horizontal=True,
                    **keep("text_mode", "Sample text"))
    if mode == "Sample text":
        names = list(prompts)
        if ss.get(PERSIST + "prompt") not in names:
            ss[PERSIST + "prompt"] = names[0]
        name = sb.selectbox("Sample", names, **keep("prompt", names[0]))
        text, source = prompts[name], f"prompt:{name}"
    else:
        # No max_chars: the browser would cut a paste silently. The cut happens here, with a
        # notice, before the text reaches any cache (README "Limits").
        text = sb.text_area("Your text", height=120, help=f"At most {MAX_TEXT_CHARS:,} "
                            "characters are read.",
                            **keep("free_text", next(iter(prompts.values()))))
        source = "free"
    notices = []
    if len(text) > MAX_TEXT_CHARS:
        notices.append(f"The text has {len(text):,} characters; only the first "
                       f"{MAX_TEXT_CHARS:,} were read.")
        text = text[:MAX_TEXT_CHARS]
    partition = None if blocks == "as trained" else blocks
    return Settings(key, info.path, info.label, info.protocol, info.locality, float(lam),
                    float(tau), float(gamma), int(block) if partition == "fixed" else None,
                    text, source, problems, notices, partition)


def page_setup(title: str) -> Settings:
    """The top of every page: shared sidebar, link notices, header; returns the settings."""
    s = sidebar()
    show_notices(st.session_state.get("_link_notices", []) + s.notices)
    st.header(title)
    for p in s.problems:
        st.caption(f"Not offered: {plain(p)}")
    write_deep_link(s, st.session_state.get(PERSIST + "layer", "mean"),
                    st.session_state.get(PERSIST + "head", "mean"))
    return s


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+-.!|<>~$:"})
# An absolute path: a "/" that does not follow a word character (so "λ/τ" is left alone).
_ABS_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"`,;:()\[\]<>|]*")


def _short_path(m: re.Match) -> str:
    path = Path(m.group(0))
    try:
        return str(path.relative_to(REPO)) or "."
    except ValueError:
        parts = path.parts
    # Only what starts at a real top-level folder (/tmp, /home, …) is a server path; a rule's
    # "/a{9}/" or a visitor's "/x/y" is their own text and stays as typed.
    if len(parts) <= 2 or not os.path.isdir(os.path.join("/", parts[1])):
        return m.group(0)
    return "…/" + "/".join(parts[-2:])


def shown(text: str) -> str:
    """``text`` without the server's file layout: a path inside the app's folder becomes
    relative to it, any other path under one of the server's top-level folders keeps its last
    two parts (``…/run/config.json``).
    The full message still goes to the server log where it is logged."""
    return _ABS_PATH.sub(_short_path, str(text))


def plain(text: str) -> str:
    """Escape Markdown so user-supplied text renders literally (HTML is never enabled), after
    cutting server paths out of it (``shown``)."""
    return shown(text).translate(_MD_SPECIAL)


def show_notices(notices: list[str]) -> None:
    """Notices as warnings, rendered as plain text (never as Markdown or HTML)."""
    for note in notices:
        st.warning(plain(note), icon="⚠️")


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


def next_words(s: Settings, a, pos: int):
    """(words, probabilities) of the top-5 next words after ``pos`` of an analysis."""
    model, tok = load_checkpoint(s.checkpoint_path)
    return next_words_after(model, tok, a, pos)


def _refused(e: Exception, path: str | None) -> None:
    """The notice for a checkpoint or computation that failed: the reason for a bad checkpoint,
    a generic line for anything else (the operator gets the trace in the server log)."""
    if isinstance(e, CheckpointError):
        st.error(plain(f"This checkpoint cannot be used: {e}"), icon="🚫")
    else:
        LOG.error("request failed for %s", path, exc_info=e)
        st.error("This text could not be analysed with this checkpoint; the server log has "
                 "the details.", icon="🚫")


def get_theory(s: Settings, layer: int):
    """The Theory page's cached report, or None after a notice when the checkpoint fails."""
    try:
        return cached_theory(s.checkpoint_path, s.text, s.locality, layer), True
    except Exception as e:   # noqa: BLE001 - a visitor gets a notice, never a traceback
        _refused(e, s.checkpoint_path)
        return None, False


def n_layers(s: Settings) -> int:
    """How many layers the selected checkpoint has (1 when it cannot be loaded; the page that
    needs the model then says why)."""
    try:
        return load_checkpoint(s.checkpoint_path)[0].cfg.n_layers
    except Exception:   # noqa: BLE001
        return 1


def get_analysis(s: Settings, lam: float | None = None, tau: float | None = None,
                 gamma: float | None = None, path: str | None = None, rule: tuple | None = None):
    """The cached analysis for the sidebar settings, or for overrides (Compare page) and a
    rule (Rules page)."""
    try:
        return cached_analysis(path or s.checkpoint_path, s.text,
                               s.locality if lam is None else lam,
                               s.attn_temperature if tau is None else tau,
                               s.rule_strength if gamma is None else gamma, s.block_size,
                               s.partition, rule)
    except Exception as e:   # noqa: BLE001 - a visitor gets a notice, never a traceback
        _refused(e, path or s.checkpoint_path)
        return None
