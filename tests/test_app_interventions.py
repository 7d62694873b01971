"""AppTest of the Interventions page on a tiny trained dial checkpoint: its three panels render
without an error; cutting a head's cross-block attention changes the Δ loss shown (and nothing
at λ = 1); hostile input (huge head lists and bad values in the link, prompts of different
lengths, texts at and past their limits) gives notices, never an error; the view's choices
round-trip through the link."""
import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from localist_core.analysis.inspection import MAX_TEXT_CHARS
from ui import interventions as ivs

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "app_pages/interventions.py"
TEXT = ("the cat sees the bridge in 1990 . a dog follows the castle on Monday . the army "
        "builds a red house near the sea .")
CLEAN, CORRUPTED = "the cat sees the bridge . the cat", "the dog sees the bridge . the dog"
PAIR = {"iv_clean": CLEAN, "iv_corrupt": CORRUPTED, "iv_answer": "sees", "iv_distractor": "follows"}


@pytest.fixture(scope="module")
def app_env(tiny_dial_root):
    mp = pytest.MonkeyPatch()
    mp.setenv("LOCALIST_CHECKPOINT_DIRS", str(tiny_dial_root))
    yield tiny_dial_root
    mp.undo()


def _app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params.update({"ckpt": "tiny-dial", "text": TEXT, **params})
    at.switch_page(PAGE)
    return at.run()


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _chart(at, key: str) -> dict | None:
    found = [c for c in at.get("plotly_chart") if c.key == key]
    return json.loads(found[0].proto.spec) if found else None


