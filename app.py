"""Localist LM Studio: the entrypoint. Page config and navigation, built from ``ui.PAGES``; each
page draws the shared sidebar through ui.page_setup()."""
import streamlit as st

import ui

st.set_page_config(page_title="Localist LM Studio", page_icon="🎛️", layout="wide")

page = st.navigation([st.Page(p.file, title=p.title, icon=p.icon, default=i == 0)
                      for i, p in enumerate(ui.PAGES)])
st.session_state["_page"] = page.url_path  # ui.keep re-seeds widgets once per page visit
page.run()
