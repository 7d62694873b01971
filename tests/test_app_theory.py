"""AppTest of the Theory page: its formulas reach the browser as math that Streamlit's own KaTeX
renders, a failed assumption is said in words instead of a number, λ = 1 is called exactly local,
and a cached λ-sweep is drawn against the formula's prediction."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import streamlit
import streamlit as st
from streamlit.testing.v1 import AppTest
from sweep_examples import make_run

from ui import views

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "app_pages/theory.py"
THRESHOLD = "Threshold λ from the formula"
# Text Streamlit renders as Markdown, where raw LaTeX would show as source (or a red error).
PROSE = ("markdown", "caption", "warning", "info", "success", "error")
LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")


@pytest.fixture()
def env(monkeypatch, tmp_path, tiny_dial_root):
    """The app on a tiny checkpoint and a sweep cache holding one synthetic dial run."""
    cache = tmp_path / "sweep"
    cache.mkdir()
    (cache / "dial.json").write_text(json.dumps(make_run("dial", lambdas=(0.0, 0.5, 0.8, 1.0),
                                                         taus=(0.5, 1.0))))
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(tiny_dial_root))
    monkeypatch.setenv("LOCALIST_SWEEP_CACHE", str(cache))
    st.cache_data.clear()
    return cache


def visit(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = "tiny-dial"
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def prose(at: AppTest) -> list[str]:
    return [str(x.value) for kind in PROSE for x in getattr(at, kind)]


def katex_errors(bodies: list[str]) -> list[str | None]:
    """Each body rendered by the KaTeX that Streamlit ships (display mode, errors raised): None
    where it renders, else KaTeX's message. Skips where node or that file is missing."""
    found = sorted((Path(streamlit.__file__).parent / "static").rglob("katex.*.js"))
    node = shutil.which("node")
    if not found or node is None:
        pytest.skip("needs node and Streamlit's bundled KaTeX")
    script = ("import fs from 'node:fs';"
              "const katex = (await import(process.argv[1])).default;"
              "const out = JSON.parse(fs.readFileSync(0, 'utf8')).map(b => {"
              " try { katex.renderToString(b, {displayMode: true, throwOnError: true});"
              " return null; } catch (e) { return String(e.message); } });"
              "console.log(JSON.stringify(out));")
    done = subprocess.run([node, "--input-type=module", "-e", script, found[0].as_uri()],
                          input=json.dumps(bodies), capture_output=True, text=True, timeout=60,
                          check=True)
    return json.loads(done.stdout)


def test_the_katex_check_can_fail():
    ok, nested, unclosed = katex_errors([r"\frac{a}{b}", r"\text{n_{in}}", r"\frac{a}{"])
    assert ok is None and "KaTeX parse error" in nested and "KaTeX parse error" in unclosed


def test_the_formulas_are_rendered_math_that_katex_accepts(env):
    at = visit()
    assert [e.type for e in at.latex] == ["latex"] * 3
    bodies = [e.value for e in at.latex]
    for body in bodies:          # st.latex's fences, one math block each, nothing after them
        assert body.startswith("$$\n") and body.endswith("\n$$") and body.count("$$") == 2
    inner = [b[3:-3] for b in bodies]
    assert inner == [views.THRESHOLD_LATEX, views.BOUND_LATEX, views.DIAL_LATEX]
    assert katex_errors(inner) == [None] * 3
    for text in prose(at):       # no LaTeX source reaches a Markdown element
        assert "$" not in text and not LATEX_COMMAND.search(text), text[:200]


def test_each_input_is_explained_beside_its_value(env):
    at = visit()
    labels = [n.label for n in at.number_input]
    assert labels == ["L_ℓ (Lipschitz)", "R_x", "σ_X", "|X_i|", "ρ_max", "δ (margin)", "τ"]
    shown = prose(at)
    for line in views.INPUT_MEANINGS.values():
        assert line in shown


def _set(at: AppTest, label: str, value: float) -> AppTest:
    next(n for n in at.number_input if n.label == label).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("label,value,words", [
    ("δ (margin)", -2.0, "not above 0"),
    ("δ (margin)", 0.0, "not above 0"),
    ("L_ℓ (Lipschitz)", 1e12, "above a million"),
])
def test_a_failed_assumption_is_said_in_words_not_a_number(env, label, value, words):
    at = visit()
    for name, start in (("L_ℓ (Lipschitz)", 1.0), ("R_x", 1.0), ("σ_X", 1.0),
                        ("δ (margin)", 2.0)):
        _set(at, name, start)
    assert [m.label for m in at.metric] == [THRESHOLD]         # sane inputs: a number,
    assert any(c.value.startswith("By the formula, a locality above") for c in at.caption)
    _set(at, label, value)                                     # then words in its place
    warned = " ".join(w.value for w in at.warning)
    assert words in warned and THRESHOLD not in [m.label for m in at.metric]
    assert not re.search(r"\d\.\d+e\+\d+", warned)               # no 1.8e+17 in the words


def test_at_lambda_one_the_page_says_exactly_local(env):
    at = visit({"lam": "1"})
    assert views.EXACTLY_LOCAL in [s.value for s in at.success]
    assert THRESHOLD not in [m.label for m in at.metric]
    assert next(n for n in at.number_input if n.label == "δ (margin)").disabled


def test_the_sweep_is_drawn_against_the_formula(env):
    at = visit()
    assert at.selectbox(key="th_run").value == "dial"
    names = [{t.get("name") for t in json.loads(c.proto.spec)["data"]}
             for c in at.get("plotly_chart")]
    assert any({"measured, τ = 0.5", "formula, τ = 0.5", "measured, τ = 1",
                "formula, τ = 1"} <= n for n in names), names
    assert any(c.value.startswith("They agree at λ_f = 0, τ = 1") for c in at.caption)


def test_without_a_usable_sweep_the_page_says_so(env):
    (env / "dial.json").unlink()
    at = visit()
    assert any("nothing to set the formula against" in i.value for i in at.info)
    assert len(at.number_input) == 7                                    # the calculator stays
