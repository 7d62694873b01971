"""Localist LM Studio: the entrypoint. Page config and navigation; each page draws the shared
sidebar through ui.page_setup()."""
import streamlit as st

st.set_page_config(page_title="Localist LM Studio", page_icon="🔦", layout="wide")

st.navigation([
    st.Page("pages/explorer.py", title="Explorer", icon="🔍", default=True),
    st.Page("pages/tradeoff.py", title="Tradeoff", icon="📈"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
    st.Page("pages/theory.py", title="Theory", icon="🧮"),
    st.Page("pages/sweeps.py", title="Sweeps", icon="🧪"),
    st.Page("pages/about.py", title="About", icon="🎓"),
]).run()
