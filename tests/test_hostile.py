"""Hostile input (README "Security"). Each case goes through the tokenizer, the live analysis
(run_with_cache underneath) and the app (AppTest). Every case ends with a clear notice (none at a
valid edge), a finite heatmap whose rows sum to 1, no exception, and no user HTML or Markdown
rendered."""
import base64
import json
import math
import os
import re
import warnings

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import ui
from localist_core import save_checkpoint
from localist_core.analysis.inspection import MAX_TEXT_CHARS, analyze, next_words
from localist_core.experiments.train import make_model
from localist_core.model.config import TrainConfig
from localist_core.model.dial import Dial, DialNotice
from localist_core.model.tokenizer import UNK

APP = str(ui.REPO / "app.py")
CKPT = "tiny-hostile"
HOSTILE_NAME = '<img src=x onerror="alert(1)"> **ckpt**'   # a folder name is user input too
# Markdown elements may hold no unescaped tag at all; chart text none of these (plotly's own
# hover templates use <br> and <extra>).
TAG = re.compile(r"(?<!\\)<[A-Za-z/!]")
CHART_HTML = ("<script", "<img", "<iframe", "<a ", "javascript:")

# name → (text, words the notice must contain, whether it goes through the app too)
TEXTS = {
    "empty": ("", "empty", True),
    "whitespace": (" \t\n \r\n   ", "empty", True),
    "100k-characters": ("the cat sees the bridge . " * 4000, "only the first 20,000", True),
    "100k-one-word": ("x" * 100_000, "only the first 20,000", True),
    "control-characters": ("the \x00cat\x07 sees \x1b[31mthe\x1b[0m bridge\x7f .",
                           "control or invisible", True),
    "zero-width": ("the\u200bcat sees\u200d the\ufeff bridge .", "control or invisible", True),
    "only-invisible": ("\u200b\u200c\u2060\x07\ufeff", "no words", True),
    "bidi-override": ("the \u202ecat sees\u202c the bridge .", "control or invisible", True),
    "emoji": ("the cat 😀 sees 🐈‍⬛ the bridge 👍🏽 .", "outside the vocabulary", True),
    "rtl": ("مرحبا بالعالم שלום עולם", "outside the vocabulary", True),
    "mixed-scripts": ("the Кот sees 猫 and Ελλάδα near the bridge", "outside the vocabulary",
                      True),
    "combining-marks": ("t̷h̸e̵ c̶a̴t̷ s̸e̵e̶s̷", "outside the vocabulary", True),
    "script-tag": ("<script>alert(1)</script> the cat sees the bridge",
                   "outside the vocabulary", True),
    "img-onerror": ('<img src=x onerror="alert(1)"> the <b>cat</b> <iframe src="javascript:1">',
                    "outside the vocabulary", True),
    "markdown-injection": ("# Title\n**bold** [click](javascript:alert(1)) ![x](http://e/x.png) "
                           "`code` $x^2$ | a | b |\n---\n<unk> <eos>", "outside the vocabulary",
                           True),
    "newline-flood": ("\n" * 5000 + "the cat", "only the first", True),
    "punctuation-flood": ("." * 19_000, "only the first", True),
    "one-long-word": ("the " + "y" * 19_000 + " cat", "outside the vocabulary", True),
    "lone-surrogate": ("the \ud800 cat sees the bridge", "control or invisible", False),
}

TYPED = {"100k-characters", "script-tag", "markdown-injection", "control-characters"}
EVERY_PAGE = {"100k-one-word", "script-tag", "img-onerror", "markdown-injection"}

