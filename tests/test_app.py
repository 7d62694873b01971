"""AppTest: every page renders, the λ slider moves the in-block-mass tile, deep links
round-trip (a cold link to a page included), the sidebar keeps its settings across pages, and
bad text or bad link parameters give notices, not exceptions."""
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui
from localist_core import save_checkpoint
from localist_core.model.config import TrainConfig

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = [p.file for p in ui.PAGES]


@pytest.fixture(scope="module")
def app_env(tmp_path_factory, trained_tiny, tiny_corpus):
    """Tiny checkpoints beside the shipped ones: a dial model and a penalty model."""
    root = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(root / "tiny-dial", trained_tiny, tiny_corpus.tokenizer,
                    TrainConfig(protocol="dial", penalty_form="none"))
    save_checkpoint(root / "tiny-penalty", trained_tiny, tiny_corpus.tokenizer,
                    TrainConfig(protocol="penalty", penalty_form="attention", locality=0.6))
    old = os.environ.get("LOCALIST_CHECKPOINT_DIRS")
    os.environ["LOCALIST_CHECKPOINT_DIRS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("LOCALIST_CHECKPOINT_DIRS")
    else:
        os.environ["LOCALIST_CHECKPOINT_DIRS"] = old


def _app(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    return at.run()


def _metric(at, label):
    return next(float(m.value) for m in at.metric if m.label == label)


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]


def _guarded_script():
    """A page whose computations fail: one with a message for the visitor, one without."""
    import streamlit as st

    from localist_core.experiments.cache import SweepCacheError
    from ui.notices import guarded

    @guarded("draw the thing", fallback=[])
    def broken():
        raise RuntimeError("/srv/secret/model.bin exploded")

    @guarded("read the map")
    def refused():
        raise SweepCacheError("/tmp/sweep/cache/run.json: corrupt JSON")

    st.text(f"{broken()!r} {refused()!r}")


def test_the_error_guard_turns_a_failure_into_a_notice_and_a_logged_trace(caplog):
    at = AppTest.from_function(_guarded_script).run()
    _ok(at)
    assert at.text[0].value == "[] None"                       # each call got its fallback
    errors = [e.value.replace("\\", "") for e in at.error]
    assert errors == ["Could not draw the thing; the server log has the details."]
    warnings = [w.value.replace("\\", "") for w in at.warning]
    assert warnings == ["Refused cache file: …/cache/run.json: corrupt JSON"]
    traced = [r for r in caplog.records if r.name == "ui" and r.exc_info]
    assert traced and "secret" in str(traced[0].exc_info[1])   # the operator sees everything


def test_every_page_renders_without_exception(app_env):
    at = _app({"ckpt": "tiny-dial"})
    _ok(at)
    for page in PAGES:
        at.switch_page(page).run()
        _ok(at)
        if page.endswith("explorer.py"):       # its picture is its heading
            assert [c.key for c in at.get("plotly_chart")][:1] == ["heatmap"], page
        else:
            assert at.header, page


def test_moving_lambda_on_the_dial_model_raises_in_block_mass(app_env):
    at = _app({"ckpt": "tiny-dial"})
    _ok(at)
    before = _metric(at, "In-block mass")
    at.sidebar.slider(key="lam").set_value(0.9).run()
    _ok(at)
    after = _metric(at, "In-block mass")
    assert after > before + 0.05
    at.sidebar.slider(key="lam").set_value(1.0).run()
    assert _metric(at, "In-block mass") == pytest.approx(1.0, abs=1e-3)


def test_deep_link_round_trips(app_env):
    link = {"ckpt": "tiny-penalty", "lam": "0.35", "tau": "0.5", "gamma": "1.5",
            "layer": "1", "head": "0", "prompt": "storm"}
    at = _app(link)
    _ok(at)
    assert at.sidebar.selectbox(key="ckpt").value == "tiny-penalty"
    assert at.sidebar.slider(key="lam").value == pytest.approx(0.35)
    assert at.selectbox(key="layer").value == 1 and at.selectbox(key="head").value == 0
    assert {k: at.query_params[k] for k in link} == link
    assert not any("not valid" in w.value for w in at.warning)
    free = _app({"ckpt": "tiny-dial", "text": "the cat sees the bridge ."})
    assert free.query_params["text"] == "the cat sees the bridge ."
    assert free.sidebar.text_area(key="free_text").value == "the cat sees the bridge ."


@pytest.mark.parametrize("params", [
    {"lam": "7"}, {"lam": "nan"}, {"tau": "inf"}, {"tau": "0"}, {"gamma": "-1"},
    {"layer": "99"}, {"head": "x"}, {"ckpt": "../../etc/passwd"}, {"prompt": "nope"},
    {"block": "0"},
])
def test_bad_link_parameters_fall_back_with_a_notice(app_env, params):
    at = _app({"ckpt": "tiny-dial", **params})
    _ok(at)
    key = next(iter(params))
    assert any(f"{key}=" in w.value and "not valid" in w.value for w in at.warning)
    assert _metric(at, "In-block mass") >= 0


@pytest.mark.parametrize("text,notice", [
    ("", "empty"), ("   \n\t ", "empty"), ("\u200b\u200b\x07", "no words"),
    ("word " * 400, "only the first"), ("go " * 30_000, "only the first"),
    ("<script>alert(1)</script> <b>bold</b> **md** [a](javascript:alert(1))", "outside the"),
    ("مرحبا بالعالم 😀 שלום", "outside the"),
])
def test_hostile_text_gives_a_notice_not_an_exception(app_env, text, notice):
    at = _app({"ckpt": "tiny-dial"})
    at.sidebar.radio(key="text_mode").set_value("Your own text").run()
    at.sidebar.text_area(key="free_text").set_value(text).run()
    _ok(at)
    assert any(notice in w.value for w in at.warning), [w.value for w in at.warning]
    assert not any("<script>" in m.value for m in at.markdown)


SHIPPED_DIAL = Path(APP).parent / "assets" / "checkpoints" / "dial"


@pytest.mark.skipif(not (SHIPPED_DIAL / "config.json").is_file(), reason="no shipped dial model")
def test_shipped_dial_model_opens_by_default_and_its_slider_localises():
    at = _app()
    _ok(at)
    assert at.sidebar.selectbox(key="ckpt").value == "dial"
    before = _metric(at, "In-block mass")
    at.sidebar.slider(key="lam").set_value(0.75).run()
    _ok(at)
    assert _metric(at, "In-block mass") > before + 0.1


RULE_TEXT = ("the cat sees the bridge in 1990 . a dog follows the castle on Monday . the army "
             "builds a red house near the sea .")


def _rules_page(**widgets) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update({"ckpt": "tiny-dial", "text": RULE_TEXT})
    at.switch_page("app_pages/rules.py").run()  # the first run is on the page: the link holds
    for key, value in widgets.items():
        at.text_input(key=key).input(value) if key in ("rule_src", "rule_tgt") else \
            at.radio(key=key).set_value(value)
    return at.run()


def test_a_rule_raises_fidelity_to_its_targets_live(app_env):
    at = _rules_page(rule_src_kind="words", rule_src="sees, follows, builds",
                     rule_tgt_kind="regex", rule_tgt="the|a")
    _ok(at)
    tile = next(m for m in at.metric if m.label == "Fidelity to the rule's targets")
    assert float(tile.delta.split()[0]) > 0, tile        # strength 3 (default) pulls attention
    assert any(m.label == "Perplexity of the text" for m in at.metric)
    assert at.get("plotly_chart")                          # the heatmap and the trace


@pytest.mark.parametrize("pattern,notice", [("(a|aa)+b", "backtracks catastrophically"),
                                            ("(unclosed", "not valid"),
                                            ("   ", "empty")])
def test_a_bad_rule_gives_a_notice_and_the_page_still_renders(app_env, pattern, notice):
    at = _rules_page(rule_tgt_kind="regex", rule_tgt=pattern)
    _ok(at)
    text = " ".join(w.value for w in at.warning).replace("\\", "")
    assert notice in text, text
    assert at.subheader[-1].value == "Block recruitment trace"


def test_blocks_choice_reblocks_the_text_and_rides_in_the_link(app_env):
    at = _app({"ckpt": "tiny-dial", "blocks": "punctuation"})
    _ok(at)
    assert at.selectbox(key="blocks").value == "punctuation"
    assert at.query_params["blocks"] == "punctuation"
    at.selectbox(key="blocks").set_value("recruited").run()
    _ok(at)
    assert at.query_params["blocks"] == "recruited"


def test_an_old_block_link_still_reblocks_with_fixed_windows(app_env):
    at = _app({"ckpt": "tiny-dial", "block": "3"})
    _ok(at)
    assert at.selectbox(key="blocks").value == "fixed"
    assert at.number_input(key="block").value == 3


def test_a_cold_link_to_a_page_runs_it_through_the_app(app_env):
    """The first run of a session opened by a link to a page runs app.py (AppTest starts every
    run as a fresh server would), which chooses the page and keeps the link's values."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update({"ckpt": "tiny-dial", "lam": "0.6", "tau": "0.5"})
    at.switch_page("app_pages/theory.py").run()
    _ok(at)
    assert at.session_state["_page"] == "theory"       # app.py ran, and chose this page
    assert at.header[0].value == "Theory"
    assert at.sidebar.slider(key="lam").value == pytest.approx(0.6)
    assert at.sidebar.slider(key="tau").value == pytest.approx(0.5)
    assert (at.query_params["lam"], at.query_params["tau"]) == ("0.6", "0.5")


def test_the_sidebar_keeps_its_settings_when_the_page_changes(app_env):
    at = _app({"ckpt": "tiny-dial"})
    at.sidebar.slider(key="lam").set_value(0.3).run()
    for page in PAGES[1:]:
        at.switch_page(page).run()
        _ok(at)
        assert at.sidebar.slider(key="lam").value == pytest.approx(0.3), page


def test_a_block_link_takes_exactly_the_sidebars_range(app_env):
    """The link's "block" and the sidebar's block-size input share one range
    (``ui.links.BLOCK_SIZE_RANGE``): both ends are taken, one past the top falls back to the
    default (``ui.links.BLOCK_SIZE_DEFAULT``) with a notice."""
    from ui.links import BLOCK_SIZE_DEFAULT, BLOCK_SIZE_RANGE
    lo, hi = BLOCK_SIZE_RANGE
    for size in (lo, hi):
        at = _app({"ckpt": "tiny-dial", "block": str(size)})
        _ok(at)
        box = at.number_input(key="block")
        assert (box.min, box.max, box.value) == (lo, hi, size)
        assert not any("block=" in w.value for w in at.warning)
    at = _app({"ckpt": "tiny-dial", "blocks": "fixed", "block": str(hi + 1)})
    _ok(at)
    assert at.number_input(key="block").value == BLOCK_SIZE_DEFAULT
    assert any("block=" in w.value and "not valid" in w.value for w in at.warning)
