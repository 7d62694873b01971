"""Localist LM Studio: entrypoint. A minimal page until the dashboard lands (issue 4)."""
from pathlib import Path

import streamlit as st

from localist_core import CheckpointError, load_model

ASSETS = Path(__file__).parent / "assets"

st.set_page_config(page_title="Localist LM Studio", layout="wide")
st.title("Localist LM Studio")
st.write("Dial a transformer's attention from block-local (λ = 1) to distributed (λ = 0).")


@st.cache_resource
def cached_model(path: str):
    return load_model(path)


checkpoints = sorted(p.parent for p in ASSETS.glob("*/config.json"))
if not checkpoints:
    st.info("No shipped checkpoint in assets/ yet. Train one with the library (see README), "
            "then restart the app.")
    st.stop()

choice = st.sidebar.selectbox("Checkpoint", checkpoints, format_func=lambda p: p.name)
lam = st.sidebar.slider("λ (locality)", 0.0, 1.0, 0.0, 0.05)
tau = st.sidebar.slider("τ (temperature)", 0.05, 10.0, 1.0, 0.05)
text = st.text_area("Text", "The castle was built in the twelfth century by the king .")
try:
    model, tok = cached_model(str(choice))
except CheckpointError as e:
    st.error(f"Cannot load this checkpoint: {e}")
    st.stop()
ids = tok.encode(text)[: model.cfg.n_ctx]
if not ids:
    st.warning("Enter some text to see its attention.")
    st.stop()
_, cache = model.run_with_cache(ids, locality=lam, attn_temperature=tau)
for note in cache.notices:
    st.warning(note)
st.caption("Layer 0, mean over heads (rows: queries, columns: keys)")
st.dataframe(cache["blocks.0.attn.hook_pattern"][0].mean(0).numpy().round(3))
