"""theory (placeholder until written)."""
import ui

s = ui.page_setup("Theory")