# name → (deep-link parameter, raw link value, value for the library or None, the library's
# notice words, whether the link is refused). None as notice words: a valid edge, no notice.
# The library clamps with a notice, except NaN, which ``Dial`` refuses (the words: its error).
NUMBERS = {
    "tau-near-zero": ("tau", "1e-12", 1e-12, "τ=1e-12 is outside", True),
    "tau-negative": ("tau", "-3", -3.0, "τ=-3.0 is outside", True),
    "tau-huge": ("tau", "1e300", 1e300, "is outside [0.05, 10.0]; using τ=10.0", True),
    "tau-inf": ("tau", "+inf", math.inf, "τ=inf is outside", True),
    "tau-nan": ("tau", "NaN", math.nan, "τ is NaN", True),
    "lam-negative": ("lam", "-0.5", -0.5, "λ=-0.5 is outside", True),
    "lam-above-one": ("lam", "1.0001", 1.0001, "λ=1.0001 is outside", True),
    "lam-minus-inf": ("lam", "-inf", -math.inf, "λ=-inf is outside", True),
    "lam-nan": ("lam", "-NaN", math.nan, "λ is NaN", True),
    "gamma-negative": ("gamma", "-0.001", -0.001, "γ=-0.001 is outside", True),
    "gamma-huge": ("gamma", "1e6", 1e6, "using γ=20.0", True),
    "gamma-nan": ("gamma", "nan", math.nan, "γ is NaN", True),
    "gamma-above-slider": ("gamma", "7", 7.0, None, True),
    "lam-overflow": ("lam", "1e999", None, None, True),
    "lam-hex": ("lam", "0x1p-2", None, None, True),
    "lam-empty": ("lam", "", None, None, True),
    "block-huge": ("block", "1e9", None, None, True),
    "block-nan": ("block", "nan", None, None, True),
    "block-fraction": ("block", "2.7", None, None, True),
    "layer-negative": ("layer", "-1", None, None, True),
    "head-fraction": ("head", "1.5", None, None, True),
    "ckpt-html": ("ckpt", '<img src=x onerror="alert(1)">', None, None, True),
    "prompt-markdown": ("prompt", "**bold** [x](javascript:alert(1))", None, None, True),
    "tau-edge-low": ("tau", "0.05", 0.05, None, False),
    "tau-edge-high": ("tau", "10", 10.0, None, False),
    "lam-edge-one": ("lam", "1", 1.0, None, False),
    "gamma-edge-slider": ("gamma", "5", 5.0, None, False),
}
LIB_KEYS = {"lam": "locality", "tau": "attn_temperature", "gamma": "rule_strength"}


# -- the tokenizer ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TEXTS))
def test_tokenizer_survives(tiny_corpus, name):
    tok, text = tiny_corpus.tokenizer, TEXTS[name][0]
    ids = tok.encode(text)
    assert all(0 <= i < len(tok) for i in ids)
    assert tok.encode(tok.decode(ids)) == ids                     # round trip
    words = [w for w in tok.tokenize(text) if w not in tok.index]
    if words:                                                     # unknown words stay visible
        assert UNK in tok.labels(ids)
    for word in tok.tokenize(text):
        assert not any(ord(c) < 32 and c not in "\n\t" for c in word)
        assert "\u200b" not in word and "\u202e" not in word


# -- the library: run_with_cache and the live analysis ----------------------------------------

@pytest.fixture(scope="module")
def model(tiny_model_cfg, tiny_corpus):
    return make_model(tiny_model_cfg, tiny_corpus, seed=0).eval()


def _assert_rows_are_distributions(patterns: np.ndarray, atol: float) -> None:
    p = np.asarray(patterns, dtype=np.float64)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=atol)
    assert np.triu(p, k=1).max(initial=0.0) == 0.0              # causal: no future weight


@pytest.mark.parametrize("name", list(TEXTS))
def test_analysis_of_hostile_text(model, tiny_corpus, name):
    text, notice, _ = TEXTS[name]
    a = analyze(model, tiny_corpus.tokenizer, text, Dial(0.5, 0.5, 1.0))
    assert any(notice in n for n in a.notices), a.notices
    assert len(a.labels) <= model.cfg.n_ctx
    if a.labels:
        _assert_rows_are_distributions(a.patterns, atol=5e-3)
        assert np.isfinite(a.entropy).all() and np.isfinite(a.hidden).all()
        _, probs = next_words(model, tiny_corpus.tokenizer, a, len(a.labels) - 1)
        assert np.isfinite(probs).all() and 0 < probs.sum() <= 1 + 1e-6
        assert all(math.isfinite(m["mean"]) for m in a.metrics.values())


@pytest.mark.parametrize("name", [n for n, c in NUMBERS.items() if c[2] is not None])
def test_a_dial_at_and_past_every_edge_runs(model, tokens, name):
    key, _, value, notice, _ = NUMBERS[name]
    if math.isnan(value):           # refused where it is made: no NaN ever reaches a model
        with pytest.raises(ValueError, match=notice):
            Dial(**{LIB_KEYS[key]: value})
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dial = Dial(**{LIB_KEYS[key]: value})
    caught = [w for w in caught if issubclass(w.category, DialNotice)]
    _, cache = model.run_with_cache(tokens, dial)
    for layer in range(model.cfg.n_layers):
        _assert_rows_are_distributions(cache[f"blocks.{layer}.attn.hook_pattern"].numpy(), 1e-5)
    if notice:                      # a clamp: in dial.notices and as a DialNotice warning
        assert any(notice in n for n in dial.notices), dial.notices
        assert any(notice in str(w.message) for w in caught)
    else:
        assert not dial.notices and not caught


@pytest.mark.parametrize("name", [n for n, c in NUMBERS.items()
                                  if c[2] is not None and not math.isnan(c[2])])
