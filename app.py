"""Localist LM Studio: the entrypoint. Page config and navigation, built from ``ui.PAGES``; each
page draws the shared sidebar through ui.page_setup()."""
import streamlit as st

import ui
from ui import tour

st.set_page_config(page_title="Localist LM Studio", page_icon="🎛️", layout="wide",
                   initial_sidebar_state="collapsed" if tour.class_mode() else "auto")
tour.start()

ui.run_page(ui.navigation())
