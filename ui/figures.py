"""Plotly figure builders for one analysed text: attention heatmaps, entropy strips, top-k bars
and the recruitment trace (no streamlit here; pages only display them). The Tradeoff page's
panels are ``ui.sweep_figures``; the Theory page's curves ``ui.theory_figures``.

Heatmaps put tokens on integer positions (so repeated words stay distinct), fix the colour scale
to [0, 1] (or a log scale), grey the masked future, draw block boundaries and mark anchors.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

FUTURE_GREY = "#d9d9d9"
LOG_FLOOR = 1e-4


def inert(text: str) -> str:
    """Escape the characters plotly would read as its HTML subset (<b>, <a href>, …), so that
    user text is shown, never interpreted. ``<unk>`` still reads as ``<unk>``."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _tick_labels(labels: list[str], anchors: np.ndarray | None) -> list[str]:
    star = anchors if anchors is not None else np.zeros(len(labels), bool)
    return [f"{i}·{inert(w)}{' ★' if star[i] else ''}" for i, w in enumerate(labels)]


def _boundaries(block_ids: np.ndarray) -> list[float]:
    """Positions (between tokens) where a new block starts."""
    return [i - 0.5 for i in range(1, len(block_ids)) if block_ids[i] != block_ids[i - 1]]


def attention_heatmap(pattern: np.ndarray, labels: list[str], block_ids: np.ndarray,
                      anchor_mask: np.ndarray | None = None,
                      block_anchors: np.ndarray | None = None, log_scale: bool = False,
                      title: str = "", diverging: bool = False) -> go.Figure:
    """Heatmap of a ``[query, key]`` pattern; masked (future) cells are grey, not zero.

    Built for speed at T = 128 (the bar in BENCHMARKS.md: ≤ 30 ms): the axes are categories named
    ``"pos·word"`` (unique, so repeated words stay apart, and hover reads them directly), the
    exact weight rides along as a numeric ``customdata`` array (sent to the browser as a typed
    array, not as 16k strings), and the block lines go into ``layout.shapes`` in one call.
    """
    n = len(labels)
    z = np.array(pattern, dtype=np.float32)           # float32 halves what the browser gets
    future = np.triu(np.ones((n, n), bool), k=1) & (z == 0)
    z[future] = np.nan                                  # drawn as the grey background
    exact = z.copy()
    if diverging:
        zmin, zmax, colorscale = -1.0, 1.0, "RdBu_r"
        colorbar = dict(title="Δ weight")
    elif log_scale:
        z = np.log10(np.clip(z, LOG_FLOOR, 1.0))
        zmin, zmax, colorscale = float(np.log10(LOG_FLOOR)), 0.0, "Viridis"
        ticks = list(range(int(np.log10(LOG_FLOOR)), 1))
        colorbar = dict(title="weight", tickvals=ticks, ticktext=[f"1e{t}" for t in ticks])
    else:
        zmin, zmax, colorscale = 0.0, 1.0, "Viridis"
        colorbar = dict(title="weight")
    names = _tick_labels(labels, block_anchors)       # unique: each starts with its position
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, zmin=zmin, zmax=zmax, colorscale=colorscale,
        colorbar=colorbar, customdata=exact, hoverongaps=False,
        hovertemplate="query %{y}<br>key %{x}<br>weight %{customdata:.5f}<extra></extra>"))
    line = dict(color="white", width=1.5)
    shapes = []
    for b in _boundaries(block_ids):   # category axes place shapes at the category index
        shapes.append(dict(type="line", x0=b, x1=b, y0=-0.5, y1=n - 0.5, line=line))
        shapes.append(dict(type="line", x0=-0.5, x1=n - 0.5, y0=b, y1=b, line=line))
    if anchor_mask is not None and anchor_mask.any():
        q_idx, k_idx = np.nonzero(anchor_mask)
        fig.add_trace(go.Scatter(x=[names[k] for k in k_idx], y=[names[q] for q in q_idx],
                                 mode="markers", name="anchor of the block",
                                 marker=dict(symbol="circle-open", size=7, color="#ff7f0e",
                                             line=dict(width=1.5)),
                                 hoverinfo="skip", showlegend=True))
    fig.update_layout(
        title=inert(title), plot_bgcolor=FUTURE_GREY, height=max(420, 16 * n + 160),
        shapes=shapes,
        margin=dict(l=10, r=10, t=60 if title else 30, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        xaxis=dict(title="key", type="category", tickangle=-60, side="bottom", showgrid=False,
                   zeroline=False, constrain="domain"),
        yaxis=dict(title="query", type="category", autorange="reversed", showgrid=False,
                   zeroline=False, scaleanchor="x"))
    return fig


def entropy_strip(entropy: np.ndarray, labels: list[str], ceiling: np.ndarray | None = None
                  ) -> go.Figure:
    """Per-query entropy (bits) as bars, with the causal ceiling log₂(t+1) as a line."""
    n = len(labels)
    x = list(range(n))
    safe = [inert(w) for w in labels]
    fig = go.Figure(go.Bar(x=x, y=entropy, name="entropy",
                           customdata=safe, hovertemplate="%{x} · %{customdata}: %{y:.3f} bits"
                                                            "<extra></extra>"))
    ceil = np.log2(np.arange(1, n + 1)) if ceiling is None else ceiling
    fig.add_trace(go.Scatter(x=x, y=ceil, mode="lines", name="ceiling log₂(#visible)",
                             line=dict(dash="dot", color="grey")))
    fig.update_layout(height=230, margin=dict(l=10, r=10, t=30, b=10), yaxis_title="bits",
                      xaxis=dict(tickvals=x, ticktext=[f"{i}·{w}" for i, w in enumerate(safe)],
                                 tickangle=-60),
                      legend=dict(orientation="h", y=1.15))
    return fig


def top_tokens_bar(words: list[str], probs: np.ndarray, title: str = "") -> go.Figure:
    fig = go.Figure(go.Bar(x=list(probs)[::-1], y=[inert(w) for w in words][::-1],
                           orientation="h",
                           hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), title=inert(title),
                      xaxis=dict(range=[0, 1], title="probability"))
    return fig


def recruitment_chart(labels: list[str], gain_bits: np.ndarray, block_ids: np.ndarray,
                      title: str = "") -> go.Figure:
    """The recruited partition's split test at every position: bars of bits gained, solid where
    a block was recruited (gain > 0), pale where the test said "continue"; orange dotted lines
    mark the block starts."""
    n = len(labels)
    safe = [inert(w) for w in labels]
    names = [f"{i}·{w}" for i, w in enumerate(safe)]
    gain = np.asarray(gain_bits, dtype=np.float32)
    starts = np.zeros(n, bool)
    starts[1:] = block_ids[1:] != block_ids[:-1]
    colours = np.where(starts, "#1f77b4", "#c6dbef")
    fig = go.Figure(go.Bar(
        x=names, y=gain, marker_color=colours.tolist(), customdata=starts.astype(int),
        hovertemplate="%{x}: %{y:+.2f} bits<extra></extra>", name="bits saved by a split"))
    zero = dict(type="line", xref="paper", x0=0, x1=1, y0=0, y1=0,
                line=dict(color="black", width=1))
    fig.update_layout(
        title=inert(title), height=300, margin=dict(l=10, r=10, t=50 if title else 20, b=10),
        shapes=[zero] + [dict(type="line", x0=b, x1=b, yref="paper", y0=0, y1=1,
                              line=dict(color="#ff7f0e", width=1, dash="dot"))
                         for b in _boundaries(block_ids)],
        xaxis=dict(type="category", tickangle=-60), yaxis=dict(title="gain (bits)"),
        showlegend=False)
    return fig
