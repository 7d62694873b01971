"""Plotly figure builders for one analysed text: attention heatmaps, entropy strips, top-k bars,
the recruitment trace, the dial in motion and the grid of heads (no streamlit here; pages only
display them; ``ui.motion`` computes what the last two draw). The Tradeoff page's panels are
``ui.sweep_figures``; the Theory page's curves ``ui.theory_figures``.

Heatmaps put tokens on integer positions (so repeated words stay distinct), fix the colour scale
to [0, 1] (or a log scale), grey the masked future, draw block boundaries and mark anchors.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

FUTURE_GREY = "#d9d9d9"
LOG_FLOOR = 1e-4


def inert(text: str) -> str:
    """Escape the characters plotly would read as its HTML subset (<b>, <a href>, …), so that
    user text is shown, never interpreted. ``<unk>`` still reads as ``<unk>``."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _tick_labels(labels: list[str], anchors: np.ndarray | None) -> list[str]:
    star = anchors if anchors is not None else np.zeros(len(labels), bool)
    return [f"{i}·{inert(w)}{' ★' if star[i] else ''}" for i, w in enumerate(labels)]


# The heatmap's height: 16 px a token up to what a 720-px projector shows beside the tiles.
HEATMAP_MAX_HEIGHT = 600
CROSS_COLOURS = "OrRd"      # the "leaving the block" strip: its own scale, apart from Viridis


def _boundaries(block_ids: np.ndarray) -> list[float]:
    """Positions (between tokens) where a new block starts."""
    return [i - 0.5 for i in range(1, len(block_ids)) if block_ids[i] != block_ids[i - 1]]


def visible_weights(pattern: np.ndarray) -> np.ndarray:
    """A ``[query, key]`` pattern as float32 (half what the browser gets of float64) with the
    masked future as NaN, drawn as the grey background; the non-causal diagnostic's visible
    future keys keep their weight."""
    z = np.array(pattern, dtype=np.float32)
    n = z.shape[-1]
    z[np.triu(np.ones((n, n), bool), k=1) & (z == 0)] = np.nan
    return z


def _colour_scale(z: np.ndarray, log_scale: bool, diverging: bool):
    """(what to draw, zmin, zmax, colorscale, colorbar) of visible weights ``z``."""
    if diverging:
        return z, -1.0, 1.0, "RdBu_r", dict(title="Δ weight")
    if log_scale:
        ticks = list(range(int(np.log10(LOG_FLOOR)), 1))
        return (np.log10(np.clip(z, LOG_FLOOR, 1.0)), float(np.log10(LOG_FLOOR)), 0.0,
                "Viridis", dict(title="weight", tickvals=ticks,
                                ticktext=[f"1e{t}" for t in ticks]))
    return z, 0.0, 1.0, "Viridis", dict(title="weight")


def _block_lines(block_ids: np.ndarray, xref: str = "x", yref: str = "y") -> list[dict]:
    """One vertical and one horizontal white line per block boundary (category axes place
    shapes at the category index)."""
    n, line = len(block_ids), dict(color="white", width=1.5)
    shapes = []
    for b in _boundaries(block_ids):
        shapes.append(dict(type="line", x0=b, x1=b, y0=-0.5, y1=n - 0.5, line=line,
                           xref=xref, yref=yref))
        shapes.append(dict(type="line", x0=-0.5, x1=n - 0.5, y0=b, y1=b, line=line,
                           xref=xref, yref=yref))
    return shapes


def _anchor_marks(names: list[str], anchor_mask: np.ndarray | None,
                  legend: bool = True) -> go.Scatter | None:
    """Orange circles on the cells where a query sees an anchor of its block."""
    if anchor_mask is None or not anchor_mask.any():
        return None
    q_idx, k_idx = np.nonzero(anchor_mask)
    return go.Scatter(x=[names[k] for k in k_idx], y=[names[q] for q in q_idx],
                      mode="markers", name="anchor of the block",
                      marker=dict(symbol="circle-open", size=7, color="#ff7f0e",
                                  line=dict(width=1.5)),
                      hoverinfo="skip", showlegend=legend)


