"""Compare: the sidebar setting (A) beside another setting, checkpoint or stored sweep run (B),
with the difference B − A."""
import streamlit as st

import ui
from ui import views
from ui.figures import attention_heatmap

s = ui.page_setup("Compare")
a = ui.analysis_or_stop(s)

n_layers, n_heads = a.patterns.shape[:2]
c1, c2, c3 = st.columns(3)
layer = c1.selectbox("Layer", ["mean"] + list(range(n_layers)), **ui.keep("cmp_layer", "mean"))
head = c2.selectbox("Head", ["mean"] + list(range(n_heads)), **ui.keep("cmp_head", "mean"))
log_scale = c3.toggle("Log colour scale", **ui.keep("cmp_log", False))
L = None if layer == "mean" else layer
H = None if head == "mean" else head

source = st.radio("Compare with", ["Another setting or checkpoint", "A stored sweep run"],
                  horizontal=True, **ui.keep("cmp_source", "Another setting or checkpoint"))
b_view, b_title, b_metrics = None, "", None
if source == "Another setting or checkpoint":
    infos = [c for c in ui.checkpoints() if c.problem is None]
    keys = [c.key for c in infos]
    labels = {c.key: c.label for c in infos}
    d1, d2, d3 = st.columns(3)
    key_b = d1.selectbox("Checkpoint B", keys, format_func=labels.get,
                         **ui.keep("cmp_ckpt", s.checkpoint_key, keys))
    lam_b = d2.slider("λ (B)", *ui.LOCALITY_RANGE, step=0.05, **ui.keep("cmp_lam", 1.0))
    tau_b = d3.slider("τ (B)", *ui.TEMPERATURE_RANGE, step=0.05,
                      **ui.keep("cmp_tau", s.attn_temperature))
    path_b = next(c.path for c in infos if c.key == key_b)
    b = ui.get_analysis(s, lam=lam_b, tau=tau_b, path=path_b)
    if b is not None and b.labels:
        b_view = views.reduce_heads(b.patterns, L, H)
        b_title, b_metrics = f"B · {key_b} · λ={lam_b:g} τ={tau_b:g}", b.metrics
else:
    runs, problems, _ = ui.sweep_results(ui.sweep_cache())
    for p in problems:
        st.caption(f"Not offered: {ui.plain(p)}")
    if not s.text_source.startswith("prompt:"):
        st.info("Stored sweep runs hold the attention of the sample texts only: pick a sample "
                "text in the sidebar.")
    elif not runs:
        st.info("The sweep cache holds no runs yet.")
    else:
        prompt = s.text_source.split(":", 1)[1]
        d1, d2 = st.columns(2)
        ids = [str(r.get("run_id")) for r in runs]
        run_id = d1.selectbox("Sweep run", ids, **ui.keep("cmp_run", ids[0], ids))
        run = next(r for r in runs if str(r.get("run_id")) == run_id)
        settings = views.dial_settings(run)
        if not settings:
            st.info("This run holds no usable evaluation.")
            st.stop()
        lam_b, tau_b = d2.selectbox("Stored setting (λ_f, τ)", settings,
                                    format_func=lambda x: f"λ_f={x[0]:g}, τ={x[1]:g}")
        stored = ui.stored_map(run_id, prompt, lam_b, tau_b)
        if stored is None or stored.shape[-1] != len(a.labels):
            st.warning("This run has no stored attention for this text and setting.")
        else:
            b_view = views.reduce_heads(stored, L, H)
            b_title = f"B · {run_id} (stored) · λ_f={lam_b:g} τ={tau_b:g}"
            point = views.make_point(run, lam_b, lam_b, tau_b) or {}
            ppl, inblock = point.get("perplexity"), point.get("in_block_mass")
            st.caption(ui.plain(f"{run_id} on the validation split at this setting: perplexity "
                                f"{'—' if ppl is None else f'{ppl:.1f}'}, in-block mass "
                                f"{'—' if inblock is None else f'{inblock:.3f}'}."))

a_view = views.reduce_heads(a.patterns, L, H)
if a_view is None:
    st.stop()
left, right = st.columns(2)
left.plotly_chart(attention_heatmap(a_view, a.labels, a.block_ids, a.anchor_mask,
                                    a.block_anchors, log_scale=log_scale,
                                    title=f"A · {s.checkpoint_key} · λ={s.locality:g} "
                                          f"τ={s.attn_temperature:g}"), key="cmp_a")
if b_view is None:
    right.info("Nothing to compare yet.")
    st.stop()
right.plotly_chart(attention_heatmap(b_view, a.labels, a.block_ids, a.anchor_mask,
                                     a.block_anchors, log_scale=log_scale, title=b_title),
                   key="cmp_b")
diff = views.difference(a_view, b_view)
if diff is None:
    st.stop()
st.plotly_chart(attention_heatmap(diff, a.labels, a.block_ids,
                                  title="Difference B − A (red: B attends more)",
                                  diverging=True), key="cmp_diff")
if b_metrics:
    st.dataframe(views.metric_table(a.metrics, b_metrics))
