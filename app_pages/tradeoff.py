"""Tradeoff: what locality costs (valid perplexity against in-block mass or entropy, the penalty
against the dial), then entropy, fidelity and in-block mass against λ, the partitions and the τ
family, from a sweep cache; the papers' reported figures and the leak have a chart of their own."""
from pathlib import Path

import streamlit as st

import ui
from ui import launcher as launch
from ui import sweep_figures as fig
from ui import views
from ui.names import leak_title, series_name

s = ui.page_setup("Tradeoff")

# The headline and its chart come first; the choice of data behind them folds away below.
top = st.container()
with st.expander("The data behind this page: which sweep, and more series"):
    shipped, study = ui.sweep_cache(), ui.study_cache()
    study_runs = ui.sweep_results(study)[0] if Path(study).is_dir() else []
    folders = {ui.cache_label("Multi-seed study", study): study} if Path(study).is_dir() else {}
    shipped_label = ui.cache_label("Shipped sweeps", shipped)
    folders[shipped_label] = shipped
    folders.update({f"Sweep “{name}” from the Sweeps page": str(cache)
                    for name, cache in launch.app_caches(protected=ui.project_caches()).items()})
    labels = list(folders)
    # The study is shown first once one of its points averages several seeds.
    study_first = fig.most_seeds(views.curve_points(study_runs)) > 1
    label = st.selectbox("Sweep cache", labels, key="tradeoff_cache",
                         index=0 if study_first else labels.index(shipped_label)) \
        if len(labels) > 1 else labels[0]
    folder = folders[label]
    # An app sweep keeps its launch record beside its cache, in <root>/<name>/.
    launch_dir = None if folder in (shipped, study) else str(Path(folder).parent)

    if not Path(folder).is_dir():
        top.info(f"There is no sweep cache at {ui.plain(folder)} yet. Run `python -m localist_core "
                "sweep` or start one on the Sweeps page; its runs appear here.")
        st.stop()
    runs, problems, baselines = ui.sweep_results(folder)
    ui.show_notices([f"Refused cache file: {p}" for p in problems])
    if not runs:
        top.info(f"The sweep cache {ui.plain(folder)} holds no finished runs yet. Each "
                 "finished run adds one JSON file; the Sweeps page shows the progress of a "
                 "running sweep.")
        st.stop()
    status = launch.sweep_status(folder, launch_dir=launch_dir)
    if status and status["state"] in ("running", "starting"):
        st.caption(f"A sweep is still writing into this cache: {ui.plain(status['text'])}")

    curves, leaks, papers = views.curve_points(runs), views.leak_points(runs), views.paper_points()
    st.caption(f"Shown: {ui.plain(label)}, {len(runs)} runs; {fig.seeds_note(curves)}. The charts "
               "down to the partitions draw only our causal runs at τ = 1, so their axes are ours.")

    headline = fig.headline_series(curves)
    others = [name for name in dict.fromkeys(p["series"] for p in curves) if name not in headline]
    st.session_state["tradeoff_series"] = [v for v in st.session_state.get("tradeoff_series", [])
                                           if v in others]
    picked = st.multiselect("More series", others, key="tradeoff_series", disabled=not others,
                            format_func=series_name,
                            placeholder="the other curves of this cache",
                            help="Other penalty forms, block sizes, the penalty models dialled at "
                                 "inference and the other dial evaluation; each one picked joins "
                                 "every chart of these curves.")
ours = [p for p in curves if p["series"] in headline + picked]
lam_axis = "λ (trained penalty λ, or dial λ_f)"
chart = {"config": {"toImageButtonOptions": {"format": "svg"}}}

