"""Explorer: attention heatmaps per layer and head, the grid of all heads, the dial in motion,
entropy per query, live metrics, top-5."""
import streamlit as st

import ui
from ui import motion, tour, views
from ui.figures import head_grid, panel_name

s = ui.page_setup("Explorer", header=False)
tour.tour_bar()
a = ui.analysis_or_stop(s)

n_layers, n_heads = a.patterns.shape[:2]
m = a.metrics
base = ui.get_analysis(s, lam=0.0) if s.locality > 0 else None
d_entropy, d_inblock = (views.change(a, base, k) for k in ("entropy_bits", "in_block_mass"))

# The first screen is the instrument: the heatmap, with the numbers and its controls beside it.
picture, side = st.columns([3, 1], gap="small")
layer_opts = ["mean"] + list(range(n_layers))
head_opts = ["mean"] + list(range(n_heads))
query_opts = list(range(len(a.labels)))
ui.fit_choice("layer", layer_opts, "layer")
ui.fit_choice("head", head_opts, "head")
with side:
    st.metric("In-block mass", f"{m['in_block_mass']['mean']:.3f}",
              delta=None if d_inblock is None else f"{d_inblock:+.3f} vs λ=0",
              help=f"The share of attention that stays inside the query's block. Controls — "
                   f"recent-b: {m['recent_b_mass']['mean']:.3f}, shifted blocks: "
                   f"{m['shifted_block_mass']['mean']:.3f}, uniform: "
                   f"{m['uniform_in_block_mass']['mean']:.3f}. Localist structure is what "
                   "exceeds them.")
    st.metric("Entropy (bits)", f"{m['entropy_bits']['mean']:.2f}",
              delta=None if d_entropy is None else f"{d_entropy:+.2f} vs λ=0",
              delta_color="inverse", help="How spread each query's attention is: the mean over "
                                          "queries, heads and layers.")
    st.metric("Pointer fidelity", f"{m['pointer_fidelity_mass']['mean']:.3f}",
              help=f"Mass on the block's anchors. Argmax hits an anchor "
                   f"{m['pointer_argmax_hit']['mean']:.0%} of the time. Uniform attention "
                   f"inside the block would give "
                   f"{views.metric_mean(m, 'uniform_pointer_fidelity')}; the lift over it is "
                   f"{views.metric_mean(m, 'pointer_fidelity_lift', '+.3f')}.")
    st.metric("Perplexity of the text", f"{a.perplexity:.1f}" if a.perplexity else "—",
              help=f"Over its {len(a.labels)} tokens.")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layer_opts, **ui.keep("layer", "mean"))
    head = c2.selectbox("Head", head_opts, format_func=lambda h: "mean"
                        if h == "mean" else f"head {h}", **ui.keep("head", "mean"))
    query = st.selectbox("Anchors of", query_opts, format_func=lambda i: f"{i} · {a.labels[i]}",
                         help="The query whose block anchors are marked (★ and orange "
                              "circles).", **ui.keep("query", query_opts[-1], query_opts))
    log_scale = st.toggle("Log colour scale", **ui.keep("log_scale", False))
    show_grid = st.toggle("All heads at once", **ui.keep("head_grid", False),
                          help="A small heatmap per layer × head, and the means: click one to "
                               "open it here.")
ui.write_deep_link(s, layer, head)

L, H = (None if layer == "mean" else layer), (None if head == "mean" else head)
view, ent = views.reduce_heads(a.patterns, L, H), views.reduce_heads(a.entropy, L, H)
if view is None or ent is None:
    st.stop()
fig = views.attention_heatmap(view, a.labels, a.block_ids, a.anchor_mask, a.block_anchors,
                              log_scale=log_scale, title=f"{panel_name(layer, head)} · "
                              f"λ={s.locality:g} τ={s.attn_temperature:g} γ={s.rule_strength:g}",
                              query=query, cross_share=views.cross_share(view, a.block_ids))
with picture:
    st.plotly_chart(fig, key="heatmap", config={"toImageButtonOptions": {"format": "svg"}})
    st.caption("Rows are queries, columns keys; white lines are block boundaries and grey the "
               "masked future. The strip on the right: how much of each row's attention leaves "
               "its block. ★ and orange circles: the anchors of the query chosen beside.")

grid = motion.head_panels(a.patterns) if show_grid else None
if grid is not None:
    # The key follows the open panel, so each click starts from an empty selection.
    key = f"head_grid_{layer}_{head}"
    st.plotly_chart(head_grid(grid.panels, grid.layers, grid.heads, log_scale, (layer, head)),
                    key=key, on_select=motion.opener(key, n_layers, n_heads),
                    selection_mode="points")
    st.caption("Click a panel to open it above (orange: the one open)."
               + (f" Each cell averages {grid.pool} × {grid.pool} weights." if grid.pool > 1
                  else "")
               + (f" The first {motion.GRID_MAX_SHOWN} layers and heads are drawn; the means "
                  "cover all." if max(n_layers, n_heads) > motion.GRID_MAX_SHOWN else ""))

st.subheader("The dial in motion")
if st.toggle("Play the dial", **ui.keep("motion", False),
             help=f"{motion.FRAMES} frames, computed once for this checkpoint, text and the "
                  "rest of the dial; then the browser plays them."):
    axis = st.radio("Move", list(motion.AXES), horizontal=True,
                    format_func=lambda k: f"{motion.SYMBOLS[k]} over {motion.AXES[k][0]:g} … "
                                          f"{motion.AXES[k][-1]:g}",
                    **ui.keep("motion_axis", "locality", list(motion.AXES)))
    fig = motion.animation(s, axis, layer, head, log_scale)
    if fig is not None:
        st.plotly_chart(fig, key="motion_chart")
        st.caption(f"Press ▶ or drag the slider: {motion.SYMBOLS[axis]} steps through "
                   f"{motion.FRAMES} fixed values. Beside the heatmap: the mean entropy, "
                   "in-block mass and perplexity at each value; the orange dot is the frame "
                   "shown.")

st.subheader("Entropy per query")
st.plotly_chart(views.entropy_strip(ent, a.labels), key="entropy")

st.subheader("Next-token predictions")
pos = st.select_slider("After position", options=list(range(len(a.labels))),
                       value=len(a.labels) - 1,
                       format_func=lambda i: f"{i} · {a.labels[i]}")
words, probs = ui.next_words(s, pos)
st.plotly_chart(views.top_tokens_bar(words, probs, title=f"top-5 after “{a.labels[pos]}”"),
                key="topk")

d1, d2 = st.columns(2)
# Callables: the files are built only when a button is clicked, not on every rerun (the CSV
# has one row per visible weight, ~66k at T = 128), and once per view for every click.
download_view = views.view_key(s)
d1.download_button("Attention (CSV)", lambda: views.attention_csv(a, download_view),
                   file_name="attention.csv", mime="text/csv", on_click="ignore")
d2.download_button("Metrics (JSON)", lambda: views.metrics_file(a, s.checkpoint_key,
                                                                download_view),
                   file_name="metrics.json", mime="application/json", on_click="ignore")
