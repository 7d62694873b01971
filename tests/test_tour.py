"""Class mode and its tour (ui/tour.py) on the shipped checkpoints: ``mode=class`` opens the
first step on the Explorer with its settings, Next and Back move through the steps, each step
sets the whole state it names whatever the visitor changed before, and Back stops at the
first step."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from ui import tour

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _class() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["mode"] = "class"
    return at.run()


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _step_text(at) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Step "))


def test_class_mode_opens_the_first_step_and_next_moves_through_the_tour():
    at = _class()
    _ok(at)
    assert _step_text(at).startswith(f"**Step 1 of {len(tour.TOUR)} · Distributed.**")
    assert at.sidebar.slider(key="lam").value == 0.0
    assert at.button(key="tour_back").disabled and not at.button(key="tour_next").disabled
    at.sidebar.slider(key="tau").set_value(2.0).run()       # a visitor's own change …
    at.button(key="tour_next").click().run()
    _ok(at)
    assert _step_text(at).startswith(f"**Step 2 of {len(tour.TOUR)}")
    assert at.sidebar.slider(key="lam").value == 0.5
    assert at.sidebar.slider(key="tau").value == 1.0         # … is set back by the step
    for _ in range(2):
        at.button(key="tour_next").click().run()
    _ok(at)
    assert (at.selectbox(key="layer").value, at.selectbox(key="head").value) == (1, 3)
    assert at.sidebar.slider(key="lam").value == 0.0
    at.button(key="tour_back").click().run()
    assert _step_text(at).startswith(f"**Step 3 of {len(tour.TOUR)}")
    assert at.selectbox(key="layer").value == "mean"


def test_every_step_stays_inside_the_tour_and_sets_known_keys():
    assert all(set(step.settings) <= set(tour.BASE) for step in tour.TOUR)
    at = _class()
    for _ in range(len(tour.TOUR) + 2):                       # Next past the end is disabled
        nxt = at.button(key="tour_next")
        if nxt.disabled:
            break
        nxt.click().run()
        _ok(at)
    assert _step_text(at).startswith(f"**Step {len(tour.TOUR)} of {len(tour.TOUR)}")


def test_without_class_mode_there_is_no_tour_bar():
    at = AppTest.from_file(APP, default_timeout=180).run()
    _ok(at)
    assert not [m for m in at.markdown if m.value.startswith("**Step ")]
    assert not [b for b in at.button if b.key in ("tour_next", "tour_back")]
