"""The Theory page's figures: the measured cross-block mass against the papers' bound over τ (no
streamlit here)."""
from __future__ import annotations

import plotly.graph_objects as go


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
