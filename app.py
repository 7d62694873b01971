"""Localist LM Studio: the entrypoint. Page config and navigation; each page draws the shared
sidebar through ui.page_setup()."""
import streamlit as st

st.set_page_config(page_title="Localist LM Studio", page_icon="🎛️", layout="wide")

page = st.navigation([
    st.Page("pages/explorer.py", title="Explorer", icon=":material/grid_on:", default=True),
    st.Page("pages/tradeoff.py", title="Tradeoff", icon=":material/show_chart:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/rules.py", title="Rules & blocks", icon=":material/rule:"),
    st.Page("pages/theory.py", title="Theory", icon=":material/functions:"),
    st.Page("pages/sweeps.py", title="Sweeps", icon=":material/science:"),
    st.Page("pages/about.py", title="About", icon=":material/school:"),
])
st.session_state["_page"] = page.url_path  # ui.keep re-seeds widgets once per page visit
page.run()
