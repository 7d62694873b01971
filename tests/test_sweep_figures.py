"""The Tradeoff page's figures: papers' points, leaks and reference lines named, missing values
drawn as nothing, user text inert, and error bars only where a point averages several seeds."""
import json
from pathlib import Path

import pytest
import sweep_examples

from localist_core.experiments import results as tr
from localist_core.experiments.cache import load_cache
from ui.sweep_figures import panel_figure, points_figure


def test_figure_draws_papers_leaks_and_reference_lines():
    runs = sweep_examples.synthetic_runs()
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


def test_error_bars_only_where_points_average_several_seeds():
    ex = sweep_examples
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
    runs, _ = load_cache(Path(__file__).resolve().parents[1] / "assets" / "sweep")
    fig = panel_figure(tr.curve_points(runs), "locality", "λ", [
        {"y": "perplexity", "title": "ppl", "log_y": True}, {"y": "entropy_bits", "title": "H"}])
    assert fig.data and all(t.error_y.array is None for t in fig.data)
