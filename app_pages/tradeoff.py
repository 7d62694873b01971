"""Tradeoff: entropy vs perplexity, fidelity vs λ, the τ family and dial vs penalty protocols, from
the cached sweeps, with the papers' reported figures beside ours (never in place of them)."""
from pathlib import Path

import streamlit as st

import ui
from ui import launcher as launch
from ui import sweep_figures as fig
from ui import views

s = ui.page_setup("Tradeoff")

shipped = ui.sweep_cache()
folders = {f"Shipped sweeps ({ui.shown(shipped)})": Path(shipped)}
folders.update({f"Sweep “{name}” from the Sweeps page": cache
                for name, cache in launch.app_caches().items()})
label = st.selectbox("Sweep cache", list(folders), key="tradeoff_cache") \
    if len(folders) > 1 else next(iter(folders))
folder = str(folders[label])
# An app sweep keeps its launch record beside its cache, in <root>/<name>/.
launch_dir = None if folder == str(shipped) else str(Path(folder).parent)

if not Path(folder).is_dir():
    st.info(f"There is no sweep cache at {ui.plain(folder)} yet. Run `python -m localist_core "
            "sweep` or start one on the Sweeps page; its runs appear here.")
    st.stop()
runs, problems, baselines = ui.sweep_results(folder)
ui.show_notices([f"Refused cache file: {p}" for p in problems])
if not runs:
    st.info(f"The sweep cache {ui.plain(folder)} holds no finished runs yet. Each finished run "
            "adds one JSON file; the Sweeps page shows the progress of a running sweep.")
    st.stop()
status = launch.sweep_status(folder, launch_dir=launch_dir)
if status and status["state"] in ("running", "starting"):
    st.caption(f"A sweep is still writing into this cache: {ui.plain(status['text'])}")

curves, leaks, papers = views.curve_points(runs), views.leak_points(runs), views.paper_points()
ent_refs = views.entropy_references(curves + leaks)
norm_refs = [{"value": 1.0, "label": "causal ceiling (normalised = 1)", "kind": "ceiling"}]
lam_axis = "λ (trained penalty λ, or dial λ_f)"
chart = {"config": {"toImageButtonOptions": {"format": "svg"}}}
st.caption("Lines: our causal runs at τ = 1, one labelled point per λ. Red triangles: runs that "
           "leak the future (shown apart, never part of a curve). Crimson crosses and dashed "
           "lines: the papers' reported figures, not ours. Dotted black: the causal ceiling. "
           "A point that averages several training seeds is their mean, with error bars of "
           "± 1 sample standard deviation across seeds (not a confidence interval; the report's "
           "tables give the 95% t-intervals); single-seed points have no bars.")

st.subheader("Entropy vs perplexity")
entropy_panels = [{"y": "entropy_bits", "title": "attention entropy (bits)", "hlines": ent_refs},
                  {"y": "normalised_entropy", "title": "normalised entropy H / log₂(#visible)",
                   "hlines": norm_refs}]
st.plotly_chart(fig.panel_figure(curves + leaks, "perplexity", "valid perplexity (log)",
                                entropy_panels, vlines=views.perplexity_references(baselines),
                                log_x=True), key="tradeoff_ent_ppl", **chart)
ceil = ", ".join(f"{r['value']:.2f}" for r in ent_refs if r["kind"] == "ceiling")
st.caption(f"Causal attention cannot exceed mean log₂ t bits ({ceil} here), so raw entropy is "
           "always shown beside the normalised figure. The papers' 7.18 bits at λ = 0 lies above "
           "the causal ceiling of their context length (6.58 bits at n_ctx 256). The papers' "
           "test perplexity is drawn as a line: it comes with no entropy.")

st.subheader("Entropy vs λ")
st.plotly_chart(fig.panel_figure(curves + leaks, "locality", lam_axis, entropy_panels,
                                papers=papers), key="tradeoff_ent_lam", **chart)

st.subheader("Pointer fidelity vs λ")
st.plotly_chart(fig.panel_figure(curves + leaks, "locality", lam_axis, [
    {"y": "pointer_fidelity_mass", "title": "attention mass on the block's anchors"},
    {"y": "pointer_argmax_hit", "title": "argmax key is an anchor (rate)"}]),
    key="tradeoff_fid", **chart)

st.subheader("In-block mass vs λ, with its controls")
st.plotly_chart(fig.points_figure(curves, "locality", "in_block_mass", lam_axis, "attention mass",
                                 controls=True, height=480),
                key="tradeoff_inblock", **chart)
st.caption("Causal attention is naturally recent, so in-block mass alone proves nothing: "
           "localist structure is what exceeds the recent-b (sliding window), shifted-block and "
           "uniform-attention controls.")