def _array(v) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array ({"dtype", "bdata", "shape"})."""
    if isinstance(v, dict):
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(n) for n in str(v.get("shape", len(a))).split(",")])
    return np.array(v, dtype=float)


def _loss_change(at) -> np.ndarray:
    return _array(_chart(at, "iv_loss_change")["data"][0]["y"])


def _texts(at, *nodes) -> str:
    return " ".join(n.value.replace("\\", "") for n in nodes)


def test_the_three_panels_render(app_env):
    at = _app(**PAIR)
    _ok(at)
    assert at.header[0].value == "Interventions"
    keys = [c.key for c in at.get("plotly_chart")]
    assert {"iv_heatmap", "iv_loss_change", "iv_patch_resid", "iv_patch_heads"} <= set(keys)
    assert at.multiselect(key="iv_heads").value == [0, 1]       # all heads of the last layer
    assert at.selectbox(key="iv_layer").value == 1
    lens = at.dataframe[-1].value                               # the logit lens
    assert len(lens) == 2 and list(lens.columns) == ["Read after"] + [
        f"Top {k}" for k in range(1, 6)]
    heads = _chart(at, "iv_patch_heads")["data"][0]
    z = _array(heads["z"])
    assert z.shape == (2, 2)
    top = float(np.abs(z).max()) or 1.0                          # symmetric diverging scale
    assert heads["zmin"] == pytest.approx(-top) and heads["zmax"] == pytest.approx(top)
    page = _texts(at, *at.markdown, *at.caption, *at.metric)
    assert "e-0" not in page and "e+0" not in page and "_" not in page.replace("__", "")


def test_cutting_a_head_changes_the_shown_loss_and_nothing_at_lambda_one(app_env):
    at = _app(lam="0")
    _ok(at)
    seen = {}
    for layer in (0, 1):
        at.selectbox(key="iv_layer").set_value(layer).run()
        for head in (0, 1):
            at.multiselect(key="iv_heads").set_value([head]).run()
            _ok(at)
            seen[layer, head] = _loss_change(at)
    moved = [k for k, d in seen.items() if np.abs(d).max() > 1e-4]
    assert moved, seen                                           # some head's cut shows a Δ
    assert len({tuple(np.round(d, 5)) for d in seen.values()}) > 1   # heads differ
    at.radio(key="iv_variant").set_value("zero").run()
    _ok(at)
    at.sidebar.slider(key="lam").set_value(1.0).run()
    _ok(at)
    assert np.abs(_loss_change(at)).max() < 1e-5                 # the channel is closed
    assert "already masked" in _texts(at, *at.info)


def test_hostile_links_give_notices_not_errors(app_env):
    at = _app(iv_heads="0," * 100_000 + "1", iv_layer="99", iv_variant="<b>evil</b>",
              iv_pos="-1", iv_pair="nope")
    _ok(at)
    warned = _texts(at, *at.warning)
    for key in ("iv_heads", "iv_layer", "iv_variant", "iv_pos", "iv_pair"):
        assert f"Link parameter {key}=" in warned, (key, warned)
    assert at.multiselect(key="iv_heads").value == [0, 1]
    at = _app(iv_heads="1,1")                                    # a head repeated
    _ok(at)
    assert "iv_heads=" in _texts(at, *at.warning)


def test_prompts_of_different_lengths_get_a_notice(app_env):
    at = _app(**{**PAIR, "iv_corrupt": CORRUPTED + " again"})
    _ok(at)
    assert at.selectbox(key="iv_pair").value == ivs.OWN_PAIR
    assert "same number of words" in _texts(at, *at.info)
    assert _chart(at, "iv_patch_resid") is None
    at.text_input(key="iv_corrupt").set_value(CORRUPTED).run()  # the same length: a map
    _ok(at)
    assert _chart(at, "iv_patch_resid") is not None
    at.text_input(key="iv_answer").set_value("two words").run()
    _ok(at)
    assert "must be one word" in _texts(at, *at.info)
    at.text_input(key="iv_answer").set_value("x" * (ivs.MAX_WORD_CHARS + 100)).run()
    _ok(at)
    assert "only the first" in _texts(at, *at.warning)


def test_texts_at_their_limits(app_env):
    at = _app(text="cat " * (MAX_TEXT_CHARS // 4) + "dog", iv_clean="x " * 5_000,
              iv_corrupt="y " * 5_000)
    _ok(at)
    notes = _texts(at, *at.warning, *at.info)
    assert "only the first" in notes                       # the sidebar text and a prompt cut
    assert "at most 32" in notes or "same number" in notes
    at = _app(text="cat")                                  # one word: nothing to predict
    _ok(at)
    assert "Perplexity after" in [m.label for m in at.metric]
    at.multiselect(key="iv_heads").set_value([]).run()     # no head chosen
    _ok(at)
    assert "Choose at least one head" in _texts(at, *at.info)


def test_the_view_round_trips_through_the_link(app_env):
    at = _app()
    at.selectbox(key="iv_layer").set_value(0).run()
    at.multiselect(key="iv_heads").set_value([1]).run()
    at.radio(key="iv_variant").set_value("zero").run()
    at.selectbox(key="iv_pair").set_value("A year changed").run()
    at.select_slider(key="iv_pos").set_value(3).run()
    _ok(at)
    link = at.query_params
    want = {"iv_layer": "0", "iv_heads": "1", "iv_variant": "zero",
            "iv_pair": "A year changed", "iv_pos": "3"}
    assert {k: link[k] for k in want} == want and "iv_clean" not in link
    assert at.text_input(key="iv_clean").value == ivs.EXAMPLES["A year changed"].clean
    again = _app(**{k: link[k] for k in link if k not in ("ckpt", "text")})
    _ok(again)
    assert again.selectbox(key="iv_layer").value == 0
    assert again.multiselect(key="iv_heads").value == [1]
    assert again.radio(key="iv_variant").value == "zero"
    assert again.select_slider(key="iv_pos").value == 3
    assert again.text_input(key="iv_corrupt").value == ivs.EXAMPLES["A year changed"].corrupted
    # the visitor's own pair travels as its texts
    again.text_input(key="iv_clean").set_value(CLEAN).run()
    again.text_input(key="iv_corrupt").set_value(CORRUPTED).run()
    _ok(again)
    link = again.query_params
    assert link["iv_pair"] == ivs.OWN_PAIR and link["iv_clean"] == CLEAN
    third = _app(**{k: link[k] for k in link if k not in ("ckpt", "text")})
    _ok(third)
    assert third.text_input(key="iv_clean").value == CLEAN
    assert third.text_input(key="iv_corrupt").value == CORRUPTED
    assert third.selectbox(key="iv_pair").value == ivs.OWN_PAIR


def test_numbers_read_for_people():
    assert [ivs.sig3(v) for v in (1234.5, 0.000123456, -0.5, float("inf"))] == [
        "1,230", "0.000123", "-0.500", "—"]
    assert ivs.signed(0.25) == "+0.250" and ivs.signed(None) == "—"
