"""The Theory page's figures: the measured cross-block mass against the papers' bound over τ,
and a cached λ-sweep against the formula's prediction (no streamlit here)."""
from __future__ import annotations

import plotly.express as px
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
                             mode="lines+markers", name="bound nₓ·e^(−δ/τ)/(nᵢₙ + nₓ·e^(−δ/τ))",
                             line=dict(dash="dash")))
    if rows and all("estimate_cross_mass" in r for r in rows):
        fig.add_trace(go.Scatter(x=taus, y=[r["estimate_cross_mass"] for r in rows],
                                 mode="lines+markers", line=dict(dash="dot"),
                                 name="estimate at the typical margin (not a bound)"))
    fig.update_layout(xaxis=dict(title="τ", type="log"), yaxis=dict(title="mass", range=[0, 1]),
                      height=380, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(y=-0.25, orientation="h"))
    return fig


def formula_sweep_figure(rows: list[dict]) -> go.Figure:
    """In-block mass against λ_f for one cached run, one colour per τ: measured (solid, filled
    markers) and the formula's prediction (dashed, open markers), from
    ``views.formula_against_sweep``'s rows. A star marks the point the margin is read off."""
    palette = px.colors.qualitative.Plotly
    fig = go.Figure()
    taus = sorted({r["attn_temperature"] for r in rows})
    for i, tau in enumerate(taus):
        pts = sorted((r for r in rows if r["attn_temperature"] == tau),
                     key=lambda r: r["locality"])
        colour, lams = palette[i % len(palette)], [r["locality"] for r in pts]
        fig.add_trace(go.Scatter(x=lams, y=[r["measured_in_block"] for r in pts],
                                 mode="lines+markers", name=f"measured, τ = {tau:g}",
                                 legendgroup=f"{tau:g}", line=dict(color=colour)))
        fig.add_trace(go.Scatter(x=lams, y=[r["predicted_in_block"] for r in pts],
                                 mode="lines+markers", name=f"formula, τ = {tau:g}",
                                 legendgroup=f"{tau:g}",
                                 line=dict(color=colour, dash="dash"),
                                 marker=dict(symbol="circle-open", size=9)))
    calib = [r for r in rows if r["calibration"]]
    if calib:
        fig.add_trace(go.Scatter(x=[calib[0]["locality"]], y=[calib[0]["measured_in_block"]],
                                 mode="markers", name="margin read off here (λ_f = 0, τ = 1)",
                                 marker=dict(symbol="star", size=14, color="black")))
    fig.update_layout(xaxis=dict(title="dial λ_f", range=[-0.05, 1.05]),
                      yaxis=dict(title="in-block mass (1 − cross-block mass)",
                                 range=[0, 1.05]),
                      height=420, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(y=-0.25, orientation="h"))
    return fig