st.subheader("Dial protocol vs penalty protocol")
metric = st.selectbox("Metric", ["perplexity", "accuracy", "entropy_bits", "in_block_mass",
                                 "pointer_fidelity_mass", "mean_attention_distance"],
                      format_func=lambda k: k.replace("_", " "), key="tradeoff_metric")
panels = entropy_panels if metric == "entropy_bits" else [
    {"y": metric, "title": f"valid {metric.replace('_', ' ')}", "log_y": metric == "perplexity"}]
st.plotly_chart(fig.panel_figure(curves, "locality", lam_axis, panels,
                                controls=metric == "in_block_mass"),
                key="tradeoff_protocols", **chart)
st.caption("Penalty protocol: one model per λ, trained with the penalty (λ_f = 0), and the same "
           "model dialled to λ_f = λ at inference (the \"no retraining\" question). Dial "
           "protocol: one model trained with λ_f drawn per batch, evaluated at each λ_f.")

st.subheader("Where blocks fall: fixed, punctuation and recruited")
strategies = views.strategy_points(runs)
if len({p["series"] for p in strategies}) < 2:
    st.caption("This cache has no runs with another partition. `bash scripts/reproduce.sh` "
               "trains them (partition=punctuation and partition=recruited at λ = 0.2, 0.6, "
               "1.0); the shipped cache has them.")
else:
    st.plotly_chart(fig.panel_figure(strategies, "locality", "λ (trained penalty)", [
        {"y": "perplexity", "title": "valid perplexity (log)", "log_y": True},
        {"y": "entropy_bits", "title": "attention entropy (bits)"},
        {"y": "in_block_mass", "title": "in-block mass"},
        {"y": "pointer_fidelity_mass", "title": "pointer fidelity (mass on anchors)"}],
        height=420), key="tradeoff_strategies", **chart)
    st.plotly_chart(fig.points_figure(strategies, "perplexity", "entropy_bits",
                                     "valid perplexity (log)", "attention entropy (bits)",
                                     log_x=True, height=380),
                    key="tradeoff_strategies_ppl", **chart)
    st.caption("Attention-penalty models trained at each λ with each partition, as trained (λ_f "
               "= 0, τ = 1), 1,500 steps for the adaptive ones. The partitions were set to a "
               "mean block length near 5 (on WikiText-2 valid in 128-word windows: fixed 4.92, "
               "punctuation 5.49 with 44% of its blocks at the 8-word cap, recruited 5.00), so "
               "the curves compare where blocks fall, not how long they are. REPRODUCTION.md "
               "has the table.")

st.subheader("Test perplexity and accuracy: ours, the papers' report, and the leak")
st.plotly_chart(fig.panel_figure(curves + leaks, "locality", lam_axis, [
    {"y": "test_perplexity", "title": "test perplexity (log)", "log_y": True},
    {"y": "test_accuracy", "title": "test accuracy"}], papers=papers),
    key="tradeoff_test", **chart)
for run in (r for r in runs if views.leak_flag(r)):
    with st.expander(f"⚠️ {ui.plain(run.get('run_id'))}: {views.leak_flag(run)}", expanded=False):
        st.write("Attention that sees later tokens of its block sees its targets: positions "
                 "before a block's last token are predicted almost perfectly. Per position in "
                 "block (test):")
        st.dataframe(views.position_rows(run), hide_index=True)
if not leaks:
    st.caption("No non-causal diagnostic run in this cache. docs/design.md explains how "
               "figures like the papers' arise from attention that sees the target.")

st.subheader("τ family")
ids = [str(r.get("run_id")) for r in runs]
default = next((i for i, r in enumerate(runs) if views.protocol_of(r) == "dial"), 0)
run_id = st.selectbox("Run", ids, index=default, key="tau_run")
fam = views.tau_family(runs, run_id)
if not fam:
    st.info("This run has no usable evaluations.")
else:
    st.plotly_chart(fig.panel_figure(fam, "attn_temperature", "τ (log)", [
        {"y": "entropy_bits", "title": "entropy (bits)",
         "hlines": [r for r in views.entropy_references(fam) if r["kind"] == "ceiling"]},
        {"y": "normalised_entropy", "title": "normalised entropy"},
        {"y": "perplexity", "title": "valid perplexity (log)", "log_y": True}], log_x=True),
        key="tradeoff_tau", **chart)
    st.caption("Lower τ sharpens attention (lower entropy); τ = 1 is how the model was trained.")

st.subheader("Every point")
table = curves + leaks + fam
st.dataframe(table, hide_index=True)
st.download_button("Points (CSV)", views.csv_text(table), file_name="tradeoff_points.csv",
                   mime="text/csv")
