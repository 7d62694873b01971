"""Plotly figure builders for the dashboard: attention heatmaps, entropy strips, top-k bars, the
recruitment trace, the Theory page's curves and the Tradeoff page's sweep-result panels (no
streamlit here; pages only display them).

Heatmaps put tokens on integer positions (so repeated words stay distinct), fix the colour scale
to [0, 1] (or a log scale), grey the masked future, draw block boundaries and mark anchors.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from localist_core.experiments.results import LEAK, PAPERS, finite

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


def theory_figure(rows: list[dict]) -> go.Figure:
    """The Theory page's curves against τ (log axis): the measured cross-block mass, the
    papers' bound and, when the rows carry it, the typical-margin estimate, from
    ``theory_report``'s rows."""
    taus = [r["attn_temperature"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=taus, y=[r["measured_cross_mass"] for r in rows],
                             mode="lines+markers", name="measured cross-block mass"))
    fig.add_trace(go.Scatter(x=taus, y=[r["bound_cross_mass"] for r in rows],
                             mode="lines+markers", name="bound n_x·e^(−δ/τ)/(n_in + n_x·e^(−δ/τ))",
                             line=dict(dash="dash")))
    if rows and all("estimate_cross_mass" in r for r in rows):
        fig.add_trace(go.Scatter(x=taus, y=[r["estimate_cross_mass"] for r in rows],
                                 mode="lines+markers", line=dict(dash="dot"),
                                 name="estimate at the typical margin (not a bound)"))
    fig.update_layout(xaxis=dict(title="τ", type="log"), yaxis=dict(title="mass", range=[0, 1]),
                      height=380, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(y=-0.25, orientation="h"))
    return fig


# -- sweep-result figures (Tradeoff) -----------------------------------------------------------

_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
            "#bcbd22", "#7f7f7f", "#393b79")
_REF_STYLE = {"ceiling": ("black", "dot"), "paper": ("crimson", "dash"),
              "baseline": ("grey", "dashdot")}
_CONTROLS = (("recent_b_mass", "recent-b control", "dot"),
             ("shifted_block_mass", "shifted-block control", "dash"))


def seed_error(pts: list[dict], key: str) -> dict | None:
    """± 1 sample sd across seeds (``<key>_sd``) as a plotly error bar, for points that average
    n > 1 seeds; None when no point does (a single-seed cache draws no bars)."""
    sds = [finite(p.get(f"{key}_sd")) if (p.get("n") or 1) > 1 else None for p in pts]
    if all(sd is None for sd in sds):
        return None
    return dict(type="data", array=[sd or 0.0 for sd in sds], visible=True, thickness=1.2,
                width=3)


def _add_series(fig, pts: list[dict], x: str, y: str, color: str, legend: bool, controls: bool,
                **rc) -> None:
    series = pts[0]["series"]
    leak = series.startswith(LEAK)
    color = "#d62728" if leak else color
    bars = {k: v for k, v in (("error_y", seed_error(pts, y)), ("error_x", seed_error(pts, x)))
            if v is not None}
    fig.add_trace(go.Scatter(
        x=[p[x] for p in pts], y=[p[y] for p in pts], mode="lines+markers+text",
        name=inert(series), legendgroup=series, showlegend=legend,
        text=[inert(p["label"]) for p in pts], textposition="top center",
        textfont=dict(size=10, color=color), customdata=[inert(p["run_id"]) for p in pts],
        marker=dict(symbol="triangle-up" if leak else "circle", size=11 if leak else 7,
                    color=color), line=dict(dash="dot" if leak else "solid", color=color),
        hovertemplate="%{customdata} · %{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>", **bars),
        **rc)
    for key, name, dash in _CONTROLS if controls else ():
        cp = [p for p in pts if finite(p.get(key)) is not None]
        fig.add_trace(go.Scatter(x=[p[x] for p in cp], y=[p[key] for p in cp], mode="lines",
                                 name=inert(f"{series}: {name}"), legendgroup=series,
                                 showlegend=legend, line=dict(dash=dash, width=1, color=color)),
                      **rc)


