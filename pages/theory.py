"""Theory: the papers' threshold formula as a calculator, its inputs estimated from the selected
model, and the cross-block-mass bound against the measured mass as τ varies."""
import math

import streamlit as st

import ui
from ui import views
from ui.theory_figures import theory_figure

s = ui.page_setup("Theory")
st.markdown(r"""
The papers give a threshold for the locality parameter of head $h$ and block $i$:

$$\lambda_i^{(h)}(\tau,\delta) =
\frac{2\,L_\ell\,R_x\,\sigma_X\,\sqrt{|X_i|}}{\tau\,(1-\rho_{\max})}\,e^{-\delta/\tau}$$

and a bound on the attention that leaves a block when every cross-block score sits $\delta$
below every in-block score: $n_x e^{-\delta/\tau} / (n_{in} + n_x e^{-\delta/\tau})$.
The inputs below are **our estimates** from the selected model on the selected text
(definitions in `localist_core/analysis/theory.py`); edit any of them to explore. Our δ is the
median over queries of a *typical* margin: the log-mean-exp of a query's in-block scores minus
that of its cross-block scores.
""")
if s.checkpoint_path is None:
    st.stop()
n_layers = ui.n_layers(s)
if n_layers is None:
    st.stop()
layers = list(range(n_layers))
model_layer = st.selectbox("Layer", layers, **ui.keep("th_layer", 0, layers))
report, ok = ui.get_theory(s, model_layer)
if not ok:
    st.stop()
if report is None:
    st.warning("The text is too short: it needs more than one block to estimate the inputs.")
    st.stop()
local = views.exactly_local(report)
est = views.threshold_inputs(report)
if not est:
    st.stop()
if local:
    st.success(views.EXACTLY_LOCAL, icon="✅")
c = st.columns(4)
L = c[0].number_input("L_ℓ (Lipschitz)", min_value=0.0, value=est["lipschitz"])
R = c[1].number_input("R_x", min_value=0.0, value=est["r_x"])
sig = c[2].number_input("σ_X", min_value=0.0, value=est["sigma_x"])
size = c[3].number_input("|X_i|", min_value=1.0, value=est["block_len"])
c = st.columns(3)
rho = c[0].number_input("ρ_max", min_value=0.0, max_value=0.999, value=est["rho_max"])
delta = c[1].number_input("δ (margin)", value=est["margin"], disabled=local,
                          help="Median over queries of the typical margin (log-mean-exp of the "
                               "in-block scores − log-mean-exp of the cross-block scores).")
tau = c[2].number_input("τ", *ui.TEMPERATURE_RANGE, value=s.attn_temperature)
if not local:
    lam_star = views.threshold_locality(L, R, sig, size, tau, rho, delta)
    if math.isinf(lam_star):
        st.warning("At these inputs the formula overflows (e^(−δ/τ) or the product exceeds "
                   "the largest float): the threshold is unbounded.", icon="⚠️")
    if not math.isnan(lam_star):        # NaN: the error guard has already given its notice
        underflow = lam_star == 0.0 and min(L, R, sig) > 0.0    # e^(−δ/τ) below 1e-308
        st.metric("Threshold λ from the formula",
                  "≈ 0 (below 1e-308)" if underflow else f"{lam_star:.4g}",
                  help="Read against the λ scale the papers use; our dial λ ∈ [0, 1] is a "
                       "different parametrisation (a barrier β·log(1−λ)), so compare trends, "
                       "not values.")

st.subheader(f"Predicted against measured, layer {model_layer}, λ={s.locality:g}")
st.plotly_chart(theory_figure(report["rows"]), key="theory_curve")
st.caption("The bound uses each query's own margin δ = (lowest visible in-block score) − "
           "(highest visible cross-block score), so it holds query by query; a negative margin "
           "makes it weak, not wrong. The estimate uses each query's typical margin instead: "
           "it is exact at τ = 1 and an estimate, not a bound, elsewhere. The curves are means "
           "over queries and heads.")
st.dataframe(report["rows"])
