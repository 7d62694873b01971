"""About: the localist/distributed spectrum for a class, and a guided demo that sets the dials."""
import streamlit as st

import ui

s = ui.page_setup("About: from localist to distributed attention")

st.markdown("""
**What is attention?** When a language model reads a word, each layer decides how much to
*look back* at every earlier word. Those weights — one row of the heatmap per word — add up to 1.

**Localist or distributed?** In a *distributed* model a word may spread its attention over the
whole text: flexible, but hard to read. In a *localist* model the text is cut into small
**blocks** (here: 5 words) and a word looks mostly inside its own block, often at a few
**anchor** words — the words of the block after which the next word is most predictable. That
is easy to read, and it is what the papers by J. Diederich (2025) propose.

**The dials.**
- **λ (locality)** moves a model along the spectrum. At λ = 0 it is an ordinary transformer.
  As λ rises, every weight that would cross a block boundary is multiplied by (1 − λ)^(β/τ); at
  λ = 1 attention stays inside the block exactly.
- **τ (temperature)** sharpens (τ < 1) or flattens (τ > 1) each row of weights.
- **γ (rule strength)** adds a bonus to the anchors, so you can watch a hand-written rule take over.

**Honesty.** Our models are *causal*: a word never sees the words after it, as in real text
generation. The papers report a perplexity of 4.65 on WikiText-2, which no causal model of
this size reaches (ours sit in the hundreds). Attention that peeks at later words of its own
block gives numbers like theirs; the *Tradeoff* page and REPRODUCTION.md show how.

**What to notice.** A causal model is already quite local: it puts about half its attention
in its own block just because recent words are near. So the Explorer always shows controls
next to in-block mass — a sliding window of the last 5 words, blocks shifted by 2, and
uniform attention. Localist structure is what exceeds those.
""")

st.subheader("Guided demo")
STEPS = [
    ("1 · Distributed", dict(lam=0.0, tau=1.0, gamma=0.0),
     "λ = 0: the model as trained. Look at the heatmap: weight spreads across block lines."),
    ("2 · Half way", dict(lam=0.5, tau=1.0, gamma=0.0),
     "λ = 0.5: cross-block weights shrink; the in-block-mass tile rises."),
    ("3 · Localist", dict(lam=1.0, tau=1.0, gamma=0.0),
     "λ = 1: every row stays inside its block (the white squares)."),
    ("4 · Sharper", dict(lam=1.0, tau=0.25, gamma=0.0),
     "τ = 0.25: each word now picks one or two keys; entropy falls."),
    ("5 · A rule", dict(lam=1.0, tau=1.0, gamma=3.0),
     "γ = 3: attention is pulled to the anchors (orange circles); pointer fidelity rises."),
]


def _go(values: dict) -> None:
    for key, value in values.items():
        st.session_state[ui.PERSIST + key] = value


cols = st.columns(len(STEPS))
for col, (title, values, text) in zip(cols, STEPS):
    with col:
        st.markdown(f"**{title}**")
        st.caption(text)
        if st.button("Show me", key=f"demo_{title}", on_click=_go, args=(values,)):
            st.switch_page("pages/explorer.py")

st.caption(f"Current dials: λ={s.locality:g}, τ={s.attn_temperature:g}, γ={s.rule_strength:g}.")
