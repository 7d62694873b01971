"""compare (placeholder until written)."""
import ui

s = ui.page_setup("Compare")
