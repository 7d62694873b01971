"""Theory: the papers' formulas rendered as mathematics, a cached λ-sweep set against the
formula's prediction, and the threshold as a calculator whose inputs are measured on the selected
model and text, each explained in one line."""
import math

import streamlit as st

import ui
from ui import views
from ui.names import number
from ui.theory_figures import formula_sweep_figure, theory_figure

s = ui.page_setup("Theory")
st.markdown("The papers give a threshold for the locality λ of head *h* on block *i*. As we "
            "read them, a locality above it keeps the head's attention inside the block.")
st.latex(views.THRESHOLD_LATEX)
st.markdown("It rests on a **margin** δ: how far a query's scores for keys in its own block lie "
            "above its scores for keys in other blocks. When every one of the nₓ keys outside "
            "the block scores δ below the nᵢₙ keys inside it, the share of attention that "
            "leaves the block is at most")
st.latex(views.BOUND_LATEX)
st.markdown("A larger margin, or a lower temperature τ, shrinks that bound: e^(−δ/τ) is the "
            "amplification the papers speak of. On our trained models the measured share "
            "barely moves with τ (the chart below).")

st.subheader("The formula against a cached λ-sweep")
st.markdown("Our dial adds β·log(1 − λ_f) to every cross-block score, so it lowers every "
            "margin by the same amount:")
st.latex(views.DIAL_LATEX)
st.markdown("With nₓ/nᵢₙ taken from uniform attention and one margin δ₀ read off a run at "
            "λ_f = 0 and τ = 1, the formula predicts the in-block mass at every λ_f and τ the "
            "run was evaluated at. Nothing else is fitted.")
runs, problems, _ = ui.sweep_results(ui.sweep_cache())
ui.show_notices([f"Refused cache file: {p}" for p in problems])
run_ids = views.formula_runs(runs)
if not run_ids:
    st.info("The sweep cache holds no causal run evaluated at λ_f = 0 and τ = 1, so there is "
            "nothing to set the formula against yet.")
else:
    run_id = st.selectbox("Sweep run", run_ids, **ui.keep("th_run", run_ids[0], run_ids))
    rows = views.formula_against_sweep(next(r for r in runs if r.get("run_id") == run_id))
    st.plotly_chart(formula_sweep_figure(rows), key="theory_sweep")
    st.caption(views.formula_caption(rows))

st.subheader("The threshold on this model and text")
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
st.caption(f"Our estimates, measured on layer {model_layer} of the selected checkpoint at "
           f"λ = {s.locality:g}. Edit any value to explore.")
fields = [("lipschitz", "L_ℓ (Lipschitz)", {"min_value": 0.0}),
          ("r_x", "R_x", {"min_value": 0.0}),
          ("sigma_x", "σ_X", {"min_value": 0.0}),
          ("block_len", "|X_i|", {"min_value": 1.0}),
          ("rho_max", "ρ_max", {"min_value": 0.0, "max_value": views.RHO_MAX_CAP}),
          ("margin", "δ (margin)", {"disabled": local}),
          ("attn_temperature", "τ", {"min_value": ui.TEMPERATURE_RANGE[0],
                                     "max_value": ui.TEMPERATURE_RANGE[1]})]
x = {}
for name, label, limits in fields:
    left, right = st.columns([1, 3], vertical_alignment="center")
    start = s.attn_temperature if name == "attn_temperature" else est[name]
    x[name] = left.number_input(label, value=start, **limits)
    right.caption(views.INPUT_MEANINGS[name])

if local:
    st.success(views.EXACTLY_LOCAL, icon="✅")
else:
    lam_star = views.threshold_locality(x["lipschitz"], x["r_x"], x["sigma_x"], x["block_len"],
                                        x["attn_temperature"], x["rho_max"], x["margin"])
    words = [] if math.isnan(lam_star) else views.threshold_words(lam_star, x["margin"])
    if words:              # NaN: the error guard has already given its notice
        st.warning(" ".join(words), icon="⚠️")
    elif not math.isnan(lam_star):
        underflow = lam_star == 0.0 and min(x["lipschitz"], x["r_x"], x["sigma_x"]) > 0.0
        st.metric("Threshold λ from the formula",
                  "≈ 0 (below 10⁻³⁰⁸)" if underflow else number(lam_star),
                  help="Read against the λ scale the papers use; our dial λ ∈ [0, 1] is a "
                       "different parametrisation (a barrier β·log(1−λ)), so compare trends, "
                       "not values.")
        st.caption(views.threshold_reading(lam_star, x["margin"], x["attn_temperature"]))

st.subheader(f"The bound against τ on this text, layer {model_layer}, λ={s.locality:g}")
st.plotly_chart(theory_figure(report["rows"]), key="theory_curve")
st.caption("The bound uses each query's own margin δ = (lowest visible in-block score) − "
           "(highest visible cross-block score), so it holds query by query; a negative margin "
           "makes it weak, not wrong. The estimate uses each query's typical margin instead: "
           "it is exact at τ = 1 and an estimate, not a bound, elsewhere. The curves are means "
           "over queries and heads.")
st.dataframe(views.theory_table(report["rows"]), hide_index=True)
