"""Theory: the papers' threshold formula as a calculator, its inputs estimated from the selected
model, and the cross-block-mass bound against the measured mass as τ varies."""
import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from localist_core.analysis.theory import threshold_locality

s = ui.page_setup("Theory")
st.markdown(r"""
The papers give a threshold for the locality parameter of head $h$ and block $i$:

$$\lambda_i^{(h)}(\tau,\delta) =
\frac{2\,L_\ell\,R_x\,\sigma_X\,\sqrt{|X_i|}}{\tau\,(1-\rho_{\max})}\,e^{-\delta/\tau}$$

and a bound on the attention that leaves a block when every cross-block score sits $\delta$
below every in-block score: $n_x e^{-\delta/\tau} / (n_{in} + n_x e^{-\delta/\tau})$.
The inputs below are **our estimates** from the selected model on the selected text
(definitions in `localist_core/theory.py`); edit any of them to explore.
""")
if s.checkpoint_path is None:
    st.stop()
layers = list(range(ui.n_layers(s)))
model_layer = st.selectbox("Layer", layers, **ui.keep("th_layer", 0, layers))
report, ok = ui.get_theory(s, model_layer)
if not ok:
    st.stop()
if report is None:
    st.warning("The text is too short: it needs more than one block to estimate the inputs.")
    st.stop()
est = report["inputs"]
c = st.columns(4)
L = c[0].number_input("L_ℓ (Lipschitz)", min_value=0.0, value=round(est["lipschitz"], 4))
R = c[1].number_input("R_x", min_value=0.0, value=round(est["r_x"], 4))
sig = c[2].number_input("σ_X", min_value=0.0, value=round(est["sigma_x"], 4))
size = c[3].number_input("|X_i|", min_value=1.0, value=round(est["block_len"], 2))
c = st.columns(3)
rho = c[0].number_input("ρ_max", min_value=0.0, max_value=0.999, value=min(est["rho_max"], 0.999))
margin = est["margin"] if est["margin"] == est["margin"] and abs(est["margin"]) < 1e6 else 0.0
delta = c[1].number_input("δ (margin)", value=round(margin, 4))
tau = c[2].number_input("τ", min_value=0.05, max_value=10.0, value=s.attn_temperature)
lam_star = threshold_locality(L, R, sig, size, tau, rho, delta)
if not math.isfinite(lam_star):
    st.warning("At these inputs the formula overflows (e^(−δ/τ) or the product exceeds the "
               "largest float): the threshold is unbounded.", icon="⚠️")
st.metric("Threshold λ from the formula", f"{lam_star:.4g}",
          help="Read against the λ scale the papers use; our dial λ ∈ [0, 1] is a different "
               "parametrisation (a barrier β·log(1−λ)), so compare trends, not values.")

rows = pd.DataFrame(report["rows"])
fig = go.Figure()
fig.add_trace(go.Scatter(x=rows["attn_temperature"], y=rows["measured_cross_mass"],
                         mode="lines+markers", name="measured cross-block mass"))
fig.add_trace(go.Scatter(x=rows["attn_temperature"], y=rows["bound_cross_mass"],
                         mode="lines+markers", name="bound n_x·e^(−δ/τ)/(n_in + n_x·e^(−δ/τ))",
                         line=dict(dash="dash")))
fig.update_layout(xaxis=dict(title="τ", type="log"), yaxis=dict(title="mass", range=[0, 1]),
                  height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(y=-0.25,
                                                                           orientation="h"))
st.subheader(f"Predicted against measured, layer {model_layer}, λ={s.locality:g}")
st.plotly_chart(fig, key="theory_curve")
st.caption("The bound uses each query's own margin δ = (lowest visible in-block score) − "
           "(highest visible cross-block score), so it holds query by query; the curves are "
           "means over queries and heads. A negative margin makes the bound weak, not wrong.")
st.dataframe(rows)
