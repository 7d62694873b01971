"""Unsafe and broken files (README "Security"): each broken checkpoint or sweep-cache file is
refused with a message naming the file and the problem, nothing in it is executed, and the app keeps
serving the good checkpoints and runs beside it. Every file is checked once, cheaply, before it is
trusted: sizes with stat() before reading, JSON depth and types before use, and a folder is checked
again only when its files change."""
import json
import math
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import sweep_examples
from safetensors.torch import load_file, save_file
from streamlit.testing.v1 import AppTest

import ui
from localist_core import save_checkpoint
from localist_core.analysis.inspection import MAX_TOKENS
from localist_core.experiments import cache as cache_module
from localist_core.experiments import results as tr
from localist_core.experiments.cache import (
    MAX_RESULT_BYTES,
    MAX_SMALL_JSON_BYTES,
    SweepCacheError,
    cached_run_pattern,
    load_cache,
)
from localist_core.experiments.train import make_model
from localist_core.model.checkpoint import (
    CONFIG,
    MAX_CONFIG_BYTES,
    MAX_VOCAB_BYTES,
    VOCAB,
    WEIGHTS,
    CheckpointError,
    check_checkpoint,
    load_model,
)
from localist_core.model.config import TrainConfig
from localist_core.model.files import MAX_HEADER_BYTES
from ui import catalogue
from ui.catalogue import describe_checkpoint, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = [p.file for p in ui.PAGES]
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


def _edit_vocab(change):
    def breaker(folder: Path) -> None:
        vocab = json.loads((folder / VOCAB).read_text())
        change(vocab)
        (folder / VOCAB).write_text(json.dumps(vocab))
    return breaker


def _sparse(fname: str, size: int):
    """A file of ``size`` zero bytes that costs nothing to write (a hole): only a reader that
    opened it would pay for its size."""
    def breaker(folder: Path) -> None:
        (folder / fname).unlink()
        with open(folder / fname, "wb") as f:
            f.truncate(size)
    return breaker


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _deep_config(folder: Path) -> None:
    # 20,000 levels in 40 KB (under the size cap): json raises RecursionError, not ValueError.
    (folder / CONFIG).write_text('{"format": "localist-checkpoint", "format_version": 1, '
                                 f'"model": {_deep(20_000)}}}')


