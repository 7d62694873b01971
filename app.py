"""Localist LM Studio: the entrypoint. Page config and navigation, built from ``ui.PAGES``; each
page draws the shared sidebar through ui.page_setup()."""
import streamlit as st

import ui

st.set_page_config(page_title="Localist LM Studio", page_icon="🎛️", layout="wide")

ui.run_page(ui.navigation())