with top:
    message = fig.headline_message(ours, headline[0]) if headline else None
    if message:
        st.markdown(f"##### {message}")
    st.caption("Each point is the mean over its training seeds, with error bars of ± 1 sd "
               "across them. Readings, not findings: the study's verdicts are those of the "
               "questions it fixed in advance (About).")
    x = st.segmented_control("Locality measured by", list(fig.LOCALITY_MEASURES),
                             default="in_block_mass", required=True, key="tradeoff_x",
                             format_func=lambda k: fig.LOCALITY_MEASURES[k][0])
    head_fig = fig.points_figure(ours, x, "perplexity",
                                 f"{fig.LOCALITY_MEASURES[x][0]} (valid, τ = 1)",
                                 "valid perplexity", height=480)
    fig.mark_here(head_fig, ours, x, "perplexity", s.locality)
    st.plotly_chart(head_fig, key="tradeoff_headline", **chart)
    st.caption(fig.cost_caption(ours, headline, x))
    if any(p.get("curve") == "dial" for p in ours) and not any(
            p.get("curve") == "dial" and p.get("variant") == fig.SHIPPED_DIAL for p in ours):
        st.caption("The dial curve is read at the sharpness β the dial model was trained "
                   "with; the shipped dial checkpoint is used at β = 64, which this cache has "
                   "not evaluated.")

st.subheader("Entropy vs λ")
ceil = ", ".join(f"{r['value']:.2f}" for r in views.entropy_references(ours)
                 if r["kind"] == "ceiling")
st.plotly_chart(fig.panel_figure(ours, "locality", lam_axis, [
    {"y": "entropy_bits", "title": "attention entropy (bits)"},
    {"y": "normalised_entropy", "title": "normalised entropy H / log₂(#visible)"}]),
    key="tradeoff_ent_lam", **chart)
st.caption("Lower entropy is sharper attention; read the right panel against 1, uniform "
           "attention over the keys a query sees (raw entropy cannot exceed the causal ceiling, "
           f"{ceil or '—'} bits here).")

st.subheader("Pointer fidelity vs λ")
st.plotly_chart(fig.panel_figure(ours, "locality", lam_axis, [
    {"y": "pointer_fidelity_mass", "title": "attention mass on the block's anchors"},
    {"y": "pointer_argmax_hit", "title": "argmax key is an anchor (rate)"}]),
    key="tradeoff_fid", **chart)
st.caption("The anchors lie inside the block, so their mass rises with in-block mass alone: "
           "compare it with the rise of in-block mass (next chart) before reading it as "
           "anchoring.")

st.subheader("In-block mass vs λ, with its controls")
st.plotly_chart(fig.points_figure(ours, "locality", "in_block_mass", lam_axis, "attention mass",
                                  controls=True, height=480),
                key="tradeoff_inblock", **chart)
st.caption("Block structure is the in-block mass above the shifted-block control (dashed); mass "
           "that only matches the recent-b control (dotted) is recency, and grey ticks mark "
           "uniform attention.")

st.subheader("Any metric vs λ")
metric = st.selectbox("Metric", ["perplexity", "accuracy", "entropy_bits", "in_block_mass",
                                 "pointer_fidelity_mass", "mean_attention_distance"],
                      format_func=lambda k: k.replace("_", " "), key="tradeoff_metric")
st.plotly_chart(fig.points_figure(ours, "locality", metric, lam_axis,
                                  f"valid {metric.replace('_', ' ')}",
                                  controls=metric == "in_block_mass"),
                key="tradeoff_protocols", **chart)
st.caption("A penalty model is trained at one λ and read at λ_f = 0 (\"as trained\") or dialled "
           "to λ_f = λ; the dial model is one checkpoint read at each λ_f: compare the curves at "
           "equal λ.")

st.subheader("Where blocks fall: fixed, punctuation, recruited and bigram blocks")
strategies, block_lams = views.strategy_points(runs), views.block_control_localities(runs)
if len({p["series"] for p in strategies}) < 2 and not block_lams:
    st.caption("This cache has no runs with another partition. `bash scripts/reproduce.sh` "
               "trains them at λ = 0.6, with fixed blocks of 7 as their control; the multi-seed "
               "study and the shipped cache have them.")