def _huge_header(folder: Path) -> None:
    """A safetensors file whose header claims MAX_HEADER_BYTES + 1 bytes (a hole behind it)."""
    (folder / WEIGHTS).unlink()
    with open(folder / WEIGHTS, "wb") as f:
        f.write((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{")
        f.truncate(8 + MAX_HEADER_BYTES + 64)


def _edit_header(change):
    """Rewrite the weights' header (the tensor bytes stay where they are)."""
    def breaker(folder: Path) -> None:
        raw = (folder / WEIGHTS).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        change(header)
        blob = json.dumps(header).encode()
        (folder / WEIGHTS).write_bytes(len(blob).to_bytes(8, "little") + blob + raw[8 + n:])
    return breaker


def _fifo_config(folder: Path) -> None:
    (folder / CONFIG).unlink()
    os.mkfifo(folder / CONFIG)   # reading it would block the listing forever


def _first_tensor(header: dict) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


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
    # Values of the wrong type or size: each used to crash the listing (every page) or cost
    # seconds and gigabytes every 30 s.
    "penalty-locality-null": (_edit_config(lambda c: c["train"].update(
        protocol="penalty", penalty_form="attention", locality=None)), CONFIG, "locality"),
    "train-a-list": (_edit_config(lambda c: c.update(train=[1, 2])), CONFIG,
                     "'train' must be an object"),
    "train-a-string": (_edit_config(lambda c: c.update(train="penalty")), CONFIG,
                       "'train' must be an object"),
    "model-a-list": (_edit_config(lambda c: c.update(model=[])), CONFIG,
                     "'model' must be an object"),
    "cutoffs-not-numbers": (_edit_config(lambda c: c["model"].update(cutoffs=["x", "y"])), CONFIG,
                            "cutoffs"),
    "d-model-a-string": (_edit_config(lambda c: c["model"].update(d_model="big")), CONFIG,
                         "d_model"),
    "dropout-null": (_edit_config(lambda c: c["model"].update(dropout=None)), CONFIG, "dropout"),
    "zero-heads": (_edit_config(lambda c: c["model"].update(n_heads=0)), CONFIG, "n_heads"),
    "layers-true": (_edit_config(lambda c: c["model"].update(n_layers=True)), CONFIG, "n_layers"),
    "twenty-thousand-layers": (_edit_config(lambda c: c["model"].update(n_layers=20_000)), CONFIG,
                               "n_layers"),
    "ten-million-words": (_edit_config(lambda c: c["model"].update(vocab_size=10_000_000)), CONFIG,
                          "vocab_size"),
    "config-deeply-nested": (_deep_config, CONFIG, "nested"),
    "config-over-the-cap": (_sparse(CONFIG, MAX_CONFIG_BYTES + 1), CONFIG, "limit"),
    "config-a-fifo": (_fifo_config, CONFIG, "not a regular file"),
    "vocab-over-the-cap": (_sparse(VOCAB, MAX_VOCAB_BYTES + 1), VOCAB, "limit"),
    "vocab-word-not-a-string": (_edit_vocab(lambda v: v["words"].__setitem__(5, [1])), VOCAB,
                                "string"),
    "vocab-nested-100-deep": (_edit_vocab(lambda v: v.update(words=json.loads(_deep(100)))),
                              VOCAB, "nested"),
    "header-over-the-cap": (_huge_header, WEIGHTS, "limit"),
    "header-offsets-not-numbers": (_edit_header(lambda h: _first_tensor(h).update(
        data_offsets=["a", 5])), WEIGHTS, "data_offsets"),
    "header-shape-a-string": (_edit_header(lambda h: _first_tensor(h).update(shape="big")),
                              WEIGHTS, "shape"),
    **{f"header-{name}": (_edit_header(lambda h, c=change: h["blocks.0.ln1.weight"].update(c)),
                          WEIGHTS, words)
       for name, change, words in [
           ("unknown-dtype", {"dtype": "F128"}, "unknown dtype"),
           ("negative-shape", {"shape": [-1, 4]}, "malformed shape"),
           ("bytes-do-not-fit-shape", {"shape": [2, 2]}, "need 16 bytes"),
           ("one-offset", {"data_offsets": [0]}, "malformed data_offsets"),
           ("offsets-backwards", {"data_offsets": [8, 4]}, "malformed data_offsets")]},
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
    # NaN weights show only when every weight is read. The listing reads headers, so its cost
    # does not grow with the models; the load reads them all and refuses it, with one notice
    # on every page (test_app_errors.py).
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
    # The app shows a path's last two parts (ui.shown), the library the whole path.
    assert any(f"{name}: " in c and f"{name}/{fname}" in c and words in c for c in shown), shown
    assert not (ckpt_root / MARKER).exists()


def test_a_checkpoint_that_fails_at_load_gives_an_error_and_the_others_still_work(broken_app,
                                                                                  ckpt_root):
    at = broken_app
    at.sidebar.selectbox(key="ckpt").set_value("nan-weights").run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert f"nan-weights/{WEIGHTS}" in errors.replace("\\", "") and "NaN" in errors
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

EXAMPLES = sweep_examples


def _bad_run(change) -> str:
    run = EXAMPLES.make_run("attention", 0.5, run_id="malformed")
    change(run)
    return json.dumps(run)


def _sparse_file(size: int):
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(size)
    return write


def _first_eval(run: dict) -> dict:
    return run["metrics"]["valid"][0]


GOOD_RUN = {"schema_version": 1, "run_id": "attention-l0.0", "protocol": "attention",
            "config": {}, "metrics": {"valid": []}}
# file name → (its text, or a function that writes it; words of the problem)
BAD_CACHE_FILES = {
    "corrupt.json": ('{"schema_version": 1, "run_', "corrupt JSON"),
    "future.json": (json.dumps({**GOOD_RUN, "run_id": "future", "schema_version": 2}),
                    "schema_version 2 is not supported"),
    "nokeys.json": (json.dumps({"schema_version": 1, "run_id": "x"}), "missing key 'config'"),
    "baselines.json": ("[1, 2", "corrupt JSON"),
    # Each of these crashed Tradeoff, Sweeps or Compare, or cost minutes and gigabytes.
    "deep.json": ('{"schema_version": 1, "run_id": "deep", "config": {}, "metrics": '
                  f'{_deep(20_000)}}}', "nested"),
    "deep-100.json": (_bad_run(lambda r: r.update(extra=json.loads(_deep(100)))), "nested"),
    "huge.json": (_sparse_file(MAX_RESULT_BYTES + 1), "limit"),
    "metrics-a-list.json": (_bad_run(lambda r: r.update(metrics=[])), "metrics must be an object"),
    "metrics-a-string.json": (_bad_run(lambda r: r.update(metrics="x")),
                              "metrics must be an object"),
    "valid-not-a-list.json": (_bad_run(lambda r: r["metrics"].update(valid={})),
                              "metrics.valid must be a list"),
    "eval-without-dial.json": (_bad_run(lambda r: _first_eval(r).pop("dial")),
                               "dial must be an object"),
    "dial-a-list.json": (_bad_run(lambda r: _first_eval(r).update(dial=[0, 1])),
                         "dial must be an object"),
    "locality-text.json": (_bad_run(lambda r: _first_eval(r)["dial"].update(locality="high")),
                           "locality must be a finite number"),
    "config-a-list.json": (_bad_run(lambda r: r.update(config=[])), "config must be an object"),
    "training-a-list.json": (_bad_run(lambda r: r.update(training=[])),
                             "training must be an object"),
    "leak-test-a-string.json": (_bad_run(lambda r: r.update(leak_test="passed")),
                                "leak_test must be an object"),
    "wall-time-a-list.json": (_bad_run(lambda r: r.update(wall_time_s=[1])),
                              "wall_time_s must be an object"),
    "run-id-a-path.json": (_bad_run(lambda r: r.update(run_id="../../outside")), "run_id"),
}


def _write(path: Path, content) -> None:
    if callable(content):
        content(path)
    else:
        path.write_text(content)


def _bad_cache(folder: Path, runs: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        (folder / f"{run['run_id']}.json").write_text(json.dumps(run))
    for name, (content, _) in BAD_CACHE_FILES.items():
        _write(folder / name, content)
    return folder


def test_a_pickle_renamed_maps_file_is_refused_unread(tmp_path):
    (tmp_path / "run.maps.safetensors").write_bytes(pickle.dumps(_Payload(tmp_path / MARKER)))
    with pytest.raises(SweepCacheError, match=r"run\.maps\.safetensors: this is a pickle"):
        cached_run_pattern(tmp_path, "run", "castle", 0.0, 1.0)
    assert not (tmp_path / MARKER).exists()
    assert cached_run_pattern(tmp_path, "absent", "castle", 0.0, 1.0) is None


def test_bad_cache_files_are_named_and_the_good_runs_kept(tmp_path):
    _bad_cache(tmp_path, [GOOD_RUN])
    runs, problems = load_cache(tmp_path)
    assert [r["run_id"] for r in runs] == ["attention-l0.0"]
    for name, (_, words) in BAD_CACHE_FILES.items():
        assert any(str(tmp_path / name) in p and words in p for p in problems), (name, problems)
    assert not any("could not be checked" in p for p in problems), problems


def test_baselines_of_the_wrong_shape_or_size_are_refused(tmp_path):
    base = {"schema_version": 1, "valid": {"unigram_perplexity": 900.0}}
    for content, words in ((json.dumps({**base, "valid": [1]}), "valid must be an object"),
                           (json.dumps({**base, "valid": {"unigram_perplexity": "x"}}),
                            "finite number"),
                           (_sparse_file(MAX_SMALL_JSON_BYTES + 1), "limit")):
        _write(tmp_path / "baselines.json", content)
        assert tr.read_baselines(tmp_path) is None
        (problem,) = load_cache(tmp_path)[1]
        assert "baselines.json" in problem and words in problem, problem
    (tmp_path / "baselines.json").write_text(json.dumps(base))
    assert tr.read_baselines(tmp_path) == base and load_cache(tmp_path) == ([], [])


def _app_beside_bad_files(tmp_path, monkeypatch, ckpt_root) -> AppTest:
    """The app with the good and every broken checkpoint, and a sweep cache holding the
    synthetic runs beside every bad cache file."""
    cache = _bad_cache(tmp_path / "cache", EXAMPLES.synthetic_runs())
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(ckpt_root))
    monkeypatch.setenv("LOCALIST_SWEEP_CACHE", str(cache))
    monkeypatch.setenv("LOCALIST_APP_SWEEPS", str(tmp_path / "mine"))
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["ckpt"] = "tiny-good"
    return at


@pytest.mark.parametrize("page", ["app_pages/tradeoff.py", "app_pages/sweeps.py"])
def test_the_pages_name_bad_cache_files_and_show_the_good_runs(tmp_path, monkeypatch, ckpt_root,
                                                               page):
    at = _app_beside_bad_files(tmp_path, monkeypatch, ckpt_root)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    warned = [w.value.replace("\\", "") for w in at.warning]
    for name, (_, words) in BAD_CACHE_FILES.items():
        assert any(f"cache/{name}: " in w and words in w for w in warned), (name, warned)
    if page.endswith("tradeoff.py"):
        assert len(at.get("plotly_chart")) == 7
    else:
        assert len(at.dataframe[0].value) == len(EXAMPLES.synthetic_runs())
    st.cache_data.clear()


def test_every_page_works_beside_every_bad_checkpoint_and_cache_file(tmp_path, monkeypatch,
                                                                      ckpt_root):
    """All seven pages, with every broken checkpoint and every bad cache file present: no
    exception anywhere, each bad checkpoint named on every page, each bad cache file named on
    the pages that read the cache."""
    at = _app_beside_bad_files(tmp_path, monkeypatch, ckpt_root)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page.endswith("compare.py"):   # the stored runs are one choice away
            at.radio(key="cmp_source").set_value("A stored sweep run").run()
            assert not at.exception, (page, [e.value for e in at.exception])
        notes = [x.value.replace("\\", "") for kind in ("caption", "warning")
                 for x in getattr(at, kind)]
        for name, (_, fname, words) in BROKEN.items():
            assert any(f"{name}/{fname}" in n and words in n for n in notes), (page, name)
        if page.endswith(("tradeoff.py", "sweeps.py", "compare.py")):
            for name, (_, words) in BAD_CACHE_FILES.items():
                assert any(f"cache/{name}: " in n and words in n for n in notes), (page, name)
    assert not (ckpt_root / MARKER).exists()
    st.cache_data.clear()


# -- properties: no JSON value anywhere crashes a reader -----------------------------------------

_SCALARS = [None, True, False, 0, -1, 1, 7, 2**70, 10**400, 0.5, -0.0, 1e308, math.nan, math.inf,
            -math.inf, "", "x", "fixed", "dial", "penalty", "<eos>", "a" * 3000]
DEEP = "__deep__"   # replaced by 5,000 nested brackets in the JSON text


def _random_json(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth < 3 and r < 0.15:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and r < 0.3:
        keys = ["model", "train", "valid", "dial", "locality", "mean", "x"]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if r < 0.33:
        return DEEP
    return rng.choice(_SCALARS)


def _paths(value, prefix=()):
    """Every (container, key) path inside a JSON value."""
    out, items = [], ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for k, v in items:
        out.append(prefix + (k,))
        out += _paths(v, prefix + (k,))
    return out


def _mutated(base: dict, rng: random.Random) -> str:
    """``base`` with one random value replaced, deleted or added, as JSON text."""
    data = json.loads(json.dumps(base))
    path = rng.choice(_paths(data))
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    op = rng.random()
    if op < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif op < 0.25 and isinstance(parent, dict):
        parent[rng.choice(["extra", "dial", "valid", "train"])] = _random_json(rng)
    else:
        parent[path[-1]] = _random_json(rng)
    return json.dumps(data).replace(f'"{DEEP}"', _deep(5000))


def test_no_json_in_config_json_makes_describe_checkpoint_raise(ckpt_root, tmp_path):
    folder = tmp_path / "mutant"
    folder.mkdir()
    for name in (VOCAB, WEIGHTS):
        shutil.copy(ckpt_root / "tiny-good" / name, folder / name)
    base = json.loads((ckpt_root / "tiny-good" / CONFIG).read_text())
    rng, outcomes = random.Random(20261129), {"offered": 0, "refused": 0}
    for _ in range(300):
        (folder / CONFIG).write_text(_mutated(base, rng))
        catalogue._describe.cache_clear()   # the same size and mtime tick would be memoised
        info = describe_checkpoint(folder)
        assert isinstance(info.label, str) and info.protocol in ("dial", "penalty", "unknown")
        if info.problem:
            assert str(folder) in info.problem and "could not be checked" not in info.problem
            outcomes["refused"] += 1
        else:
            assert info.locality is None or 0.0 <= info.locality <= 1.0
            outcomes["offered"] += 1
    assert min(outcomes.values()) > 10, outcomes   # both outcomes were exercised


def _what_the_pages_read(runs: list[dict]) -> None:
    """Everything Tradeoff, Sweeps and Compare compute from the loaded runs."""
    tr.runs_table(runs)
    tr.curve_points(runs)
    tr.leak_points(runs)
    tr.strategy_points(runs)
    for run in runs:
        tr.tau_family(runs, str(run.get("run_id")))
        tr.position_rows(run)
        for lf, tau in tr.dial_settings(run):
            tr.make_point(run, lf, lf, tau)
            assert f"λ_f={lf:g}, τ={tau:g}"   # Compare's label of a stored setting


def test_no_json_in_a_result_file_makes_load_cache_or_the_tradeoff_readers_raise(tmp_path):
    base = json.loads((ROOT / "assets/sweep/attention-l0.6.json").read_text())
    good = EXAMPLES.make_run("dial")
    (tmp_path / "dial.json").write_text(json.dumps(good))
    rng, loaded = random.Random(1129), 0
    for _ in range(300):
        (tmp_path / "mutant.json").write_text(_mutated(base, rng))
        runs, problems = load_cache(tmp_path)
        assert good in runs
        assert not any("could not be checked" in p for p in problems), problems
        if len(runs) == 2:
            loaded += 1
        else:
            assert len(problems) == 1 and str(tmp_path / "mutant.json") in problems[0]
        _what_the_pages_read(runs)
    assert 10 < loaded < 290, loaded   # both outcomes were exercised


# -- cheap and bounded ---------------------------------------------------------------------------

def test_an_unchanged_checkpoint_folder_is_not_read_again(ckpt_root, monkeypatch):
    checked = []
    real = catalogue.check_checkpoint

    def counting(path):
        checked.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(catalogue, "check_checkpoint", counting)
    catalogue._describe.cache_clear()
    first = list_checkpoints(str(ckpt_root))
    assert {"tiny-good", *BROKEN} <= set(checked)
    n = len(checked)
    assert list_checkpoints(str(ckpt_root)) == first and len(checked) == n
    good = ckpt_root / "tiny-good" / CONFIG
    os.utime(good, ns=(good.stat().st_atime_ns, good.stat().st_mtime_ns + 10**9))
    assert list_checkpoints(str(ckpt_root)) == first and checked[n:] == ["tiny-good"]


def test_a_listing_looks_at_a_bounded_number_of_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(catalogue, "MAX_CHECKPOINTS_PER_ROOT", 5)
    monkeypatch.setattr(catalogue, "MAX_ROOT_ENTRIES", 40)
    for i in range(8):
        (tmp_path / f"ckpt{i}").mkdir()
        (tmp_path / f"ckpt{i}" / CONFIG).write_text("{}")
    infos = [c for c in list_checkpoints(str(tmp_path)) if str(tmp_path) in c.path]
    assert sorted(c.key for c in infos if c.key.startswith("ckpt")) == [f"ckpt{i}" for i in
                                                                           range(5)]
    (note,) = [c for c in infos if c.key == str(tmp_path)]
    assert "only the first 5" in note.problem
    for i in range(50):                      # more entries than a listing reads
        (tmp_path / f"file{i}").touch()
    infos = [c for c in list_checkpoints(str(tmp_path)) if str(tmp_path) in c.path]
    assert len(infos) <= 5 + 1 and any(c.key == str(tmp_path) for c in infos)


def test_a_hostile_config_is_refused_before_anything_is_built_or_read(ckpt_root, tmp_path,
                                                                      monkeypatch):
    from localist_core.model import checkpoint

    def forbidden(*args, **kwargs):
        raise AssertionError("built or read something")

    for name, change in (("layers", {"n_layers": 20_000}), ("words", {"vocab_size": 10**7}),
                         ("wide", {"d_model": 8192 * 2, "n_heads": 2})):
        folder = shutil.copytree(ckpt_root / "tiny-good", tmp_path / name)
        _edit_config(lambda c, change=change: c["model"].update(change))(folder)
        with monkeypatch.context() as m:
            m.setattr(checkpoint, "LocalistLM", forbidden)
            m.setattr(checkpoint, "_tokenizer", forbidden)
            with pytest.raises(CheckpointError, match="MODEL_SIZE_LIMITS") as err:
                check_checkpoint(folder)
        assert str(folder / CONFIG) in str(err.value)


def test_stored_maps_are_read_one_bounded_tensor_at_a_time(tmp_path, monkeypatch):
    import torch

    maps = tmp_path / "run.maps.safetensors"
    save_file({"castle|0|1": torch.rand(2, 2, 8, 8).half(),
               "castle|1|1": torch.rand(1, 1, MAX_TOKENS + 1, MAX_TOKENS + 1).half(),
               "castle|0.5|1": torch.rand(2, 8, 8).half()}, str(maps))
    got = cached_run_pattern(tmp_path, "run", "castle", 0.0, 1.0)
    assert got.shape == (2, 2, 8, 8) and got.dtype == np.float32
    assert cached_run_pattern(tmp_path, "run", "castle", 1.0, 1.0) is None   # T > MAX_TOKENS
    assert cached_run_pattern(tmp_path, "run", "castle", 0.2, 1.0) is None   # not stored
    with pytest.raises(SweepCacheError, match="not a float \\[layer, head, T, T\\]"):
        cached_run_pattern(tmp_path, "run", "castle", 0.5, 1.0)
    with pytest.raises(SweepCacheError, match="not a plain name"):
        cached_run_pattern(tmp_path, "../run", "castle", 0.0, 1.0)
    monkeypatch.setattr(cache_module, "MAX_MAP_BYTES", 100)
    with pytest.raises(SweepCacheError, match=re.escape("safetensors: 'castle|0|1' holds 512")):
        cached_run_pattern(tmp_path, "run", "castle", 0.0, 1.0)


@pytest.mark.parametrize("content", ['{"prompts": [{"name": "castle"}]}',
                                     '{"prompts": [{"name": "a", "text": "b"}]}' + " " * 2**17])
def test_a_bad_or_oversized_sample_texts_file_gives_the_fallback_and_a_notice(
        tmp_path, monkeypatch, content):
    """The app reads the sample texts through ``files.read_prompts`` as the CLI does: an entry
    without a text or a file over its limit is a notice and the fallback text, never a
    KeyError or an unbounded read."""
    from ui import loaders, notices
    told = []
    monkeypatch.setattr(notices, "refuse", lambda e, what, detail=None: told.append((e, what)))
    path = tmp_path / "prompts.json"
    path.write_text(content)
    assert loaders.sample_prompts(str(path)) == loaders.FALLBACK_PROMPTS
    assert len(told) == 1 and told[0][1] == "read the sample texts"
    assert "prompts.json" in str(told[0][0])
