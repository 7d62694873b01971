"""Figure builders: the masked future stays grey (NaN, never 0), block lines and anchors sit
where the partition puts them, user text is inert, and hover carries the exact weights."""
import json

import numpy as np
import pytest

from ui.figures import attention_heatmap, entropy_strip, top_tokens_bar


def _causal(n, seed=0):
    rng = np.random.default_rng(seed)
    p = np.tril(rng.random((n, n)) + 0.01)
    return p / p.sum(-1, keepdims=True)


@pytest.fixture
def view():
    n = 12
    labels = ["the", "cat", "<script>alert(1)</script>", "the", "<unk>", "b&c"] * 2
    block_ids = np.arange(n) // 5
    anchors = np.zeros((n, n), bool)
    anchors[np.arange(n), (np.arange(n) // 5) * 5] = True
    return _causal(n), labels, block_ids, anchors


@pytest.mark.parametrize("log_scale", [False, True])
def test_future_is_nan_and_hover_holds_exact_weights(view, log_scale):
    p, labels, ids, anchors = view
    fig = attention_heatmap(p, labels, ids, anchors, log_scale=log_scale)
    hm = fig.data[0]
    z, custom = np.asarray(hm.z, float), np.asarray(hm.customdata, float)
    future = np.triu(np.ones_like(p, bool), 1)
    assert np.isnan(z[future]).all() and np.isnan(custom[future]).all()
    assert np.isfinite(z[~future]).all()
    np.testing.assert_allclose(custom[~future], p[~future], rtol=1e-6)


def test_one_vertical_and_one_horizontal_line_per_block_boundary(view):
    p, labels, ids, anchors = view
    shapes = attention_heatmap(p, labels, ids, anchors).layout.shapes
    starts = [i - 0.5 for i in range(1, len(ids)) if ids[i] != ids[i - 1]]
    assert sorted(s.x0 for s in shapes if s.x0 == s.x1) == starts
    assert sorted(s.y0 for s in shapes if s.y0 == s.y1) == starts


def test_axis_names_are_unique_and_inert(view):
    p, labels, ids, anchors = view
    fig = attention_heatmap(p, labels, ids, anchors)
    names = list(fig.data[0].x)
    assert len(set(names)) == len(labels)                 # repeated words stay apart
    text = fig.to_json()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&lt;unk&gt;" in text and "b&amp;c" in text


def test_anchor_markers_sit_on_the_anchor_cells(view):
    p, labels, ids, anchors = view
    fig = attention_heatmap(p, labels, ids, anchors)
    names = list(fig.data[0].x)
    marks = {(names.index(y), names.index(x)) for x, y in zip(fig.data[1].x, fig.data[1].y)}
    assert marks == set(zip(*np.nonzero(anchors)))


def test_figures_serialise_to_strict_json(view):
    p, labels, ids, anchors = view
    for fig in (attention_heatmap(p, labels, ids, anchors, log_scale=True),
                attention_heatmap(p - p.T, labels, ids, diverging=True),
                entropy_strip(np.linspace(0, 3, len(labels)), labels),
                top_tokens_bar(labels[:5], np.full(5, 0.2))):
        text = fig.to_json()
        json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_recruitment_chart_marks_exactly_the_recruited_starts():
    from ui.figures import recruitment_chart
    labels = ["<b>x</b>", "b", "c", "d", "e", "f"]
    block_ids = np.array([0, 0, 1, 1, 1, 2])
    gain = np.array([0.0, -1.0, 0.5, -2.0, -0.1, 1.5])
    fig = recruitment_chart(labels, gain, block_ids, title="<script>t</script>")
    bar = fig.data[0]
    assert len(bar.y) == 6 and list(bar.y) == list(gain.astype(np.float32))
    solid = [i for i, c in enumerate(bar.marker.color) if c == "#1f77b4"]
    assert solid == [2, 5]                                   # the recruited block starts
    lines = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert sorted(s.x0 for s in lines) == [1.5, 4.5]
    assert "<b>" not in "".join(bar.x) and "<script>" not in fig.layout.title.text