def attention_heatmap(pattern: np.ndarray, labels: list[str], block_ids: np.ndarray,
                      anchor_mask: np.ndarray | None = None,
                      block_anchors: np.ndarray | None = None, log_scale: bool = False,
                      title: str = "", diverging: bool = False, query: int | None = None,
                      cross_share: np.ndarray | None = None) -> go.Figure:
    """Heatmap of a ``[query, key]`` pattern; masked (future) cells are grey, not zero.

    ``query``: mark only that query's anchors (circles on its row, ★ on its anchor keys), so the
    marks point at one row instead of covering the matrix; None marks every query's.
    ``cross_share``: a ``[query]`` strip beside the matrix, the share of each row's attention
    that leaves its block (``inspection.cross_block_share``), on its own [0, 1] scale.

    Built for speed at T = 128 (the bar in BENCHMARKS.md: ≤ 30 ms): the axes are categories named
    ``"pos·word"`` (unique, so repeated words stay apart, and hover reads them directly), the
    exact weight rides along as a numeric ``customdata`` array (sent to the browser as a typed
    array, not as 16k strings), and the block lines go into ``layout.shapes`` in one call.
    """
    n = len(labels)
    exact = visible_weights(pattern)
    z, zmin, zmax, colorscale, colorbar = _colour_scale(exact, log_scale, diverging)
    if query is not None and anchor_mask is not None and 0 <= query < n:
        one = np.zeros_like(anchor_mask)
        one[query] = anchor_mask[query]
        anchor_mask, block_anchors = one, anchor_mask[query]
    names = _tick_labels(labels, block_anchors)       # unique: each starts with its position
    strip = cross_share is not None and len(cross_share) == n
    fig = (make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.95, 0.05],
                         horizontal_spacing=0.01) if strip else go.Figure())
    fig.add_trace(go.Heatmap(
        z=z, x=names, y=names, zmin=zmin, zmax=zmax, colorscale=colorscale,
        colorbar=dict(colorbar, len=0.75, thickness=14), customdata=exact, hoverongaps=False,
        hovertemplate="query %{y}<br>key %{x}<br>weight %{customdata:.5f}<extra></extra>"))
    marks = _anchor_marks(names, anchor_mask, legend=query is None)
    if marks is not None:
        fig.add_trace(marks)
    if strip:
        share = np.asarray(cross_share, dtype=np.float32)[:, None]
        fig.add_trace(go.Heatmap(
            z=share, x=["leaves block"], y=names, zmin=0.0, zmax=1.0, colorscale=CROSS_COLOURS,
            showscale=False, customdata=share,
            hovertemplate="query %{y}<br>%{customdata:.1%} of its attention leaves its block"
                          "<extra></extra>"), row=1, col=2)
        fig.update_xaxes(row=1, col=2, type="category", side="top", tickangle=0,
                         showgrid=False, zeroline=False)
        fig.update_yaxes(row=1, col=2, showticklabels=False, showgrid=False, zeroline=False)
    # The masked future shows what lies behind the matrix: grey there, white around it.
    grey = dict(type="rect", xref="x", yref="y", x0=-0.5, x1=n - 0.5, y0=-0.5, y1=n - 0.5,
                fillcolor=FUTURE_GREY, line=dict(width=0), layer="below")
    fig.update_layout(
        title=inert(title), plot_bgcolor="white",
        height=min(HEATMAP_MAX_HEIGHT, max(420, 16 * n + 160)),
        shapes=[grey] + _block_lines(block_ids),
        margin=dict(l=10, r=10, t=60 if title else 30, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        xaxis=dict(title="key", type="category", tickangle=-60, side="bottom", showgrid=False,
                   zeroline=False, constrain="domain", **_every_word(n)),
        yaxis=dict(title="query", type="category", autorange="reversed", showgrid=False,
                   zeroline=False, scaleanchor="x", constrain="domain", **_every_word(n)))
    return fig


def _every_word(n: int) -> dict:
    """Axis settings that label every word of a short text in a smaller font (plotly would skip
    every other one at the capped height); long texts keep plotly's own thinning."""
    return dict(dtick=1, tickfont=dict(size=10)) if n <= 48 else {}


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


# The terms a bigram trace carries, as its chart's hover names them.
TRACE_TERMS = {"l_continue": "L_continue", "l_new": "L_new", "pmi": "PMI"}


def recruitment_chart(labels: list[str], gain_bits: np.ndarray, block_ids: np.ndarray,
                      title: str = "", terms: dict[str, np.ndarray] | None = None
                      ) -> go.Figure:
    """A recruiting partition's split test at every position: bars of bits gained, solid where
    a block was recruited (gain > 0), pale where the test said "continue"; orange dotted lines
    mark the block starts. A gain of +inf (a full block, which cannot continue) is drawn as a
    purple bar as tall as the tallest finite one. ``terms`` (name → [T] bits, ``TRACE_TERMS``)
    go into each bar's hover."""
    n = len(labels)
    safe = [inert(w) for w in labels]
    names = [f"{i}·{w}" for i, w in enumerate(safe)]
    gain = np.asarray(gain_bits, dtype=np.float32)
    full = np.isinf(gain)
    finite = gain[~full]
    tall = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    shown = np.where(full, np.float32(tall), gain)
    starts = np.zeros(n, bool)
    starts[1:] = block_ids[1:] != block_ids[:-1]
    colours = np.where(full, "#9467bd", np.where(starts, "#1f77b4", "#c6dbef"))
    hover = np.array(["+∞ bits: the block is full, a boundary whatever the words" if f
                      else f"{g:+.2f} bits" for g, f in zip(gain, full)], dtype=object)
    for key, name in TRACE_TERMS.items():
        if terms and key in terms:
            vals = np.asarray(terms[key], dtype=np.float64)
            hover = hover + np.array([f"<br>{name} {v:+.2f}" if np.isfinite(v) else ""
                                      for v in vals], dtype=object)
    fig = go.Figure(go.Bar(
        x=names, y=shown, marker_color=colours.tolist(), customdata=hover.tolist(),
        hovertemplate="%{x}: %{customdata}<extra></extra>",
        name="bits saved by a split"))
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


# -- the dial in motion and the grid of heads (built from ui.motion's frames and tiles) ---------

PLAY_FRAME_MS = 600     # how long each frame shows while the animation plays


def _animate(duration_ms: int) -> dict:
    """plotly's animation options: heatmaps need ``redraw``; no tweening between frames."""
    return {"frame": {"duration": duration_ms, "redraw": True}, "transition": {"duration": 0},
            "mode": "immediate", "fromcurrent": True}


def dial_animation(views: np.ndarray, values: tuple[float, ...], symbol: str,
                   tiles: dict[str, np.ndarray], labels: list[str], block_ids: np.ndarray,
                   anchor_mask: np.ndarray | None = None,
                   block_anchors: np.ndarray | None = None, log_scale: bool = False,
                   log_axis: bool = False, start: int = 0, title: str = "") -> go.Figure:
    """The heatmap and metric tiles at every value of one dial axis, as plotly frames with a play
    button and a slider, so the browser plays them without asking the server again.

    ``views`` is ``[frame, query, key]``; ``tiles`` maps a label to its ``[frame]`` values, each
    drawn against the axis (a log axis for τ) with a marker on the current frame.
    """
    n, k = len(labels), max(len(tiles), 1)
    names = _tick_labels(labels, block_anchors)
    exact = [visible_weights(v) for v in views]
    drawn = [_colour_scale(z, log_scale, False)[0] for z in exact]
    _, zmin, zmax, colorscale, colorbar = _colour_scale(exact[start], log_scale, False)
    fig = make_subplots(rows=k, cols=2, column_widths=[0.7, 0.3], horizontal_spacing=0.1,
                        vertical_spacing=0.12, subplot_titles=[""] + [inert(t) for t in tiles],
                        specs=[[{"rowspan": k}, {}]] + [[None, {}]] * (k - 1))
    # Hover reads the exact weight: z itself on a linear scale, customdata on a log scale.
    hover = "customdata" if log_scale else "z"

    def heat(f: int) -> go.Heatmap:
        return go.Heatmap(z=drawn[f], customdata=exact[f] if log_scale else None)

    fig.add_trace(go.Heatmap(
        z=drawn[start], customdata=exact[start] if log_scale else None, x=names, y=names,
        zmin=zmin, zmax=zmax, colorscale=colorscale, hoverongaps=False,
        colorbar=dict(**colorbar, x=fig.layout.xaxis.domain[1] + 0.01, thickness=12),
        hovertemplate=f"query %{{y}}<br>key %{{x}}<br>weight %{{{hover}:.5f}}<extra></extra>"),
        row=1, col=1)
    marks = _anchor_marks(names, anchor_mask)
    if marks is not None:
        fig.add_trace(marks, row=1, col=1)
    moving = [0]
    series = {label: [None if not np.isfinite(y) else float(y) for y in ys]
              for label, ys in tiles.items()}

    def marker(label: str, f: int) -> go.Scatter:
        y = series[label][f]
        return go.Scatter(x=[values[f]], y=[y], text=["—" if y is None else f"{y:.3g}"])

    for row, label in enumerate(series, start=1):
        fig.add_trace(go.Scatter(x=list(values), y=series[label], mode="lines",
                                 name=f"{label}, every frame", line=dict(color="#9e9e9e"),
                                 hoverinfo="skip", showlegend=False), row=row, col=2)
        fig.add_trace(marker(label, start).update(
            name=label, mode="markers+text", textposition="top center", cliponaxis=False,
            marker=dict(size=11, color="#ff7f0e"), hoverinfo="skip", showlegend=False),
            row=row, col=2)
        moving.append(len(fig.data) - 1)
        fig.update_xaxes(type="log" if log_axis else "linear", title=symbol if row == k else None,
                         row=row, col=2)
    fig.frames = [go.Frame(name=f"{v:g}", traces=moving,
                           data=[heat(f)] + [marker(label, f) for label in series])
                  for f, v in enumerate(values)]
    # The masked future shows what lies below the heatmap: grey there, white behind the tiles.
    grey = dict(type="rect", xref="x domain", yref="y domain", x0=0, x1=1, y0=0, y1=1,
                fillcolor=FUTURE_GREY, line=dict(width=0), layer="below")
    fig.update_layout(
        title=inert(title), plot_bgcolor="white", height=min(max(420, 14 * n + 160), 760) + 200,
        shapes=[grey] + _block_lines(block_ids), showlegend=False,
        margin=dict(l=10, r=10, t=60 if title else 30, b=200),
        xaxis=dict(title="key", type="category", tickangle=-60, showgrid=False, zeroline=False),
        yaxis=dict(title="query", type="category", autorange="reversed", showgrid=False,
                   zeroline=False),
        updatemenus=[dict(type="buttons", direction="left", showactive=False, x=0, y=0,
                          xanchor="left", yanchor="top", pad=dict(t=150), buttons=[
                              dict(label="▶ Play", method="animate",
                                   args=[None, _animate(PLAY_FRAME_MS)]),
                              dict(label="❚❚ Pause", method="animate",
                                   args=[[None], {**_animate(0), "frame": {"duration": 0,
                                                                          "redraw": False}}])])],
        sliders=[dict(active=start, x=0.16, len=0.84, y=0, yanchor="top", pad=dict(t=130),
                      currentvalue=dict(prefix=f"{symbol} = "),
                      steps=[dict(label=f"{v:g}", method="animate",
                                  args=[[f"{v:g}"], _animate(0)]) for v in values])])
    fig.update_annotations(font_size=12)
    return fig


GRID_PANEL_PX = 110     # the side of one panel of the grid of heads, in pixels
GRID_GAP = 1            # cells of white between two panels


def panel_name(layer, head) -> str:
    """"layer 1 · head 0", "mean of layers · head 2", …: one panel of the grid of heads."""
    return (("mean of layers" if layer == "mean" else f"layer {layer}") + " · "
            + ("mean of heads" if head == "mean" else f"head {head}"))


def head_grid(panels: np.ndarray, layers: list, heads: list, log_scale: bool = False,
              chosen: tuple | None = None) -> go.Figure:
    """Small heatmaps of every layer × head and the means, ``panels[row, column]`` of
    ``[side, side]`` cells (``ui.motion.head_panels``: NaN where the future is masked), tiled
    into one heatmap with white gaps. One invisible marker per panel carries ``customdata =
    [layer, head]``: hovering names the panel and clicking selects it (for
    ``st.plotly_chart(on_select=…)``). ``chosen`` (layer, head) is outlined in orange."""
    rows, cols, side = panels.shape[:3]
    step = side + GRID_GAP
    tiles = np.full((rows * step - GRID_GAP, cols * step - GRID_GAP), np.nan, np.float32)
    for r in range(rows):
        for c in range(cols):
            tiles[r * step:r * step + side, c * step:c * step + side] = panels[r, c]
    z, zmin, zmax, colorscale, colorbar = _colour_scale(tiles, log_scale, False)
    fig = go.Figure(go.Heatmap(z=z, zmin=zmin, zmax=zmax, colorscale=colorscale,
                               colorbar=dict(**colorbar, thickness=12), hoverinfo="skip"))
    centre = (side - 1) / 2
    pos = [(r, c) for r in range(rows) for c in range(cols)]
    fig.add_trace(go.Scatter(
        x=[c * step + centre for _, c in pos], y=[r * step + centre for r, _ in pos],
        customdata=[[layers[r], heads[c]] for r, c in pos], mode="markers",
        text=[panel_name(layers[r], heads[c]) for r, c in pos],
        marker=dict(size=24, symbol="square", opacity=0),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
        hovertemplate="%{text}<br>click to open<extra></extra>", showlegend=False))
    end_x, end_y = tiles.shape[1] - 0.5, tiles.shape[0] - 0.5
    white = dict(type="rect", fillcolor="white", line=dict(width=0), layer="above")
    shapes = [dict(white, x0=-0.5, x1=end_x, y0=r * step - GRID_GAP - 0.5, y1=r * step - 0.5)
              for r in range(1, rows)]
    shapes += [dict(white, y0=-0.5, y1=end_y, x0=c * step - GRID_GAP - 0.5, x1=c * step - 0.5)
               for c in range(1, cols)]
    if chosen is not None and chosen[0] in layers and chosen[1] in heads:
        r, c = layers.index(chosen[0]), heads.index(chosen[1])
        shapes.append(dict(type="rect", x0=c * step - 0.5, x1=c * step + side - 0.5,
                           y0=r * step - 0.5, y1=r * step + side - 0.5,
                           line=dict(color="#ff7f0e", width=3), layer="above"))
    ticks = dict(showgrid=False, zeroline=False, tickmode="array")
    fig.update_layout(
        height=rows * GRID_PANEL_PX + 90, shapes=shapes, plot_bgcolor=FUTURE_GREY,
        margin=dict(l=10, r=10, t=50, b=10), hovermode="closest", hoverdistance=-1,
        clickmode="event+select",
        xaxis=dict(**ticks, side="top", range=[-0.5, end_x], constrain="domain",
                   tickvals=[c * step + centre for c in range(cols)],
                   ticktext=["mean of heads" if h == "mean" else f"head {h}" for h in heads]),
        yaxis=dict(**ticks, range=[end_y, -0.5], scaleanchor="x", constrain="domain",
                   tickvals=[r * step + centre for r in range(rows)],
                   ticktext=["mean of layers" if v == "mean" else f"layer {v}"
                             for v in layers]))
    return fig
