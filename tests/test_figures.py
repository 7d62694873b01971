"""Figure builders: the masked future stays grey (NaN, never 0), block lines and anchors sit
where the partition puts them, user text is inert, and hover carries the exact weights."""
import json

import numpy as np
import pytest

from localist_core.experiments import results as tr
from ui.figures import attention_heatmap, entropy_strip, points_figure, top_tokens_bar


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


def _results_examples():
    """tests/test_results.py's synthetic sweep results."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "results_examples", Path(__file__).resolve().parent / "test_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figure_draws_papers_leaks_and_reference_lines():
    runs = _results_examples().synthetic_runs()
    pts = tr.curve_points(runs) + tr.leak_points(runs)
    fig = points_figure(pts, "locality", "entropy_bits", "λ", "bits", papers=tr.paper_points(),
                        hlines=tr.entropy_references(pts), controls=True)
    names = [t.name for t in fig.data]
    assert sum(n.startswith(tr.PAPERS) for n in names) == 4            # 2 points, 2 lines
    assert any(n.startswith("causal ceiling") for n in names)
    leak = [t for t in fig.data if t.name.startswith(tr.LEAK)]
    assert leak and leak[0].marker.symbol == "triangle-up"
    assert any("recent-b control" in n for n in names) and "uniform-attention control" in names
    fig = points_figure([{**pts[0], "series": "<b>x</b>", "label": "<i>"}], "locality",
                        "entropy_bits", "λ", "bits")
    assert fig.data[0].name == "&lt;b&gt;x&lt;/b&gt;"                  # file text stays inert


def test_points_with_missing_values_draw_no_marker():
    pts = [{"series": "s", "label": "λ=0", "perplexity": 100.0, "entropy_bits": None,
            "leak": None}]
    fig = points_figure(pts, "perplexity", "entropy_bits", "x", "y")
    assert all(len(t.x) == 0 for t in fig.data) or not fig.data


def test_theory_figure_draws_measured_and_bound_on_a_log_tau_axis():
    from ui.figures import theory_figure
    rows = [{"attn_temperature": t, "measured_cross_mass": m, "bound_cross_mass": b}
            for t, m, b in ((0.1, 0.01, 0.05), (1.0, 0.2, 0.4), (10.0, 0.6, 0.9))]
    fig = theory_figure(rows)
    measured, bound = fig.data
    assert list(measured.x) == [0.1, 1.0, 10.0] and list(bound.y) == [0.05, 0.4, 0.9]
    assert bound.line.dash == "dash" and fig.layout.xaxis.type == "log"
    assert list(fig.layout.yaxis.range) == [0, 1]


def test_error_bars_only_where_points_average_several_seeds():
    ex = _results_examples()
    base = ex.make_run("attention", 0.5)
    runs = [ex.seeded(base, s, p, e) for s, p, e in ((1, 100.0, 1.0), (2, 102.0, 2.0),
                                                     (3, 107.0, 4.0))]
    pts = [p for p in tr.curve_points(runs) if "as trained" in p["series"]]
    fig = points_figure(pts, "locality", "entropy_bits", "λ", "bits")
    trace = fig.data[0]
    assert trace.error_y.visible and list(trace.error_y.array) == [
        pytest.approx(pts[0]["entropy_bits_sd"])]
    assert trace.error_x.array is None                 # x (λ) carries no sd
    # Single seed: the same figure, no error bars at all.
    single = [p for p in tr.curve_points([base]) if "as trained" in p["series"]]
    fig1 = points_figure(single, "locality", "entropy_bits", "λ", "bits")
    assert all(t.error_y.array is None and t.error_x.array is None for t in fig1.data)
    json.loads(fig.to_json())


def test_the_shipped_cache_draws_no_error_bars():
    from pathlib import Path

    from localist_core.experiments.cache import load_cache
    from ui.figures import panel_figure
    runs, _ = load_cache(Path(__file__).resolve().parents[1] / "assets" / "sweep")
    fig = panel_figure(tr.curve_points(runs), "locality", "λ", [
        {"y": "perplexity", "title": "ppl", "log_y": True}, {"y": "entropy_bits", "title": "H"}])
    assert fig.data and all(t.error_y.array is None for t in fig.data)
