"""DESIGN §9, unsafe and broken files: each broken checkpoint or sweep-cache file is refused with a
message naming the file and the problem, nothing in it is executed, and the app keeps serving the
good checkpoints and runs beside it."""
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import streamlit as st
from safetensors.torch import load_file, save_file
from streamlit.testing.v1 import AppTest

from localist_core import save_checkpoint
from localist_core.checkpoint import (CONFIG, VOCAB, WEIGHTS, CheckpointError, check_checkpoint,
                                      load_model)
from localist_core.config import TrainConfig
from localist_core.live import cached_run_pattern, list_checkpoints
from localist_core.sweep import SweepCacheError, load_cache
from localist_core.train import make_model

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
MARKER = "PWNED"   # a pickle payload below would create this file if it were ever unpickled


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _edit_config(change):
    def breaker(folder: Path) -> None:
        cfg = json.loads((folder / CONFIG).read_text())
        change(cfg)
        (folder / CONFIG).write_text(json.dumps(cfg))
    return breaker


def _truncate(folder: Path) -> None:
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])


def _pickle_weights(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes(pickle.dumps(_Payload(folder.parent / MARKER)))


def _extra_word(folder: Path) -> None:
    words = json.loads((folder / VOCAB).read_text())["words"]
    (folder / VOCAB).write_text(json.dumps({"words": words + ["surplus"]}))


# name → (how to break a good checkpoint folder, the file named, words of the problem)
BROKEN = {
    "pickle-as-safetensors": (_pickle_weights, WEIGHTS, "pickle"),
    "truncated-weights": (_truncate, WEIGHTS, "truncated"),
    "foreign-weights": (lambda f: (f / WEIGHTS).write_bytes(b"GIF89a" + bytes(300)), WEIGHTS,
                        "not a safetensors file"),
    "missing-weights": (lambda f: (f / WEIGHTS).unlink(), WEIGHTS, "missing"),
    "config-missing-key": (_edit_config(lambda c: c["model"].pop("vocab_size")), CONFIG,
                           "missing keys ['vocab_size']"),
    "config-extra-key": (_edit_config(lambda c: c["model"].update(surprise=1)), CONFIG,
                         "unknown keys ['surprise']"),
    "config-future-format": (_edit_config(lambda c: c.update(format_version=99)), CONFIG,
                             "format_version 99"),
    "config-corrupt": (lambda f: (f / CONFIG).write_text('{"format": "localist-'), CONFIG,
                       "not valid JSON"),
    "vocab-does-not-match": (_extra_word, VOCAB, "words, but the config says vocab_size"),
    "weights-do-not-match-config": (_edit_config(lambda c: c["model"].update(d_ff=48)), WEIGHTS,
                                    "does not match"),
}


@pytest.fixture(scope="module")
def good_model(tiny_model_cfg, tiny_corpus):
    return make_model(tiny_model_cfg, tiny_corpus, seed=0).eval()


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory, good_model, tiny_corpus):
    """One good tiny checkpoint, every broken variant of it, and one with NaN weights."""
    root = tmp_path_factory.mktemp("unsafe") / "checkpoints"
    good = save_checkpoint(root / "tiny-good", good_model, tiny_corpus.tokenizer,
                           TrainConfig(protocol="dial", penalty_form="none"))
    for name, (breaker, _, _) in BROKEN.items():
        shutil.copytree(good, root / name)
        breaker(root / name)
    nan = shutil.copytree(good, root / "nan-weights")
    tensors = load_file(str(nan / WEIGHTS))
    tensors["blocks.0.mlp.fc.weight"][0, 0] = float("nan")
    save_file(tensors, str(nan / WEIGHTS))
    return root


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_library_refuses_a_broken_checkpoint_naming_file_and_problem(ckpt_root, name):
    _, fname, words = BROKEN[name]
    folder = ckpt_root / name
    for check in (check_checkpoint, load_model):
        with pytest.raises(CheckpointError) as err:
            check(folder)
        assert str(folder / fname) in str(err.value) and words in str(err.value)
    assert not (ckpt_root / MARKER).exists()


def test_weights_holding_nan_are_refused_at_load(ckpt_root):
    check_checkpoint(ckpt_root / "nan-weights")   # the header is fine; the values are not
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor blocks\.0\.mlp\.fc"
                                              r"\.weight holds NaN"):
        load_model(ckpt_root / "nan-weights")


def test_the_listing_offers_the_good_checkpoints_and_says_why_not_the_others(ckpt_root):
    infos = {c.key: c for c in list_checkpoints(str(ckpt_root))}
    assert infos["tiny-good"].problem is None and infos["nan-weights"].problem is None
    for name, (_, fname, words) in BROKEN.items():
        assert fname in infos[name].problem and words in infos[name].problem, name
    for shipped in ("dial", "attention-l0.0"):
        if (ROOT / "assets/checkpoints" / shipped).is_dir():
            assert infos[shipped].problem is None


def _texts(at: AppTest) -> str:
    parts = [x.value for kind in ("info", "warning", "error", "caption", "markdown")
             for x in getattr(at, kind)]
    return "\n".join(map(str, parts)).replace("\\", "")   # undo ui.plain's escapes


