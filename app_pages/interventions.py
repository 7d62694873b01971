"""Interventions: cut chosen heads' cross-block attention and see which words' predictions
change; patch a clean prompt into a corrupted one, layer by layer and head by head; read the
next words after each layer (the logit lens)."""
import streamlit as st

import ui
from ui import interventions as ivs
from ui import views
from ui.intervention_figures import loss_change_bar, patching_map

s = ui.page_setup("Interventions")
a = ui.analysis_or_stop(s)
n_layers, n_heads = a.patterns.shape[:2]
ivs.read_link(n_layers, n_heads, len(a.labels))
ivs.fit_heads(n_heads)
dial = f"λ={s.locality:g} τ={s.attn_temperature:g} γ={s.rule_strength:g}"

# -- 1. cut cross-block attention ----------------------------------------------------------------
st.subheader("Cut cross-block attention")
st.caption("Remove the attention the chosen heads give to words outside each query's block, "
           "on the sidebar's text and dial, and see which predictions change.")
c1, c2, c3 = st.columns([1, 2, 2])
layers = list(range(n_layers))
layer = c1.selectbox("Layer", layers, **ui.keep("iv_layer", layers[-1], layers))
heads = c2.multiselect("Heads", list(range(n_heads)), format_func=lambda h: f"head {h}",
                       help="One head, several, or every head of the layer.",
                       **ui.keep("iv_heads", list(range(n_heads))))
variant = c3.radio("Variant", list(ivs.VARIANT_NAMES), format_func=ivs.VARIANT_NAMES.get,
                   help="Renormalise: the head's cross-block keys are masked before the "
                        "softmax, so it attends inside its block (as at λ = 1, for these heads "
                        "alone). Zero: their weights are set to 0 after the softmax and the "
                        "rest is kept, so a row sums to its in-block share.",
                   **ui.keep("iv_variant", "renormalise", list(ivs.VARIANT_NAMES)))
v = ivs.ablation(s, layer, heads, variant) if heads else None
if not heads:
    st.info("Choose at least one head.", icon="ℹ️")
elif v is not None:
    which = (f"all heads of layer {layer}" if len(heads) == n_heads else
             f"layer {layer}, head{'s' if len(heads) > 1 else ''} "
             f"{', '.join(map(str, heads))}")
    if s.locality >= 1:
        st.info("At λ = 1 every cross-block key is already masked: the cut changes nothing.",
                icon="ℹ️")
    picture, side = st.columns([3, 2], gap="small")
    view = ivs.head_view(a.patterns, layer, heads)
    with picture:
        st.plotly_chart(views.attention_heatmap(
            view, a.labels, a.block_ids, a.anchor_mask, a.block_anchors,
            title=f"{which} · {dial}" + (" · mean" if len(heads) > 1 else ""),
            query=len(a.labels) - 1, cross_share=views.cross_share(view, a.block_ids)),
            key="iv_heatmap")
    before, after = ivs.perplexities(v)
    rows, n_changed = ivs.changed_rows(v)
    with side:
        m1, m2 = st.columns(2)
        m1.metric("Attention cut", ivs.sig3(v.cross_mass),
                  help="The share of these heads' attention that went to other blocks (the "
                       "mean over queries), before the cut.")
        m2.metric("Perplexity after", ivs.sig3(after),
                  delta=None if before is None else f"{ivs.signed(after - before)} from "
                                                    f"{ivs.sig3(before)}",
                  delta_color="inverse", help="The text's perplexity with the cut made.")
        st.markdown(f"**Top-1 prediction changed at {n_changed} of {len(v.labels)} "
                    "positions**")
        if rows:
            st.dataframe(rows, hide_index=True, key="iv_changed", height=min(36 * len(rows)
                                                                               + 40, 320))
            st.caption("Δ loss: how much harder (nats) the next word became to predict."
                       + (f" The first {len(rows)} are listed." if n_changed > len(rows)
                          else ""))
    st.plotly_chart(loss_change_bar(v.labels, v.loss_change,
                                    f"Δ loss per word when the cut is made · {which}"),
                    key="iv_loss_change")
    st.caption("Each bar is the word at that position, predicted from the words before it: "
               "above 0 (orange) the cut made it harder to predict, below 0 (green) easier.")

# -- 2. activation patching ----------------------------------------------------------------------
st.subheader("Patch a clean prompt into a corrupted one")
st.caption("Two prompts of the same length that differ in a word. Each cell copies one "
           "activation of the clean run into the corrupted run and shows how much of the "
           "answer's lead over the distractor (their log-probability difference at the last "
           "word) comes back: 1 is the clean run, 0 the corrupted one.")
names = list(ivs.EXAMPLES) + [ivs.OWN_PAIR]
first = next(iter(ivs.EXAMPLES.values()))
kw = ui.keep("iv_pair", names[0], names)
st.selectbox("Example pair", names, **{**kw, "on_change": ivs.fill_pair})
c1, c2 = st.columns(2)
clean = c1.text_input("Clean prompt", **{**ui.keep("iv_clean", first.clean),
                                         "on_change": ivs.own_text})
corrupted = c2.text_input("Corrupted prompt", **{**ui.keep("iv_corrupt", first.corrupted),
                                                 "on_change": ivs.own_text})
c1, c2 = st.columns(2)
answer = c1.text_input("Answer", help="The word the clean prompt should predict next. Blank: "
                       "the clean run's most likely word.",
                       **{**ui.keep("iv_answer", first.answer), "on_change": ivs.own_text})
distractor = c2.text_input("Distractor", help="The word the corrupted prompt should predict "
                           "next. Blank: the corrupted run's most likely word.",
                           **{**ui.keep("iv_distractor", first.distractor),
                              "on_change": ivs.own_text})
p = ivs.patching(s, clean, corrupted, answer, distractor)
if p is not None:
    st.markdown(f"Lead of “{p.answer}” over “{p.distractor}” (log-probability difference): "
                f"**{ivs.sig3(p.clean_diff)}** clean, **{ivs.sig3(p.corrupted_diff)}** "
                "corrupted.")
    m1, m2 = st.columns([3, 2], gap="small")
    m1.plotly_chart(patching_map(p.resid, [f"into layer {i}" for i in range(len(p.resid))],
                                 ivs.position_labels(p), "the residual stream, one position"),
                    key="iv_patch_resid")
    m2.plotly_chart(patching_map(p.heads, [f"layer {i}" for i in range(len(p.heads))],
                                 [f"head {h}" for h in range(p.heads.shape[1])],
                                 "one head's output, every position"), key="iv_patch_heads")
    st.caption("Blue: the patch restores the clean answer; red: it pushes further toward the "
               "distractor. The scale is symmetric about 0 up to the largest value.")

# -- 3. the logit lens ---------------------------------------------------------------------------
st.subheader("Logit lens")
positions = list(range(len(a.labels)))
pos = st.select_slider("After position", options=positions,
                       format_func=lambda i: f"{i} · {a.labels[i]}",
                       help="The five most likely next words read from the residual stream "
                            "after each layer, through the model's final normalisation and "
                            "output head; the last row is the model's own prediction.",
                       **ui.keep("iv_pos", positions[-1], positions))
lens = ivs.lens(s, pos)
if lens:
    st.dataframe(lens, hide_index=True, key="iv_lens")

ivs.write_link(layer, heads, n_heads, variant, pos)
