"""AppTest of the Explorer's dial in motion and its grid of heads, on tiny checkpoints: both stay
off the default path; the animation has the fixed frames, its heatmap moves and in-block mass
rises with λ; moving λ on the sidebar never recomputes the λ frames; the grid has a panel per
layer × head and the means; a click on a panel opens it, and a hostile click changes nothing."""
import base64
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from localist_core import save_checkpoint
from localist_core.experiments.train import make_model
from localist_core.model.config import TrainConfig
from localist_core.model.dial import Dial
from ui import motion

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TEXT = ("the cat sees the bridge in 1990 . a dog follows the castle on Monday . the army "
        "builds a red house near the sea .")
WIDE = {"n_layers": 3, "n_heads": 4}      # layers ≠ heads, so a transposed grid shows


@pytest.fixture(scope="module")
def app_env(tmp_path_factory, trained_tiny, tiny_corpus, tiny_model_cfg):
    """A trained tiny dial model, and an untrained one with more layers and heads."""
    root = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(root / "tiny-dial", trained_tiny, tiny_corpus.tokenizer,
                    TrainConfig(protocol="dial", penalty_form="none"))
    wide = make_model(dataclasses.replace(tiny_model_cfg, **WIDE), tiny_corpus, seed=0).eval()
    save_checkpoint(root / "tiny-wide", wide, tiny_corpus.tokenizer,
                    TrainConfig(protocol="dial", penalty_form="none"))
    mp = pytest.MonkeyPatch()
    mp.setenv("LOCALIST_CHECKPOINT_DIRS", str(root))
    yield root
    mp.undo()


def _app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update({"ckpt": "tiny-dial", "text": TEXT, **params})
    return at.run()


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _chart(at, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if c.key == key).proto.spec)