def _add_line(fig, ref: dict, vertical: bool, lo: float, hi: float, legend: bool, **rc) -> None:
    color, dash = _REF_STYLE.get(ref.get("kind"), ("grey", "dot"))
    v = ref["value"]
    xs, ys = ([v, v], [lo, hi]) if vertical else ([lo, hi], [v, v])
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=inert(ref["label"]),
                             legendgroup=ref["label"], showlegend=legend, hoverinfo="name",
                             line=dict(color=color, dash=dash, width=1.5)), **rc)


def _padded(values: list[float], log: bool, pad: float = 0.08) -> list[float] | None:
    """An axis range with room for the point labels (log axes take log10 bounds)."""
    vals = [math.log10(v) for v in values if v > 0] if log else list(values)
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    margin = pad * ((hi - lo) or (1.0 if not log else 0.5))
    return [lo - margin, hi + margin]


def panel_figure(points: list[dict], x: str, x_title: str, panels: list[dict], *,
                 papers: list[dict] | None = None, vlines: list[dict] | None = None,
                 log_x: bool = False, controls: bool = False, height: int = 460) -> go.Figure:
    """Side-by-side panels sharing x and one legend: one labelled marker per point and a line per
    series, leaks as red triangles, the papers' reports as crimson crosses, reference lines
    (ceilings, baselines, the papers' figures) named in the legend.

    ``panels``: dicts with ``y``, ``title`` and optional ``hlines`` and ``log_y``. Points that
    average n > 1 seeds carry error bars of ± 1 sd across seeds (``seed_error``).
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.08)
    colors = {s: _PALETTE[i % len(_PALETTE)]
              for i, s in enumerate(dict.fromkeys(p["series"] for p in points))}
    shown: set[str] = set()
    for col, panel in enumerate(panels, start=1):
        y, rc, xs_extra = panel["y"], {"row": 1, "col": col}, []
        pts = [p for p in points if finite(p.get(x)) is not None and finite(p.get(y)) is not None]
        for series in dict.fromkeys(p["series"] for p in pts):
            _add_series(fig, [p for p in pts if p["series"] == series], x, y, colors[series],
                        series not in shown, controls, **rc)
            shown.add(series)
        if controls:
            up = [p for p in pts if finite(p.get("uniform_in_block_mass")) is not None]
            if up:
                fig.add_trace(go.Scatter(
                    x=[p[x] for p in up], y=[p["uniform_in_block_mass"] for p in up],
                    mode="markers", name="uniform-attention control", showlegend=col == 1,
                    marker=dict(symbol="line-ew-open", size=14, color="grey")), **rc)
        for p in papers or []:
            if finite(p.get(x)) is not None and finite(p.get(y)) is not None:
                fig.add_trace(go.Scatter(
                    x=[p[x]], y=[p[y]], mode="markers+text", name=inert(p["label"]),
                    legendgroup=p["label"], showlegend=p["label"] not in shown, text=[PAPERS],
                    textposition="bottom center", textfont=dict(color="crimson"),
                    marker=dict(symbol="x", size=13, color="crimson")), **rc)
                shown.add(p["label"])
                xs_extra.append(p[x])
        hl, vl = panel.get("hlines") or [], vlines or []
        xs = [p[x] for p in pts] + [r["value"] for r in vl] + xs_extra
        ys = [p[y] for p in pts] + [r["value"] for r in hl]
        for refs, vertical, span in ((hl, False, xs), (vl, True, ys)):
            for r in refs if span else ():
                _add_line(fig, r, vertical, min(span), max(span), r["label"] not in shown, **rc)
                shown.add(r["label"])
        fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear",
                         range=_padded(xs, log_x), **rc)
        fig.update_yaxes(title_text=panel["title"], type="log" if panel.get("log_y") else
                         "linear", **rc)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(font=dict(size=11), tracegroupgap=2))
    return fig


def points_figure(points: list[dict], x: str, y: str, x_title: str, y_title: str, *,
                  papers: list[dict] | None = None, hlines: list[dict] | None = None,
                  vlines: list[dict] | None = None, log_x: bool = False, log_y: bool = False,
                  controls: bool = False, height: int = 440) -> go.Figure:
    """A single-panel ``panel_figure``."""
    return panel_figure(points, x, x_title, [{"y": y, "title": y_title, "hlines": hlines,
                                              "log_y": log_y}], papers=papers, vlines=vlines,
                        log_x=log_x, controls=controls, height=height)