def test_analysis_turns_every_clamped_dial_value_into_a_notice(model, tiny_corpus, name):
    key, _, value, notice, _ = NUMBERS[name]
    defaults = {"locality": 0.3, "attn_temperature": 1.0, "rule_strength": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DialNotice)
        dial = Dial(**{**defaults, LIB_KEYS[key]: value})
    a = analyze(model, tiny_corpus.tokenizer, "the cat sees the bridge .", dial)
    if notice:
        assert any(notice in n for n in a.notices), a.notices
    else:
        assert not a.notices
    _assert_rows_are_distributions(a.patterns, atol=5e-3)
    assert all(math.isfinite(v) for v in a.dial.as_dict().values())


# -- the app ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app_env(tmp_path_factory, model, tiny_corpus):
    root = tmp_path_factory.mktemp("hostile-ckpts")
    for name in (CKPT, HOSTILE_NAME):
        save_checkpoint(root / name, model, tiny_corpus.tokenizer,
                        TrainConfig(protocol="dial", penalty_form="none"))
    old = os.environ.get("LOCALIST_CHECKPOINT_DIRS")
    os.environ["LOCALIST_CHECKPOINT_DIRS"] = str(root)
    st.cache_data.clear()
    yield root
    if old is None:
        os.environ.pop("LOCALIST_CHECKPOINT_DIRS")
    else:
        os.environ["LOCALIST_CHECKPOINT_DIRS"] = old
    st.cache_data.clear()


def _decode(z) -> np.ndarray:
    if isinstance(z, dict):        # plotly's typed array: base64 bytes, dtype and shape
        flat = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
        return flat.reshape([int(n) for n in str(z["shape"]).split(",")])
    return np.array(z, dtype=float)


def heatmap(at: AppTest) -> np.ndarray | None:
    """The Explorer heatmap's weights ([query, key], NaN for the masked future), or None."""
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if spec["data"] and spec["data"][0].get("type") == "heatmap":
            return _decode(spec["data"][0]["z"])
    return None


def assert_inert(at: AppTest) -> None:
    """No user HTML reaches the page: Markdown never allows HTML and holds no unescaped tag;
    chart text holds no active tag or javascript: link (viz.inert escapes them)."""
    kinds = ("markdown", "caption", "warning", "info", "error", "success", "header",
             "subheader", "title")
    assert not any(m.proto.allow_html for m in at.markdown)
    for text in [str(x.value) for kind in kinds for x in getattr(at, kind)]:
        assert not TAG.search(text), text[:300]
    for chart in at.get("plotly_chart"):
        assert not any(h in chart.proto.spec.lower() for h in CHART_HTML)


def assert_healthy(at: AppTest, notice: str | None) -> None:
    assert not at.exception, [e.value for e in at.exception]
    warned = [w.value.replace("\\", "") for w in at.warning]
    if notice:
        assert any(notice in w for w in warned), warned
    assert_inert(at)
    z = heatmap(at)
    if z is not None:
        n = z.shape[0]
        seen = z[np.tril_indices(n)]
        assert np.isfinite(seen).all() and ((seen >= 0) & (seen <= 1)).all()
        np.testing.assert_allclose(np.nansum(z, axis=1), 1.0, atol=5e-3)
        assert np.isnan(z[np.triu_indices(n, k=1)]).all()
        block_mass = next(float(m.value) for m in at.metric if m.label == "In-block mass")
        assert 0.0 <= block_mass <= 1.0


@pytest.mark.parametrize("name", [n for n, c in TEXTS.items() if c[2]])
def test_the_app_on_hostile_text(app_env, name):
    """Typed into the text box (TYPED), else arriving by link; the HTML and Markdown cases and a
    long one also visit Compare and Theory, which show the same text."""
    text, notice, _ = TEXTS[name]
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = CKPT
    if name in TYPED:
        at.run()
        at.sidebar.radio(key="text_mode").set_value("Your own text").run()
        at.sidebar.text_area(key="free_text").set_value(text).run()
    else:
        at.query_params["text"] = text
        at.run()
    assert_healthy(at, notice)
    assert (heatmap(at) is None) == (notice in ("empty", "no words"))
    if name in EVERY_PAGE:
        for page in ("app_pages/compare.py", "app_pages/theory.py"):
            at.switch_page(page).run()
            assert not at.exception, (page, [e.value for e in at.exception])
            assert_inert(at)


@pytest.mark.parametrize("name", list(NUMBERS))
def test_the_app_on_hostile_deep_links(app_env, name):
    key, raw, _, _, refused = NUMBERS[name]
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = CKPT
    at.query_params[key] = raw
    at.run()
    if refused:
        shown = raw if len(raw) < 40 else raw[:40] + "…"
        assert_healthy(at, f"Link parameter {key}={shown!r} is not valid")
    else:
        assert_healthy(at, None)
        assert not any("Link parameter" in w.value for w in at.warning)
    assert heatmap(at) is not None