@pytest.fixture(scope="module")
def broken_app(ckpt_root):
    """The Explorer with every broken checkpoint beside the good one (run once, checked per case).
    """
    old = os.environ.get("LOCALIST_CHECKPOINT_DIRS")
    os.environ["LOCALIST_CHECKPOINT_DIRS"] = str(ckpt_root)
    st.cache_data.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=180)
        at.query_params["ckpt"] = "tiny-good"
        yield at.run()
    finally:
        if old is None:
            os.environ.pop("LOCALIST_CHECKPOINT_DIRS")
        else:
            os.environ["LOCALIST_CHECKPOINT_DIRS"] = old
        st.cache_data.clear()


def test_the_app_keeps_serving_the_good_checkpoint(broken_app):
    assert not broken_app.exception, [e.value for e in broken_app.exception]
    options = [o.split(":")[0] for o in broken_app.sidebar.selectbox(key="ckpt").options]
    assert "tiny-good" in options and not set(BROKEN) & set(options)
    assert broken_app.sidebar.selectbox(key="ckpt").value == "tiny-good"
    assert any(m.label == "In-block mass" for m in broken_app.metric)


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_app_names_each_broken_checkpoint_and_its_problem(broken_app, ckpt_root, name):
    _, fname, words = BROKEN[name]
    shown = [c.value.replace("\\", "") for c in broken_app.caption
             if c.value.startswith("Not offered")]
    assert any(f"{name}: {ckpt_root / name / fname}" in c and words in c for c in shown), shown
    assert not (ckpt_root / MARKER).exists()


def test_a_checkpoint_that_fails_at_load_gives_an_error_and_the_others_still_work(broken_app,
                                                                                  ckpt_root):
    at = broken_app
    at.sidebar.selectbox(key="ckpt").set_value("nan-weights").run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert str(ckpt_root / "nan-weights" / WEIGHTS) in errors and "NaN" in errors
    at.sidebar.selectbox(key="ckpt").set_value("tiny-good").run()
    assert not at.exception and not at.error
    assert any(m.label == "In-block mass" for m in at.metric)


def test_a_deep_link_to_a_broken_checkpoint_falls_back_with_a_notice(ckpt_root, monkeypatch):
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(ckpt_root))
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["ckpt"] = "pickle-as-safetensors"
    at.run()
    assert not at.exception
    assert any("ckpt='pickle-as-safetensors'" in w.value.replace("\\", "") for w in at.warning)
    assert at.sidebar.selectbox(key="ckpt").value != "pickle-as-safetensors"
    assert not (ckpt_root / MARKER).exists()


# -- sweep caches ------------------------------------------------------------------------------

GOOD_RUN = {"schema_version": 1, "run_id": "attention-l0.0", "protocol": "attention",
            "config": {}, "metrics": {"valid": []}}
BAD_CACHE_FILES = {
    "corrupt.json": ('{"schema_version": 1, "run_', "corrupt JSON"),
    "future.json": (json.dumps({**GOOD_RUN, "run_id": "future", "schema_version": 2}),
                    "schema_version 2 is not supported"),
    "nokeys.json": (json.dumps({"schema_version": 1, "run_id": "x"}), "missing key 'config'"),
    "baselines.json": ("[1, 2", "corrupt JSON"),
}


def test_a_pickle_renamed_maps_file_is_refused_unread(tmp_path):
    (tmp_path / "run.maps.safetensors").write_bytes(pickle.dumps(_Payload(tmp_path / MARKER)))
    with pytest.raises(SweepCacheError, match=r"run\.maps\.safetensors: this is a pickle"):
        cached_run_pattern(tmp_path, "run", "castle", 0.0, 1.0)
    assert not (tmp_path / MARKER).exists()
    assert cached_run_pattern(tmp_path, "absent", "castle", 0.0, 1.0) is None


def test_bad_cache_files_are_named_and_the_good_runs_kept(tmp_path):
    (tmp_path / "attention-l0.0.json").write_text(json.dumps(GOOD_RUN))
    for name, (text, _) in BAD_CACHE_FILES.items():
        (tmp_path / name).write_text(text)
    runs, problems = load_cache(tmp_path)
    assert [r["run_id"] for r in runs] == ["attention-l0.0"]
    for name, (_, words) in BAD_CACHE_FILES.items():
        assert any(str(tmp_path / name) in p and words in p for p in problems), (name, problems)


@pytest.mark.parametrize("page", ["pages/tradeoff.py", "pages/sweeps.py"])
def test_the_pages_name_bad_cache_files_and_show_the_good_runs(tmp_path, monkeypatch, ckpt_root,
                                                               page):
    import importlib.util
    spec = importlib.util.spec_from_file_location("tradeoff_examples",
                                                  ROOT / "tests/test_tradeoff.py")
    examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(examples)
    cache = tmp_path / "cache"
    cache.mkdir()
    for run in examples.synthetic_runs():
        (cache / f"{run['run_id']}.json").write_text(json.dumps(run))
    for name, (text, _) in BAD_CACHE_FILES.items():
        (cache / name).write_text(text)
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(ckpt_root))
    monkeypatch.setenv("LOCALIST_SWEEP_CACHE", str(cache))
    monkeypatch.setenv("LOCALIST_APP_SWEEPS", str(tmp_path / "mine"))
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    warned = " ".join(w.value for w in at.warning).replace("\\", "")
    for name, (_, words) in BAD_CACHE_FILES.items():
        assert f"{cache / name}: {words}" in warned, name
    if page.endswith("tradeoff.py"):
        assert len(at.get("plotly_chart")) == 7
    else:
        assert len(at.dataframe[0].value) == len(examples.synthetic_runs())
    st.cache_data.clear()
