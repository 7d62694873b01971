"""Plotly figures of the Interventions page (no streamlit here): the change in loss per token
when heads' cross-block attention is cut, and the patching maps on a diverging scale centred
on 0. Numbers read with 3 significant figures and never in e-notation (d3's ``~r``)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ui.figures import inert

WORSE, BETTER = "#d95f02", "#1b9e77"   # loss up (the cut hurt) / loss down
SIG3 = ".3~r"                          # d3-format: 3 significant figures, no e-notation


def loss_change_bar(labels: list[str], change: np.ndarray, title: str = "") -> go.Figure:
    """Δ loss (nats) of each target word when the cut is made: bar t is the word at position
    t, predicted from the words before it (``change[t-1]``)."""
    x = list(range(1, len(change) + 1))
    words = [inert(w) for w in labels[1:len(change) + 1]]
    fig = go.Figure(go.Bar(
        x=x, y=change, customdata=words,
        marker_color=[WORSE if d > 0 else BETTER for d in change],
        hovertemplate="%{x} · %{customdata}: Δ loss %{y:" + SIG3 + "} nats<extra></extra>"))
    fig.add_hline(y=0, line_color="grey", line_width=1)
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=36, b=10), title=inert(title),
                      yaxis=dict(title="Δ loss (nats)", tickformat=SIG3),
                      xaxis=dict(tickvals=x, ticktext=[f"{i}·{w}" for i, w in zip(x, words)],
                                 tickangle=-60))
    return fig


def patching_map(z: np.ndarray, rows: list[str], cols: list[str], title: str = "",
                 height: int | None = None) -> go.Figure:
    """A share-restored map: 1 (blue) is the clean run, 0 the corrupted one; the scale is
    symmetric about 0 up to the largest |value| (1 when every value is 0)."""
    z = np.asarray(z, dtype=float)
    finite = np.abs(z[np.isfinite(z)])
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(z.shape[1])), y=list(range(z.shape[0])),
        customdata=[[f"{r} · {c}" for c in map(inert, cols)] for r in rows],
        colorscale="RdBu", zmid=0, zmin=-top, zmax=top,
        colorbar=dict(title="share restored", tickformat=SIG3, thickness=12),
        hovertemplate="%{customdata}: %{z:" + SIG3 + "}<extra></extra>"))
    fig.update_layout(
        height=height or max(260, 150 + 36 * z.shape[0]), margin=dict(l=10, r=10, t=36, b=10),
        title=inert(title),
        xaxis=dict(tickvals=list(range(z.shape[1])), ticktext=[inert(c) for c in cols],
                   tickangle=-60 if len(cols) > 6 else 0),
        yaxis=dict(tickvals=list(range(z.shape[0])), ticktext=rows, autorange="reversed"))
    return fig
