"""One error path: every cached loader is reached through the one guard (``ui.notices.guarded``),
so a checkpoint refused at load gives the same notice on every page, never a traceback, and a
refusal is remembered until the folder's files change. The broken checkpoints are
test_unsafe_files.py's."""
import ast
import os
from pathlib import Path

import pytest
import streamlit as st
from safetensors.torch import load_file, save_file
from streamlit.testing.v1 import AppTest
from test_unsafe_files import ckpt_root, good_model  # noqa: F401 (fixtures)

import ui
from localist_core.model.checkpoint import WEIGHTS, CheckpointError
from ui import loaders

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


@pytest.fixture()
def broken_dirs(ckpt_root, monkeypatch):  # noqa: F811 (the fixture imported above)
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(ckpt_root))
    st.cache_data.clear()
    loaders._model.clear()
    yield ckpt_root
    st.cache_data.clear()
    loaders._model.clear()


def _cold(page: str, **params) -> AppTest:
    """A session opened by a link to ``page`` (the first run is on the page)."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update(params)
    return at.switch_page(page).run()


def test_a_nan_weight_checkpoint_gives_the_same_notice_on_every_page(broken_dirs):
    notices = {}
    for page in ui.PAGES:
        at = _cold(page.file, ckpt="nan-weights")
        assert not at.exception, (page.file, [e.value for e in at.exception])
        # the page itself still renders (the Explorer's picture is its heading: none here)
        assert at.header or page.file.endswith("explorer.py"), page.file
        assert at.sidebar.selectbox(key="ckpt").value == "nan-weights"
        notices[page.title] = [e.value.replace("\\", "") for e in at.error]
    first = notices[ui.PAGES[0].title]
    assert len(first) == 1, first
    assert f"nan-weights/{WEIGHTS}: tensor blocks.0.mlp.fc.weight holds NaN" in first[0]
    assert str(broken_dirs) not in first[0]                # no server path
    assert all(n == first for n in notices.values()), notices


def test_the_good_checkpoint_beside_it_still_works_on_every_page(broken_dirs):
    for page in ui.PAGES:
        at = _cold(page.file, ckpt="tiny-good")
        assert not at.exception and not at.error, (page.file, [e.value for e in at.error])


def test_a_refusal_is_remembered_until_the_files_change(broken_dirs, monkeypatch):
    reads = []

    def counting(path):
        reads.append(Path(path).name)
        return real(path)

    real = loaders.load_model
    monkeypatch.setattr(loaders, "load_model", counting)
    nan = str(broken_dirs / "nan-weights")
    for _ in range(3):
        with pytest.raises(CheckpointError, match="holds NaN"):
            loaders.load_checkpoint(nan)
    assert reads == ["nan-weights"]
    good = loaders.load_checkpoint(str(broken_dirs / "tiny-good"))
    assert loaders.load_checkpoint(str(broken_dirs / "tiny-good")) is good
    assert reads == ["nan-weights", "tiny-good"]
    tensors = load_file(os.path.join(nan, WEIGHTS))       # the operator repairs the file
    tensors["blocks.0.mlp.fc.weight"][0, 0] = 0.0
    save_file(tensors, os.path.join(nan, WEIGHTS))
    try:
        assert loaders.load_checkpoint(nan)[0] is not None
        assert reads == ["nan-weights", "tiny-good", "nan-weights"]
    finally:
        tensors["blocks.0.mlp.fc.weight"][0, 0] = float("nan")
        save_file(tensors, os.path.join(nan, WEIGHTS))


# -- structure: no page reaches a cached loader except through the guard -------------------------
# A cached function that loads nothing and so cannot fail: the sweep processes' registry.
REGISTRIES = {"launched_sweeps"}


def _decorators(fn: ast.FunctionDef) -> str:
    return " ".join(ast.unparse(d) for d in fn.decorator_list)


def _called(fn: ast.FunctionDef) -> set[str]:
    return {c.func.id if isinstance(c.func, ast.Name) else c.func.attr
            for c in ast.walk(fn) if isinstance(c, ast.Call)
            and isinstance(c.func, (ast.Name, ast.Attribute))}


def unguarded_loaders() -> set[str]:
    """Every function in ui/ that can raise out of a cached loader: the cached functions
    themselves, and any unguarded function that calls one of them."""
    fns = {fn.name: fn for path in sorted((ROOT / "ui").glob("*.py"))
           for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
           if isinstance(fn, ast.FunctionDef)}
    risky = {n for n, fn in fns.items() if n not in REGISTRIES and (
        "cache_data" in _decorators(fn) or "cache_resource" in _decorators(fn))}
    while True:
        more = {n for n, fn in fns.items() if n not in risky
                and "guarded" not in _decorators(fn) and _called(fn) & risky}
        if not more:
            return risky
        risky |= more


def test_the_pages_reach_cached_loaders_only_through_the_guard():
    risky = unguarded_loaders()
    assert {"cached_analysis", "cached_theory", "load_checkpoint"} <= risky
    assert not {"get_analysis", "get_theory", "n_layers", "sidebar", "page_setup"} & risky
    for page in sorted((ROOT / "pages").glob("*.py")):
        used = {n.attr for n in ast.walk(ast.parse(page.read_text(encoding="utf-8")))
                if isinstance(n, ast.Attribute)}
        assert not used & risky, (page.name, used & risky)
