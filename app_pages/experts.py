"""Experts: model-level recruitment read from a results folder (``python -m localist_core
experts``): how many experts each description cost recruits, the experts as they were recruited
and the bits each saved, what each specialised in, the held-out comparison, and which expert the
sidebar's text would be routed to."""
import streamlit as st

import ui
from ui import experts as ex

s = ui.page_setup("Experts")
st.markdown("A pool of specialised models grown from one. Each **expert** is the selected base "
            "plus a small low-rank adapter on its last hidden state (a child adds its own to "
            "its parent's). WikiText-2 articles arrive in order; each goes to the expert that "
            "codes it in the fewest bits. Every few articles an expert tries to grow a child on "
            "the articles it codes worst; the child is **recruited** when the bits it saves on "
            "the halves of those articles it never trained on exceed its own description cost: "
            "its adapter's numbers × the bits stored per number.")
folder = ex.experts_dir()
runs, problems, summary = ex.results(folder)
ui.show_notices([f"Refused results file: {p}" for p in problems])
if not runs:
    st.info(ex.no_results(folder), icon="ℹ️")
    st.stop()

st.subheader("How many experts each cost recruits")
if summary is not None:
    st.dataframe(ex.cost_rows(summary), hide_index=True)
    st.caption("Mean ± sd over seeds. The difference pool − single adapter is paired by seed; "
               "it is established only where its 95% interval excludes 0.")
costs = sorted({r["bits_per_param"] for r in runs})
left, right = st.columns(2)
bpp = left.selectbox("Bits per adapter number", costs, format_func=lambda v: f"{v:g}",
                     **ui.keep("ex_bpp", costs[0], costs))
seeds = [r["seed"] for r in runs if r["bits_per_param"] == bpp]
seed = right.selectbox("Seed", seeds, **ui.keep("ex_seed", seeds[0], seeds))
run = next(r for r in runs if r["bits_per_param"] == bpp and r["seed"] == seed)
base = run["settings"]["base"]

st.subheader("The experts as they were recruited")
st.caption(ui.plain(ex.run_caption(run)))   # names from the file: never Markdown
if run["attempts"]:
    st.plotly_chart(ex.timeline_figure(run), key="experts_timeline")
    st.dataframe(ex.attempt_rows(run), hide_index=True)
else:
    st.info("No expert held enough articles to try a child.")

st.subheader("What each expert specialised in")
st.dataframe(ex.expert_rows(run), hide_index=True)
st.caption("Words ranked by their log-odds in the expert's articles against the rest of the "
           "stream, with an informative Dirichlet prior (z-scores).")

st.subheader("Held-out articles")
st.dataframe(ex.heldout_rows(run), hide_index=True)
st.caption("Each held-out article is routed by its first 25% of tokens (at least 32) and "
           "scored on the rest. The single adapter has the same form as an expert and was "
           "trained for as many steps as all recruitment attempts together.")

st.subheader("Where your text would go")
if s.checkpoint_path is None:
    st.stop()
if not ex.grown_from(run, s.checkpoint_path):
    st.info(f"These experts were grown on {ui.plain(str(base.get('name')))}; choose that "
            f"checkpoint in the sidebar to route your text through them.", icon="ℹ️")
    st.stop()
routing, notices = ex.route(s.checkpoint_path, folder, run, s.text)
ui.show_notices(notices)
if routing is None:
    st.stop()
if routing["cut"]:
    st.caption(f"Only the first {routing['tokens']:,} tokens were routed.")
best = run["experts"][routing["expert"]]
st.metric("Routed to", f"expert {best['id']}",
          help="The expert that codes the whole text in the fewest bits.")
st.dataframe(ex.route_rows(run, routing), hide_index=True)
