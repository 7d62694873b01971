"""Rules & blocks: inject a rule ("tokens matching X attend to tokens matching Y") and watch its
effect live; see where a recruiting partition (the bigram test that reads the words, or the
length-threshold one) starts blocks and the bits each boundary saved."""
import streamlit as st

import ui
from ui import views
from ui.figures import attention_heatmap, recruitment_chart

s = ui.page_setup("Rules & blocks")
if s.checkpoint_path is None:
    st.stop()

st.subheader("Rule injection")
st.caption("A rule adds its strength to the attention score of every pair where the query "
           "matches the first side and the key matches the second, on every layer and head, "
           "inside the causal mask. Word lists are comma-separated and ignore case; a regular "
           "expression must match a whole word. The sidebar's γ does the same for each block's "
           "anchors.")
st.caption("The example: words of four or more lower-case letters (mostly nouns and verbs) "
           "attend to the articles before them. A word's own article usually shares its "
           "block, where the rule acts at any λ. The articles of earlier blocks sit behind "
           "the cross-block barrier β·log(1−λ): once the barrier outweighs the rule's "
           "strength, the rule cannot lift them back to where they stood at λ = 0.")
KINDS = {"words": "Word list", "regex": "Regular expression"}
c1, c2 = st.columns(2)
with c1:
    src_kind = st.radio("Queries", list(KINDS), format_func=KINDS.get, horizontal=True,
                        **ui.keep("rule_src_kind", "regex"))
    src = st.text_input("that match", max_chars=200, **ui.keep("rule_src", "[a-z]{4,}"))
with c2:
    tgt_kind = st.radio("attend to keys", list(KINDS), format_func=KINDS.get, horizontal=True,
                        **ui.keep("rule_tgt_kind", "words"))
    tgt = st.text_input("that match ", max_chars=200, **ui.keep("rule_tgt", "the, a, an"))
strength = st.slider("Rule strength (added to the score)", 0.0, views.RULE_STRENGTH_MAX, step=0.25,
                     **ui.keep("rule_strength", 3.0))

key = views.rule_key(src_kind, src, tgt_kind, tgt, strength)   # None: a notice says why

off = ui.get_analysis(s)
if off is None:
    st.stop()
ui.show_notices(off.notices)
if not off.labels:
    st.stop()
if key is not None:
    zero = ui.get_analysis(s, rule=key[:4] + (0.0,))     # the same pairs, no bias: the baseline
    on = ui.get_analysis(s, rule=key)
    if zero is None or on is None:
        st.stop()
    extra = [n for n in on.notices if n not in off.notices]
    ui.show_notices(extra)
    m1, m2, m3 = st.columns(3)
    if on.rule_fidelity is not None and zero.rule_fidelity is not None:
        m1.metric("Fidelity to the rule's targets", f"{on.rule_fidelity:.3f}",
                  delta=f"{on.rule_fidelity - zero.rule_fidelity:+.3f} vs no rule",
                  help="Mean attention mass the matching queries put on the matching keys "
                       "they can see, over layers and heads.")
    else:
        m1.metric("Fidelity to the rule's targets", "—",
                  help="No query in this text matches with a visible target.")
    if on.perplexity is not None and off.perplexity is not None:
        m2.metric("Perplexity of the text", f"{on.perplexity:.1f}",
                  delta=f"{on.perplexity - off.perplexity:+.1f} vs no rule", delta_color="inverse")
    m3.metric("Rule pairs in the text", f"{views.pair_count(on):,}",
              help="(query, key) pairs the rule biases; keys after the query never count.")
    reach = views.rule_reach(on, key[4], s.checkpoint_path)
    split = views.rule_split(reach)
    if split:
        st.caption(split)
    note = views.barrier_note(reach)
    if note:
        st.info(note)
    view = views.reduce_heads(on.patterns, None, None)
    if view is None:
        st.stop()
    fig = attention_heatmap(view, on.labels, on.block_ids, on.rule_pairs, on.block_anchors,
                            title=f"with the rule · mean of layers and heads · λ={s.locality:g} "
                                  f"τ={s.attn_temperature:g}")
    fig.update_traces(selector=dict(type="scatter"), name="a pair the rule favours")
    st.plotly_chart(fig, key="rule_heatmap")
    st.caption("Orange circles: the (query, key) pairs the rule biases. White lines: block "
               "boundaries. Grey: the masked future.")

st.subheader("Block recruitment trace")
TRACES = {"bigram": "recruited (bigram): reads the words",
          "recruited": "recruited: a length threshold"}
kind = st.radio("Split test", list(TRACES), format_func=TRACES.get, horizontal=True,
                **ui.keep("trace_kind", "bigram"))
trace = ui.recruitment_trace(s, kind)
missing = views.missing_trace_note(trace)
if missing:
    st.info(missing)
elif trace is not None and trace.labels:
    st.plotly_chart(recruitment_chart(trace.labels, trace.gain_bits, trace.block_ids,
                                      title=views.trace_title(trace), terms=trace.terms),
                    key="recruit")
    if kind == "bigram":
        st.caption(
            "At each word the bigram test asks: does starting a new block here save bits, "
            "judged by what the words are? gain = L_continue − L_new − C. L_continue = "
            "−log₂((c + α·P_KN)/(n + α)) codes the word inside the current block of n words, "
            "c of them this same word; P_KN is the probability of the word after the one "
            "before it under a Kneser–Ney bigram model of WikiText-2's training split "
            "(interpolated, absolute discount 0.75), and α "
            f"(here {trace.alpha:g}) is how much the block trusts that model over its own "
            "counts. L_new = −log₂ P_uni codes the word as a fresh block's first word, where "
            "P_uni is its add-one frequency in the training split. C "
            f"(here {trace.boundary_bits:g} bits) is the price of a boundary. A block of "
            f"{trace.max_block_size} words cannot continue: its gain is +∞ (purple). For a "
            "word new to its block, gain = log₂((n + α)/α) − PMI − C, where PMI = "
            "log₂(P_KN/P_uni) is how much the word before predicts this one: words that "
            "belong together stay together. Solid bars (gain > 0) started a block; hover a "
            f"bar for its terms. Table: {trace.table}.")
    else:
        st.caption(
            "At each word the recruited partition asks: does starting a new block here save "
            "bits? gain = L_continue − L_new − C, where L_continue = −log₂((c + α·p)/(n + α)) "
            "codes the word inside the current block of n words (c earlier copies of it "
            "there), L_new = −log₂ p codes it as a fresh block's first word, p is a Zipf prior "
            "over the frequency-ranked vocabulary and C is the cost of the boundary. For a "
            "word new to its block p cancels: the test never reads the words, only the "
            "block's length. Solid bars (gain > 0) started a block; the About page explains "
            "each term.")
    rows = views.boundary_rows(trace)
    if rows:
        st.dataframe(rows, hide_index=True)
    else:
        st.caption("No boundary saved bits in this text: it is one block.")