def test_a_100k_character_deep_link_is_cut_with_a_notice(app_env):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = CKPT
    at.query_params["text"] = "the cat sees the bridge . " * 4000
    at.run()
    assert_healthy(at, f"only the first {MAX_TEXT_CHARS:,}")
    assert len(at.sidebar.text_area(key="free_text").value) <= MAX_TEXT_CHARS


@pytest.mark.parametrize("label,value", [("δ (margin)", -1e6), ("L_ℓ (Lipschitz)", 1e308)])
def test_the_theory_calculator_at_overflowing_inputs(app_env, label, value):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = CKPT
    at.switch_page("app_pages/theory.py").run()
    next(n for n in at.number_input if n.label == label).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("overflow" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_checkpoint_folder_named_like_html_renders_inert(app_env):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = HOSTILE_NAME
    at.run()
    assert at.sidebar.selectbox(key="ckpt").value == HOSTILE_NAME
    assert_healthy(at, None)
    at.switch_page("app_pages/compare.py").run()      # the folder name is in the heatmap titles
    assert not at.exception and at.get("plotly_chart")
    assert_inert(at)


def test_a_link_to_a_layer_the_model_lacks_says_so(app_env):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = CKPT
    at.query_params["layer"] = "10"          # the tiny model has 2 layers
    at.run()
    assert_healthy(at, "Link parameter layer=10 is not a layer of this model")
    assert at.selectbox(key="layer").value == "mean"


PAGES = [p.file for p in ui.PAGES]


def _visible_text(at: AppTest) -> list[str]:
    kinds = ("markdown", "caption", "warning", "info", "error", "success", "header",
             "subheader", "title", "exception", "code")
    out = [str(x.value) for kind in kinds for x in getattr(at, kind)]
    for widget in ("selectbox", "radio", "multiselect"):
        out += [str(o) for w in getattr(at, widget) for o in (w.options or [])]
        out += [str(w.label) for w in getattr(at, widget)]
    return out


def test_no_server_path_reaches_a_visitor(app_env, tmp_path, monkeypatch):
    """Broken checkpoint and cache files are named on every page, but by their last parts:
    neither the app's folder nor the temporary folder's path is shown."""
    import shutil

    ckpts = tmp_path / "operator-ckpts"
    shutil.copytree(app_env / CKPT, ckpts / "broken-ckpt")
    (ckpts / "broken-ckpt" / "config.json").write_text("{not json", encoding="utf-8")
    cache = tmp_path / "operator-cache"
    cache.mkdir()
    (cache / "bad-run.json").write_text("[[[", encoding="utf-8")
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", f"{app_env}{os.pathsep}{ckpts}")
    monkeypatch.setenv("LOCALIST_SWEEP_CACHE", str(cache))
    st.cache_data.clear()
    repo = str(ui.REPO)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = CKPT
    at.run()
    for page in PAGES:
        at.switch_page(page).run()
        text = _visible_text(at)
        assert not at.exception, (page, [e.value for e in at.exception])
        leaked = [t for t in text if str(tmp_path) in t or repo in t]
        assert not leaked, (page, leaked[:3])
    st.cache_data.clear()


@pytest.mark.parametrize("seed", range(5))
def test_shown_keeps_no_absolute_path(seed):
    """Any absolute path inside a message loses everything but its last two parts, or becomes
    relative to the app's folder; text that merely contains a slash is left alone."""
    import random
    import tempfile

    rng = random.Random(seed)
    parts = ["ckpt-1", "config.json", "x.y", "räume", "..", "~u", "a=b", "runs"]
    roots = [str(ui.REPO), tempfile.gettempdir(), "/usr", "/home"]
    for _ in range(200):
        names = [rng.choice(parts) for _ in range(rng.randint(2, 5))]
        root = rng.choice(roots)
        path = root + "/" + "/".join(names)
        lead, tail = rng.choice(["", "error: ", "(", "file "]), rng.choice([": bad", " λ/τ", ")"])
        out = ui.shown(lead + path + tail)
        assert root not in out and str(ui.REPO) not in out, out
        assert out.startswith(lead) and out.endswith(tail)
        assert "/".join(names[-2:]) in out
    # A visitor's own slashes are not server paths: a rule's /pattern/ stays as typed.
    for text in ("regex /a{9}/ is too large", "regex /[A-Z]/x/", "/nosuchdir/a/b"):
        assert ui.shown(text) == text
    assert ui.shown("λ/τ and 1/2") == "λ/τ and 1/2"
    assert ui.shown(f"{ui.REPO}/assets/checkpoints/dial/config.json: bad") == \
        "assets/checkpoints/dial/config.json: bad"


def test_streamlit_shows_visitors_no_error_details():
    import tomllib

    cfg = tomllib.loads((ui.REPO / ".streamlit" / "config.toml").read_text())
    assert cfg["client"]["showErrorDetails"] == "none"
