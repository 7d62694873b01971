"""README "Limits": one request reads at most MAX_TEXT_CHARS characters and MAX_TOKENS tokens,
a cached analysis has a bounded size, and every Streamlit cache has a bounded number of entries."""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

import ui
from localist_core.analysis.inspection import (
    MAX_TEXT_CHARS,
    MAX_TOKENS,
    analysis_bytes_bound,
    analyze,
    prepare_text,
)
from localist_core.experiments.train import make_model
from localist_core.model.config import ModelConfig, preset
from localist_core.model.dial import Dial

ROOT = Path(__file__).resolve().parents[1]
LONG = "the cat sees the bridge . " * 4000          # 104,000 characters, ~24,000 tokens


@pytest.fixture(scope="module")
def model(tiny_model_cfg, tiny_corpus):
    return make_model(tiny_model_cfg, tiny_corpus, seed=0).eval()


@pytest.mark.parametrize("n_ctx", [32, 128, 10_000])
def test_a_request_never_reads_more_than_the_caps(tiny_corpus, n_ctx):
    ids, notices = prepare_text(tiny_corpus.tokenizer, LONG, n_ctx)
    assert len(ids) == min(n_ctx, MAX_TOKENS)
    assert any(f"only the first {MAX_TEXT_CHARS:,}" in n for n in notices)
    assert any(f"only the first {len(ids)} are shown" in n for n in notices)


def test_a_cached_analysis_stays_within_its_bound(model, tiny_corpus):
    a = analyze(model, tiny_corpus.tokenizer, LONG, Dial(0.5, 0.5, 1.0))
    cfg = model.cfg
    assert len(a.labels) == cfg.n_ctx and a.patterns.dtype == np.float16
    assert a.nbytes() <= analysis_bytes_bound(cfg)
    with_rule = analyze(model, tiny_corpus.tokenizer, LONG, Dial(0.5, 0.5, 1.0),
                        rule=("words", "the", "regex", "[a-z]+", 2.0))
    assert with_rule.rule_pairs is not None and with_rule.rule_pairs.shape == (cfg.n_ctx,) * 2
    assert with_rule.nbytes() <= analysis_bytes_bound(cfg)
    # the shipped models (cpu-ref: 2 layers, 4 heads, 128 tokens): 0.42 MiB an entry
    shipped = ModelConfig(vocab_size=33_278, **preset("cpu-ref").model)
    assert analysis_bytes_bound(shipped) * ui.ANALYSES_KEPT < 100 * 2**20


CACHES = ("cache_data", "cache_resource")


def _caches(path: Path):
    """Every Streamlit cache made in ``path``: a bare ``@st.cache_data`` decorator (never
    bounded) and every call ``st.cache_…(…)``, as a decorator or assigned
    (``shared = st.cache_resource(max_entries=…)``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                if isinstance(d, ast.Attribute) and d.attr in CACHES:
                    yield f"{node.name} (line {d.lineno})", d
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in CACHES):
            yield f"line {node.lineno}", node


def test_every_streamlit_cache_is_bounded():
    page_dirs = sorted({(ROOT / p.file).parent for p in ui.PAGES})
    files = [*sorted((ROOT / "ui").glob("*.py")), ROOT / "app.py",
             *(f for d in page_dirs for f in sorted(d.glob("*.py")))]
    assert any(d.name != "ui" and list(d.glob("*.py")) for d in page_dirs)
    found = 0
    for path in files:
        for name, node in _caches(path):
            found += 1
            keywords = {k.arg for k in node.keywords} if isinstance(node, ast.Call) else set()
            assert "max_entries" in keywords, f"{path.name}:{name} has no max_entries"
    assert found >= 12


def test_the_readme_states_the_limits():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    limits = re.search(r"^## Limits\n(.*?)(?=^## )", readme, flags=re.S | re.M).group(1)
    for number in (f"{MAX_TEXT_CHARS:,}", str(MAX_TOKENS), str(ui.ANALYSES_KEPT)):
        assert number in limits, number
