"""The Explorer's dial in motion and its grid of heads. The animation's frames are one analysis per
value of a fixed grid of λ (or τ), computed once per (checkpoint, text, the rest of the dial) and
cached bounded; the grid opens a head in the main view from the analysis already computed."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from localist_core.analysis.inspection import analyze, reduce_heads
from localist_core.model.config import LOCALITY_RANGE, TEMPERATURE_RANGE
from ui.figures import dial_animation, panel_name, visible_weights
from ui.links import PERSIST
from ui.loaders import load_checkpoint
from ui.notices import guarded

if TYPE_CHECKING:
    from ui import Settings

FRAMES = 11   # frames of the animation, on either axis: one forward pass each
# λ in even steps over its range (0, 0.1, …, 1). τ in geometric steps from the bottom of its range
# to 1 (how the models were trained) and from 1 to the top, so that τ = 1 is a frame.
LOCALITY_FRAMES = tuple(round(float(v), 3) for v in np.linspace(*LOCALITY_RANGE, FRAMES))
_BELOW = round((FRAMES - 1) * math.log(1 / TEMPERATURE_RANGE[0])
               / math.log(TEMPERATURE_RANGE[1] / TEMPERATURE_RANGE[0]))
TEMPERATURE_FRAMES = tuple(float(f"{v:.3g}") for v in np.concatenate([
    np.geomspace(TEMPERATURE_RANGE[0], 1.0, _BELOW + 1),
    np.geomspace(1.0, TEMPERATURE_RANGE[1], FRAMES - _BELOW)[1:]]))
# The dial field each axis moves → its frames.
AXES = {"locality": LOCALITY_FRAMES, "attn_temperature": TEMPERATURE_FRAMES}
SYMBOLS = {"locality": "λ", "attn_temperature": "τ", "rule_strength": "γ"}   # Dial fields
# The metric tiles that move with the frames: key → label (perplexity is the text's own).
TILES = {"entropy_bits": "entropy (bits)", "in_block_mass": "in-block mass",
         "perplexity": "perplexity"}
# Limits (README "Limits"): one entry holds FRAMES fp16 pattern stacks, FRAMES ×
# inspection.analysis_bytes_bound() at most (4.6 MiB for the shipped models), so ≤ 37 MiB in all.
MOTIONS_KEPT = 8
# Built animations: FRAMES float32 [T, T] views each (twice that on the log scale), 1.4 MiB at
# T = 128 and 5.6 MiB at T = 256 (MAX_TOKENS), so ≤ 11 MiB (≤ 45 MiB at T = 256) in all.
FIGURES_KEPT = 8
# The grid of heads: at most GRID_MAX_SHOWN layers (rows) and heads (columns) are drawn, plus the
# means (which cover all of them); its panels together hold at most GRID_CELL_BUDGET cells (what
# one grid sends the browser), each the mean of pool × pool visible weights.
GRID_MAX_SHOWN = 16
GRID_CELL_BUDGET = 120_000


@dataclass
class Motion:
    """The frames of one animation: the patterns and metric tiles at each value of the axis,
    and what does not move (the partition and the anchors do not depend on λ or τ)."""

    axis: str                          # the Dial field that moves: "locality" or "attn_temperature"
    values: tuple[float, ...]          # its value in each frame
    patterns: np.ndarray               # [frame, layer, head, query, key] float16
    tiles: dict[str, np.ndarray]       # TILES key → [frame] (NaN where undefined)
    labels: list[str]
    block_ids: np.ndarray
    block_anchors: np.ndarray
    anchor_mask: np.ndarray

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.axis]

    @property
    def labelled_tiles(self) -> dict[str, np.ndarray]:
        """The tiles under their labels (TILES), as the animation draws them."""
        return {TILES[k]: v for k, v in self.tiles.items()}


def dial_frames(model, tokenizer, text: str, dial, axis: str, block_size: int | None = None,
                partition: str | None = None) -> Motion:
    """Analyse ``text`` at every frame of ``axis``, the rest of ``dial`` held fixed."""
    values = AXES[axis]
    runs = [analyze(model, tokenizer, text, replace(dial, **{axis: v}), block_size=block_size,
                    partition=partition) for v in values]
    first = runs[0]
    tiles = {k: np.array([a.metrics[k]["mean"] if k in a.metrics else np.nan for a in runs])
             for k in TILES if k != "perplexity"}
    tiles["perplexity"] = np.array([np.nan if a.perplexity is None else a.perplexity
                                    for a in runs])
    return Motion(axis, values, np.stack([a.patterns for a in runs]), tiles, first.labels,
                  first.block_ids, first.block_anchors, first.anchor_mask)


@st.cache_data(show_spinner="Computing the frames…", max_entries=MOTIONS_KEPT)
def cached_motion(path: str, text: str, dial, axis: str, block_size: int | None,
                  partition: str | None) -> Motion:
    model, tok = load_checkpoint(path)
    return dial_frames(model, tok, text, dial, axis, block_size, partition)


@st.cache_resource(show_spinner=False, max_entries=FIGURES_KEPT)
def cached_animation(path: str, text: str, dial, axis: str, block_size: int | None,
                     partition: str | None, layer: int | str, head: int | str,
                     log_scale: bool):
    """The animation of one view, built once: building it (frames, slider, subplots) costs
    ~100 ms, handing a built one to st.plotly_chart ~10 ms. Shared by every session and never
    changed after it is built (st.plotly_chart reads a copy)."""
    m = cached_motion(path, text, dial, axis, block_size, partition)
    views = frame_views(m, None if layer == "mean" else layer, None if head == "mean" else head)
    held = {k: v for k, v in dial.as_dict().items() if k != axis}
    return dial_animation(
        views, m.values, m.symbol, m.labelled_tiles, m.labels, m.block_ids, m.anchor_mask,
        m.block_anchors, log_scale=log_scale, log_axis=axis == "attn_temperature",
        title=f"{panel_name(layer, head)} · "
              + " ".join(f"{SYMBOLS[k]}={v:g}" for k, v in held.items()))


@guarded("draw the dial in motion")
def animation(s: Settings, axis: str, layer: int | str, head: int | str, log_scale: bool):
    """The animation along ``axis`` of one view (layer and head: an index or "mean") for the
    sidebar's settings. The moving field is set to its first frame before any cache sees the
    dial, so moving it on the sidebar never recomputes the frames."""
    if axis not in AXES:
        raise ValueError(f"no animation along {axis!r}")
    dial = replace(s.dial, **{axis: AXES[axis][0]})
    return cached_animation(s.checkpoint_path, s.text, dial, axis, s.block_size, s.partition,
                            layer, head, bool(log_scale))


def frame_views(m: Motion, layer: int | None, head: int | None) -> np.ndarray:
    """``[frame, query, key]``: the view of one head (or a mean; None) in every frame."""
    return np.stack([reduce_heads(p, layer, head) for p in m.patterns])


# -- the grid of heads ---------------------------------------------------------------------------
# Clicking a panel sets the Explorer's layer and head selectboxes (widget keys "layer", "head",
# kept across pages under PERSIST + key by ui.links.keep).

def panel_choice(event) -> tuple[int | str, int | str] | None:
    """(layer, head) of the grid panel a plotly chart event picked (each an index or "mean"),
    or None when nothing usable was picked. The event comes from the browser: anything odd in
    it is ignored, never raised."""
    try:
        for p in event.get("selection").get("points") or []:
            data = p.get("customdata")
            if isinstance(data, (list, tuple)) and len(data) == 2:
                return tuple(v if v == "mean" else int(v) for v in data)
    except (AttributeError, TypeError, ValueError, OverflowError):
        pass
    return None


def open_panel(chart_key: str, n_layers: int, n_heads: int) -> None:
    """on_select callback of the grid: open the clicked panel in the main view. Runs before the
    rerun, so the selectboxes are drawn with the new values."""
    ss = st.session_state
    choice = panel_choice(ss.get(chart_key))
    if choice is None:
        return
    layer, head = choice
    if (layer != "mean" and not 0 <= layer < n_layers) or (
            head != "mean" and not 0 <= head < n_heads):
        return
    for key, value in (("layer", layer), ("head", head)):
        ss[key] = ss[PERSIST + key] = value


def opener(chart_key: str, n_layers: int, n_heads: int):
    """The grid chart's ``on_select`` callback (``open_panel`` for this chart and model)."""
    return functools.partial(open_panel, chart_key, n_layers, n_heads)



