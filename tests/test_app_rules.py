"""AppTest of the Rules page on the shipped dial model the app opens with: the page's own example
rule raises fidelity to its targets at the default dial and on every sample text, and when the
cross-block barrier outweighs a rule the page says so with the barrier, the strength and the
pairs on each side of a block boundary."""
import math
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui
from localist_core.analysis.rules import RuleReach
from localist_core.model.checkpoint import read_config
from ui import views

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SHIPPED_DIAL = Path(APP).parent / "assets" / "checkpoints" / "dial"
FIDELITY = "Fidelity to the rule's targets"
# A change the tile's three decimals show plainly; the old example (pronouns → capitalised
# words) moved it by 0.001 at λ = 0 and 0.000 at λ = 0.6.
VISIBLE = 0.01
# Behind the barrier at λ = 0.6 the rule acts only on the pairs inside a block: a smaller rise,
# still plain at three decimals (0.005 on the shipped dial's smallest, the "storm" text).
VISIBLE_BEHIND_BARRIER = 0.003
# The note's counts: "28 of the rule's 36 pairs …", "It acts on the 8 pairs …".
ACROSS = re.compile(r"(\d+) of the rule's (\d+) pairs have their target in another block")
INSIDE = re.compile(r"It acts on the (\d+) pairs")

shipped = pytest.mark.skipif(not (SHIPPED_DIAL / "config.json").is_file(),
                             reason="no shipped dial model")


@pytest.fixture()
def shipped_only(monkeypatch):
    """The app as a visitor opens it: the shipped checkpoints only."""
    monkeypatch.delenv("LOCALIST_CHECKPOINT_DIRS", raising=False)


def _rules_page(lam: float | None = None, prompt: str | None = None, **widgets) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page("app_pages/rules.py").run()
    assert not at.exception, [e.value for e in at.exception]
    if lam is not None:
        at.sidebar.slider(key="lam").set_value(lam)
    if prompt is not None:
        at.sidebar.selectbox(key="prompt").set_value(prompt)
    for key, value in widgets.items():
        at.text_input(key=key).input(value) if key in ("rule_src", "rule_tgt") else \
            at.radio(key=key).set_value(value)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _fidelity_delta(at) -> float:
    tile = next(m for m in at.metric if m.label == FIDELITY)
    return float(tile.delta.split()[0])             # "+0.032 vs no rule"


def _notes(at) -> list[str]:
    return [i.value for i in at.info]


@shipped
def test_the_example_rule_raises_fidelity_at_the_default_setting(shipped_only):
    at = _rules_page()
    assert at.sidebar.selectbox(key="ckpt").value == "dial"
    assert at.sidebar.slider(key="lam").value == pytest.approx(ui.DEFAULTS["lam"])
    assert at.sidebar.slider(key="tau").value == pytest.approx(ui.DEFAULTS["tau"])
    assert _fidelity_delta(at) >= VISIBLE


@shipped
def test_the_example_rule_raises_fidelity_on_every_sample_text_at_lambda_0_6(shipped_only):
    """λ = 0.6 puts a barrier of 64·log 0.4 = −58.6 on every cross-block score: the example
    still shows, through the targets that share their query's block."""
    prompts = _rules_page().sidebar.selectbox(key="prompt").options
    assert len(prompts) > 1
    for prompt in prompts:
        at = _rules_page(lam=0.6, prompt=prompt)
        assert _fidelity_delta(at) >= VISIBLE_BEHIND_BARRIER, prompt