def _array(v) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array ({"dtype", "bdata", "shape"})."""
    if isinstance(v, dict):
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(n) for n in str(v.get("shape", len(a))).split(",")])
    return np.array(v, dtype=float)


def _marker(spec: dict, frame: dict, name: str) -> float:
    """The y of the moving marker of the tile ``name`` in ``frame``."""
    trace = next(i for i, t in enumerate(spec["data"]) if t.get("name") == name)
    return frame["data"][frame["traces"].index(trace)]["y"][0]


def test_the_grid_and_the_animation_stay_off_the_default_path(app_env):
    at = _app()
    _ok(at)
    keys = [c.key for c in at.get("plotly_chart")]
    assert "heatmap" in keys
    assert not [k for k in keys if k.startswith("head_grid") or k == "motion_chart"], keys
    assert at.toggle(key="head_grid").value is False and at.toggle(key="motion").value is False


def test_the_lambda_animation_has_the_fixed_frames_and_localises(app_env):
    at = _app(lam="0.35")
    at.toggle(key="motion").set_value(True).run()
    _ok(at)
    spec = _chart(at, "motion_chart")
    frames = spec["frames"]
    assert len(frames) == motion.FRAMES == len(spec["layout"]["sliders"][0]["steps"])
    assert [f["name"] for f in frames] == [f"{v:g}" for v in motion.LOCALITY_FRAMES]
    first, last = (_array(frames[i]["data"][0]["z"]) for i in (0, -1))
    seen = np.isfinite(first)
    assert np.isfinite(last).sum() == seen.sum() and not np.allclose(first[seen], last[seen])
    mass = [_marker(spec, f, motion.TILES["in_block_mass"]) for f in frames]
    assert np.all(np.diff(mass) >= -1e-6), mass          # in-block mass never falls as λ rises
    assert mass[-1] == pytest.approx(1.0, abs=1e-3) and mass[0] < mass[-1] - 0.05
    assert "τ=1 γ=0" in spec["layout"]["title"]["text"]


def test_the_temperature_animation_sharpens_as_tau_falls(app_env):
    at = _app()
    at.toggle(key="motion").set_value(True).run()
    at.radio(key="motion_axis").set_value("attn_temperature").run()
    _ok(at)
    spec = _chart(at, "motion_chart")
    assert [f["name"] for f in spec["frames"]] == [f"{v:g}" for v in motion.TEMPERATURE_FRAMES]
    bits = [_marker(spec, f, motion.TILES["entropy_bits"]) for f in spec["frames"]]
    assert np.all(np.diff(bits) >= -1e-4), bits           # entropy does not rise as τ falls
    assert bits[0] < bits[-1]


def test_moving_lambda_reuses_the_frames_and_moving_tau_recomputes_them(app_env, monkeypatch):
    calls = []
    real = motion.dial_frames
    monkeypatch.setattr(motion, "dial_frames", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    at = _app(tau="0.55")
    at.toggle(key="motion").set_value(True).run()
    _ok(at)
    before = len(calls)
    for lam in (0.2, 0.7, 1.0):
        at.sidebar.slider(key="lam").set_value(lam).run()
        _ok(at)
    assert len(calls) == before                            # λ moved: the same λ frames
    at.sidebar.slider(key="tau").set_value(0.6).run()
    _ok(at)
    assert len(calls) == before + 1 and calls[-1] == Dial(0.0, 0.6, 0.0)


@pytest.mark.parametrize("ckpt", ["tiny-dial", "tiny-wide"])
def test_the_grid_has_a_panel_per_layer_and_head_and_the_means(app_env, ckpt):
    at = _app(ckpt=ckpt, layer="1", head="0")
    at.toggle(key="head_grid").set_value(True).run()
    _ok(at)
    spec = _chart(at, "head_grid_1_0")
    n_layers, n_heads = (2, 2) if ckpt == "tiny-dial" else (WIDE["n_layers"], WIDE["n_heads"])
    panels = [tuple(c) for c in spec["data"][1]["customdata"]]
    assert sorted(panels, key=str) == sorted(
        [(ly, h) for ly in [*range(n_layers), "mean"] for h in [*range(n_heads), "mean"]],
        key=str)
    outlined = [s for s in spec["layout"]["shapes"] if s.get("line", {}).get("color")
                == "#ff7f0e"]
    assert len(outlined) == 1                              # the open panel: layer 1, head 0


def _grid_click(event):
    """A page with the Explorer's selectboxes and the grid's callback, fed ``event`` as if the
    browser had sent it (AppTest cannot click a plotly chart)."""
    import streamlit as st

    from ui import motion

    st.session_state["grid_event"] = event
    st.button("click", key="click", on_click=motion.opener("grid_event", 2, 3))
    st.selectbox("Layer", ["mean", 0, 1], key="layer")
    st.selectbox("Head", ["mean", 0, 1, 2], key="head")


@pytest.mark.parametrize("event,opened", [
    ({"selection": {"points": [{"customdata": [1, 2]}]}}, (1, 2)),
    ({"selection": {"points": [{"customdata": ["mean", 0]}]}}, ("mean", 0)),
    ({"selection": {"points": [{"customdata": [5, 0]}]}}, ("mean", "mean")),    # no layer 5
    ({"selection": {"points": [{"customdata": [-1, 0]}]}}, ("mean", "mean")),
    ({"selection": {"points": [{"customdata": ["<b>", 0]}]}}, ("mean", "mean")),
    ({"selection": {"points": []}}, ("mean", "mean")),
    ("junk", ("mean", "mean")),
])
def test_a_click_on_the_grid_opens_that_panel_and_a_hostile_one_nothing(event, opened):
    at = AppTest.from_function(_grid_click, args=(event,)).run()
    at.button(key="click").click().run()
    _ok(at)
    assert (at.selectbox(key="layer").value, at.selectbox(key="head").value) == opened
    if opened != ("mean", "mean"):          # kept for the other pages, as ui.links.keep does
        assert (at.session_state["_p_layer"], at.session_state["_p_head"]) == opened


def test_the_first_screen_marks_one_querys_anchors_and_shows_what_leaves_each_block(app_env):
    """The heatmap marks the anchors of one query (the last by default, then the one chosen),
    and its strip shows each row's attention leaving the block: 1 − its in-block mass."""
    at = _app()
    _ok(at)
    spec = _chart(at, "heatmap")
    heat = spec["data"][0]
    n = len(heat["x"])
    marks = next(t for t in spec["data"] if t.get("name") == "anchor of the block")
    assert set(marks["y"]) == {heat["y"][n - 1]}                # only the last query's row
    strip = next(t for t in spec["data"][1:] if t.get("type") == "heatmap")
    share = _array(strip["z"]).ravel()
    weights = _array(heat["customdata"])
    assert share.shape == (n,) and ((0 <= share) & (share <= 1)).all()
    assert share.max() > 0.01                  # the dial model at λ = 0 attends across blocks
    assert np.allclose(np.nansum(weights, axis=1), 1.0, atol=1e-3)
    at.selectbox(key="query").set_value(3).run()
    _ok(at)
    marks = next(t for t in _chart(at, "heatmap")["data"] if t.get("name") ==
                 "anchor of the block")
    assert set(marks["y"]) == {heat["y"][3]}
