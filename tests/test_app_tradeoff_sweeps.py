"""AppTest of the Tradeoff and Sweeps pages on a synthetic sweep cache and on a missing, empty or
corrupt one: no exception, the papers' points labelled, leaks flagged, clear notices."""
import importlib.util
import json
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from localist_core import save_checkpoint
from localist_core.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
_spec = importlib.util.spec_from_file_location("tradeoff_examples", ROOT / "tests/test_tradeoff.py")
examples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(examples)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, trained_tiny, tiny_corpus):
    root = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(root / "tiny-dial", trained_tiny, tiny_corpus.tokenizer,
                    TrainConfig(protocol="dial", penalty_form="none"))
    return root


@pytest.fixture()
def env(monkeypatch, tmp_path, checkpoints):
    """The app pointed at a tiny checkpoint, a sweep cache and a user sweeps folder in tmp."""
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(checkpoints))
    monkeypatch.setenv("LOCALIST_SWEEP_CACHE", str(tmp_path / "shipped"))
    monkeypatch.setenv("LOCALIST_APP_SWEEPS", str(tmp_path / "mine"))
    st.cache_data.clear()
    return tmp_path


def write_cache(folder: Path, runs: list[dict], extra: dict[str, str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        (folder / f"{run['run_id']}.json").write_text(json.dumps(run))
    for name, text in (extra or {}).items():
        (folder / name).write_text(text)


def visit(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [x.value for kind in ("info", "warning", "error", "success", "caption", "markdown")
             for x in getattr(at, kind)]
    return "\n".join(map(str, parts)) + "\n".join(e.label for e in at.expander)


def test_tradeoff_page_plots_the_synthetic_sweep(env):
    write_cache(env / "shipped", examples.synthetic_runs(),
                {"baselines.json": json.dumps({"schema_version": 1, "valid": {
                    "unigram_perplexity": 900.0, "bigram_kn_perplexity": 300.0}})})
    at = visit("pages/tradeoff.py")
    assert not at.warning and not at.error and not at.info
    charts = at.get("plotly_chart")
    assert len(charts) == 7
    blob = json.dumps([json.loads(c.proto.spec) for c in charts], ensure_ascii=False)
    assert "papers' report: 5.36 bits at λ=1.0" in blob and "causal ceiling" in blob
    assert "LEAK · attention-l0.6-noncausal_diagnostictrue" in blob
    assert "unigram baseline" in blob
    assert any("non-causal diagnostic" in e.label for e in at.expander)
    at.selectbox(key="tau_run").set_value("attention-l0.5").run()
    assert not at.exception
    at.selectbox(key="tradeoff_metric").set_value("in_block_mass").run()
    assert not at.exception


@pytest.mark.parametrize("setup,notice", [
    ("missing", "There is no sweep cache"),
    ("empty", "holds no finished runs"),
    ("corrupt", "holds no finished runs"),
])
def test_tradeoff_page_without_usable_results_explains_why(env, setup, notice):
    if setup != "missing":
        write_cache(env / "shipped", [], {"progress.json": "{}"} if setup == "empty" else
                    {"broken.json": "{not json", "old.json": json.dumps(
                        {"schema_version": 99, "run_id": "x", "config": {}, "metrics": {}})})
    at = visit("pages/tradeoff.py")
    assert notice in texts(at) and not at.get("plotly_chart")
    if setup == "corrupt":
        warned = " ".join(w.value for w in at.warning)
        assert "corrupt JSON" in warned and "schema\\_version 99" in warned


def test_sweeps_page_lists_runs_and_flags_leaks(env):
    write_cache(env / "shipped", examples.synthetic_runs(), {"bad.json": "[]"})
    at = visit("pages/sweeps.py")
    (table,) = at.dataframe
    assert len(table.value) == len(examples.synthetic_runs())
    assert {"leak test", "in-block", "recent-b", "shifted", "uniform", "git commit"} <= set(
        table.value.columns)
    warned = " ".join(w.value for w in at.warning)
    assert "noncausal" in warned and "not a sweep result" in warned
    assert "No sweep has run" in texts(at)


@pytest.mark.parametrize("setup", ["missing", "corrupt"])
def test_sweeps_page_without_a_cache_gives_notices(env, setup):
    if setup == "corrupt":
        write_cache(env / "shipped", [], {"x.json": "\x00\x01garbage",
                                          "progress.json": "{broken"})
    at = visit("pages/sweeps.py")
    assert ("There is no sweep cache" if setup == "missing" else "holds no finished runs") \
        in texts(at)
    at.radio(key="sweeps_browse").set_value(at.radio(key="sweeps_browse").options[1]).run()
    assert not at.exception and "There is no sweep cache" in texts(at)


def _form(at: AppTest, **values) -> AppTest:
    for label, v in values.items():
        next(w for w in at.text_input if w.label == label).set_value(v)
    next(b for b in at.button if b.label == "Start sweep").click()
    return at.run()


def test_sweep_form_refuses_bad_input_and_the_shipped_folder(env):
    at = visit("pages/sweeps.py")
    _form(at, **{"λ values": "0, 2", "Overrides (key=value …)": "nonsense=1"})
    errors = " ".join(e.value for e in at.error)
    assert "outside \\[0, 1\\]" in errors and "unknown key" in errors
    _form(at, **{"λ values": "0", "Overrides (key=value …)": "",
                 "Cache folder": str(env / "shipped")})
    assert "holds the shipped results" in " ".join(e.value for e in at.error)
    assert not at.success and not (env / "shipped").exists()


def test_a_second_sweep_into_a_busy_folder_is_refused(env, tiny_data_dir):
    mine = env / "mine"
    mine.mkdir(parents=True)
    busy = examples.spawn(examples.SLEEPER)   # a live process that looks like a sweep
    try:
        (mine / "progress.json").write_text(json.dumps({
            "pid": busy.pid, "updated": time.time(), "runs_total": 3, "runs_done": 1,
            "current": "attention-l0.5", "phase": "train"}))
        at = visit("pages/sweeps.py")
        assert any("Run 2 of 3: attention-l0.5 (train)" in p.proto.text.replace("\\", "")
                   for p in at.get("progress"))
        _form(at, **{"λ values": "0", "Data folder": str(tiny_data_dir)})
        assert f"pid {busy.pid}" in " ".join(e.value for e in at.error) and not at.success
    finally:
        busy.kill()
        busy.wait()
    at = visit("pages/sweeps.py")
    assert "Stopped after 1 of 3 runs" in " ".join(w.value for w in at.warning).replace("\\", "")
