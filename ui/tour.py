"""Class mode (``/?mode=class``): a presenter layout for a projector, and a guided tour of the
dial in a few steps. Each step sets the whole state it talks about (checkpoint, blocks, λ, τ,
γ, layer, head, colour scale), so whatever a visitor changed before, the step shows what its
line says."""
from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from ui.links import PERSIST

CLASS = "class"
STEP = "_tour_step"
# Larger type for the back of the room: every size in the app is in rem.
CLASS_CSS = "<style>html{font-size:19px;}</style>"


@dataclass(frozen=True)
class Step:
    """One stop of the tour: its title, the line a presenter reads, and the settings it sets
    (sidebar and Explorer widget keys → values)."""

    title: str
    line: str
    settings: dict = field(default_factory=dict)


BASE = {"ckpt": "dial", "blocks": "as trained", "lam": 0.0, "tau": 1.0, "gamma": 0.0,
        "text_mode": "Sample text", "prompt": "castle", "layer": "mean", "head": "mean",
        "log_scale": False, "head_grid": False, "motion": False}

TOUR = (
    Step("Distributed", "At λ = 0 the model attends wherever it likes. White lines mark the "
         "blocks; the orange strip on the right shows how much of each word's attention leaves "
         "its block: about a third.", {}),
    Step("Turn the dial", "λ = 0.5 pulls attention into the blocks: the cells outside them "
         "darken and the orange strip fades.", {"lam": 0.5}),
    Step("Localist", "At λ = 1 every word attends only inside its own block. Nothing leaves: "
         "the strip is blank, and each block can be read on its own.", {"lam": 1.0}),
    Step("One head up close", "Layer 1, head 3 at λ = 0: this head sends almost all of each "
         "word's attention back to one early word, far outside the word's own block; the strip "
         "turns dark.", {"layer": 1, "head": 3}),
    Step("The same head, localist", "The same head at λ = 1 must stay in its block: what it "
         "read from earlier blocks is gone.", {"layer": 1, "head": 3, "lam": 1.0}),
    Step("Temperature", "τ sharpens or softens attention. At τ = 0.5 (λ = 0.5) each word "
         "puts its weight on fewer words: brighter cells, fewer of them.",
         {"lam": 0.5, "tau": 0.5}),
)


def class_mode() -> bool:
    """Whether the link asked for the presenter layout (``mode=class``)."""
    return st.query_params.get("mode") == CLASS


def apply_step(i: int) -> None:
    """Set every value step ``i`` names (the rest from ``BASE``), for this run's widgets and for
    the pages after it; a callback or the first run of class mode calls it."""
    i = min(max(int(i), 0), len(TOUR) - 1)
    for key, value in {**BASE, **TOUR[i].settings}.items():
        st.session_state[key] = value
        st.session_state[PERSIST + key] = value
    st.session_state[STEP] = i


def start() -> None:
    """In class mode: larger type, and the tour's first step on the session's first run."""
    if not class_mode():
        return
    st.html(CLASS_CSS)
    if STEP not in st.session_state:
        apply_step(0)


def tour_bar() -> None:
    """"Step k of N", the step's line, and Back / Next (class mode only)."""
    if not class_mode():
        return
    i = min(max(int(st.session_state.get(STEP, 0)), 0), len(TOUR) - 1)
    step = TOUR[i]
    text, back, nxt = st.columns([8, 1, 1], vertical_alignment="center")
    text.markdown(f"**Step {i + 1} of {len(TOUR)} · {step.title}.** {step.line}")
    back.button("Back", key="tour_back", on_click=apply_step, args=(i - 1,), disabled=i == 0,
                use_container_width=True)
    nxt.button("Next", key="tour_next", on_click=apply_step, args=(i + 1,),
               disabled=i == len(TOUR) - 1, use_container_width=True, type="primary")