@shipped
def test_when_the_barrier_outweighs_the_rule_the_page_says_so_with_numbers(shipped_only):
    lam = 0.6
    beta = read_config(SHIPPED_DIAL)["model"]["barrier_sharpness"]
    barrier = beta * math.log(1 - lam)
    at = _rules_page(lam=lam)
    pairs = next(int(m.value.replace(",", "")) for m in at.metric
                 if m.label == "Rule pairs in the text")
    (note,) = _notes(at)
    assert "barrier outweighs the rule" in note
    assert f"{barrier:.1f}" in note and f"+{at.slider(key='rule_strength').value:g}" in note
    across, total = map(int, ACROSS.search(note).groups())
    (inside,) = map(int, INSIDE.search(note).groups())
    assert total == pairs == inside + across and inside > 0 and across > 0
    # The split caption names the same counts.
    assert any(f"{inside} have their target in the query's own block and {across} in "
               "another block" in c.value for c in at.caption)


@shipped
def test_the_old_example_says_why_it_cannot_show(shipped_only):
    """Pronouns → capitalised words: on the first sample both targets lie in earlier blocks,
    so at λ = 0.6 the page says the rule has nothing inside a block to act on."""
    at = _rules_page(lam=0.6, rule_src_kind="words", rule_src="it, he, she, they",
                     rule_tgt_kind="regex", rule_tgt="[A-Z][a-z]+")
    (note,) = _notes(at)
    across, total = map(int, ACROSS.search(note).groups())
    assert across == total > 0
    assert "No pair has its target in the query's block" in note


@shipped
def test_no_barrier_note_without_a_barrier(shipped_only):
    at = _rules_page(lam=0.0)
    assert not _notes(at)
    assert any("have their target in the query's own block" in c.value for c in at.caption)


def _reach(**kw) -> RuleReach:
    base = dict(strength=3.0, locality=0.6, sharpness=64.0, barrier=64 * math.log(0.4),
                in_block_pairs=8, cross_block_pairs=28, in_block_mass=0.18,
                cross_block_mass=0.03)
    return RuleReach(**{**base, **kw})


def test_the_barrier_note_names_the_barrier_the_strength_and_the_pairs():
    note = views.barrier_note(_reach())
    assert "64·log(0.4) = -58.6" in note and "+3 (net -55.6)" in note
    assert ACROSS.search(note).groups() == ("28", "36")
    assert INSIDE.search(note).groups() == ("8",)
    masked = views.barrier_note(_reach(locality=1.0, barrier=-math.inf))
    assert "masked" in masked and ACROSS.search(masked).groups() == ("28", "36")
    assert views.barrier_note(_reach(locality=0.03, barrier=64 * math.log(0.97))) is None
    assert views.barrier_note(_reach(cross_block_pairs=0)) is None
    assert views.barrier_note(None) is None


# -- the block recruitment trace --------------------------------------------------------------

def _trace_spec(at) -> dict:
    import json
    return json.loads(next(c for c in at.get("plotly_chart") if c.key == "recruit").proto.spec)


@shipped
def test_the_trace_reads_the_words_by_default_and_the_length_threshold_on_demand(shipped_only):
    """The shipped model carries no table of its own; the shipped WikiText-2 table fits its
    vocabulary, so the page draws the bigram test with each term, states every term in its
    caption and lists each boundary's terms; the length-threshold test is one click away."""
    at = _rules_page()
    assert at.radio(key="trace_kind").value == "bigram"
    assert at.subheader[-1].value == "Block recruitment trace"
    caption = " ".join(c.value for c in at.caption)
    for term in ("L_continue", "L_new", "P_KN", "P_uni", "Kneser–Ney", "PMI", "C (here 3.75",
                 "+∞", "Table: the shipped WikiText-2 table"):
        assert term in caption, term
    bars = _trace_spec(at)["data"][0]
    assert all("L_continue" in h for h in bars["customdata"][1:])    # each term in the hover
    table = at.dataframe[-1].value
    assert {"after", "PMI (bits)", "L_continue", "L_new", "why"} <= set(table.columns)
    assert len(table) > 0
    at.radio(key="trace_kind").set_value("recruited").run()
    assert not at.exception, [e.value for e in at.exception]
    caption = " ".join(c.value for c in at.caption)
    assert "Zipf prior" in caption and "never reads the words" in caption
    assert "L_continue" not in "".join(_trace_spec(at)["data"][0]["customdata"])