if block_lams:
    block_lam = block_lams[0]
    if len(block_lams) > 1:
        block_lam = st.selectbox(
            "Trained λ of the block comparison", block_lams, key="tradeoff_blocks_lam",
            index=block_lams.index(views.BLOCK_CONTROL_LOCALITY)
            if views.BLOCK_CONTROL_LOCALITY in block_lams else 0, format_func="λ = {:g}".format)
    arrangements = views.block_control_points(runs, block_lam)
    diffs = views.block_control_differences(runs, block_lam)
    if fig.has_visible_keys(arrangements):
        st.plotly_chart(fig.block_control_figure(arrangements), key="tradeoff_blocks", **chart)
        st.caption(f"At λ = {block_lam:g}, as trained (λ_f = 0, τ = 1): "
                   + fig.block_control_caption(arrangements, diffs))
    else:
        st.caption("The runs of this cache were evaluated before the number of in-block keys a "
                   "query sees was recorded, so the chart of blocks against that number is "
                   "empty here; the multi-seed study has it. The table still pairs each "
                   "partition with every fixed size and with the other partitions.")
    st.dataframe(views.differences_rows(diffs), hide_index=True)
    st.caption("A block-local query sees only the earlier keys of its own block, so longer "
               "blocks give it more context. The fixed sizes, joined by a line, show what more "
               "context alone does; the control for a partition is the fixed size whose "
               "queries see about as many keys (the caption above names it), and a partition "
               "above that line predicts worse than fixed windows that see as many "
               "keys. Each row of the table is a partition minus one fixed size or another "
               "partition, paired by training seed, with its uncorrected p-value. These are "
               "readings, not findings: the questions the study answers were fixed in advance "
               "and get their verdicts, corrected for being asked together, once five seeds "
               "have trained.")
if len({p["series"] for p in strategies}) >= 2:
    st.plotly_chart(fig.panel_figure(strategies, "locality", "λ (trained penalty)", [
        {"y": "perplexity", "title": "valid perplexity"},
        {"y": "entropy_bits", "title": "attention entropy (bits)"},
        {"y": "in_block_mass", "title": "in-block mass"},
        {"y": "pointer_fidelity_mass", "title": "pointer fidelity (mass on anchors)"}],
        height=420), key="tradeoff_strategies", **chart)
    st.caption("The same partitions against λ (fixed blocks at the default size only): "
               "attention-penalty models as trained (λ_f = 0, τ = 1) that differ only in where "
               "their blocks fall, compared at equal λ (the reproduction notes give their block "
               "lengths).")

st.subheader("Beside the papers' report and the leak")
st.plotly_chart(fig.panel_figure(ours + leaks, "locality", lam_axis, [
    {"y": "entropy_bits", "title": "attention entropy (bits)",
     "hlines": views.entropy_references(ours + leaks)},
    {"y": "test_perplexity", "title": "test perplexity (log)", "log_y": True,
     "hlines": views.perplexity_references(baselines, "test")},
    {"y": "test_accuracy", "title": "test accuracy"}], papers=papers, height=480),
    key="tradeoff_test", **chart)
st.caption("Crimson crosses and dashed lines are the papers' reported figures, not ours, and "
           "red triangles are runs that leak the future: set both against our curves and the "
           "causal ceiling (dotted), which no causal attention can exceed.")
for run in (r for r in runs if views.leak_flag(r)):
    with st.expander(f"⚠️ {leak_title(run, views.leak_flag(run))}", expanded=False):
        st.write("Attention that sees later tokens of its block sees its targets, so every "
                 "position before a block's last token can read the word it must predict. Per "
                 "position in block (test):")
        st.dataframe(views.position_rows(run), hide_index=True)
if not leaks:
    st.caption("No non-causal diagnostic run in this cache. The reproduction notes report how "
               "attention that sees its targets gives figures like the papers'.")

st.subheader("τ family")
ids = [str(r.get("run_id")) for r in runs]
default = next((i for i, r in enumerate(runs) if views.protocol_of(r) == "dial"), 0)
run_id = st.selectbox("Run", ids, index=default, key="tau_run")
fam = views.tau_family(runs, run_id)
if not fam:
    st.info("This run has no usable evaluations.")
else:
    st.plotly_chart(fig.panel_figure(fam, "attn_temperature", "τ (log)", [
        {"y": "entropy_bits", "title": "entropy (bits)"},
        {"y": "normalised_entropy", "title": "normalised entropy"},
        {"y": "perplexity", "title": "valid perplexity"}], log_x=True),
        key="tradeoff_tau", **chart)
    st.caption("One line per λ_f: lower τ sharpens attention (lower entropy), and τ = 1 is how "
               "the model was trained.")

table = curves + leaks + fam
with st.expander("Every point, as the cache holds it (for analysts)"):
    st.dataframe(table, hide_index=True)
st.download_button("Points (CSV)", views.csv_text(table), file_name="tradeoff_points.csv",
                   mime="text/csv")