@dataclass
class HeadPanels:
    """The grid of heads: ``panels[row, column]`` is a ``[side, side]`` view (NaN where the
    future is masked) of layer ``layers[row]`` and head ``heads[column]`` ("mean": the mean)."""

    panels: np.ndarray                 # [rows, columns, side, side] float32
    layers: list                       # row → layer index or "mean"
    heads: list                        # column → head index or "mean"
    pool: int                          # tokens per cell side


def pooled(view: np.ndarray, pool: int) -> np.ndarray:
    """A ``[query, key]`` view shrunk ``pool`` times on each side: each cell is the mean of the
    visible weights it covers, NaN where all of them are masked (the future)."""
    z = visible_weights(view)
    side = -(-len(z) // pool)
    pad = side * pool - len(z)
    z = np.pad(z, ((0, pad), (0, pad)), constant_values=np.nan).reshape(side, pool, side, pool)
    seen = np.isfinite(z)
    count = seen.sum((1, 3))
    total = np.where(seen, z, 0).sum((1, 3))
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


@guarded("draw the grid of heads")
def head_panels(patterns: np.ndarray) -> HeadPanels:
    """The grid of heads of an analysis's ``[layer, head, T, T]`` patterns: one panel per layer ×
    head and the means (the Explorer's layer and head choices), within the grid's limits."""
    n_layers, n_heads, t = patterns.shape[:3]
    layers = list(range(min(n_layers, GRID_MAX_SHOWN))) + ["mean"]
    heads = list(range(min(n_heads, GRID_MAX_SHOWN))) + ["mean"]
    widest = max(1, math.isqrt(GRID_CELL_BUDGET // (len(layers) * len(heads))))
    pool = -(-t // widest)
    panels = np.stack([np.stack([pooled(reduce_heads(patterns, None if ly == "mean" else ly,
                                                     None if h == "mean" else h), pool)
                                 for h in heads]) for ly in layers])
    return HeadPanels(panels, layers, heads, pool)
