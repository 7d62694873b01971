"""The Tradeoff page's figures: papers' points, leaks and reference lines named, missing values
drawn as nothing, user text inert, error bars only where a point averages several seeds; the
headline curves and their caption, axes set by what a chart draws, and labels that never
overlap."""
import json
import math
from pathlib import Path

import pytest
import sweep_examples

from localist_core.experiments import comparisons as cp
from localist_core.experiments import results as tr
from localist_core.experiments.cache import load_cache
from ui import sweep_figures
from ui.sweep_figures import panel_figure, points_figure

REPO = Path(__file__).resolve().parents[1]


def test_figure_draws_papers_leaks_and_reference_lines():
    runs = sweep_examples.synthetic_runs()
    pts = tr.curve_points(runs) + tr.leak_points(runs)
    fig = points_figure(pts, "locality", "entropy_bits", "λ", "bits", papers=tr.paper_points(),
                        hlines=tr.entropy_references(pts), controls=True)
    names = [t.name for t in fig.data]
    assert sum(n.startswith(tr.PAPERS) for n in names) == 4            # 2 points, 2 lines
    assert any(n.startswith("causal ceiling") for n in names)
    leak = [t for t in fig.data if t.name.startswith("leak diagnostic")]
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


# -- the headline, its caption, the axes and the labels ------------------------------------------

def _headline(runs: list[dict]) -> tuple[list[dict], list[str]]:
    pts = tr.curve_points(runs)
    names = sweep_figures.headline_series(pts)
    return [p for p in pts if p["series"] in names], names


def test_the_headline_is_the_penalty_against_the_dial_with_seed_error_bars():
    ours, names = _headline(sweep_examples.multi_seed_runs())
    assert names == ["attention penalty · as trained", "dial protocol"]
    fig = points_figure(ours, "in_block_mass", "perplexity", "in-block mass", "ppl")
    penalty = next(t for t in fig.data if t.name == "trained for one λ")
    sds = [p["perplexity_sd"] for p in ours if p["series"] == names[0]]
    assert all(sd > 0 for sd in sds)
    assert list(penalty.error_y.array) == [pytest.approx(sd) for sd in sds]
    # The shipped cache: its dial curve is the one evaluated at the shipped β = 64.
    runs, _ = load_cache(REPO / "assets" / "sweep")
    assert _headline(runs)[1] == ["attention penalty · as trained", "dial protocol · beta64"]


def test_the_cost_caption_reads_the_paired_interval_and_states_no_finding():
    ours, names = _headline(sweep_examples.multi_seed_runs())
    text = sweep_figures.cost_caption(ours, names, "in_block_mass")
    assert text.count("over 3 paired seeds excludes 0") == 2 and "+52.3 (+51%)" in text
    assert "established" not in text          # a page's findings are the family's alone
    single, names1 = _headline(sweep_examples.synthetic_runs())
    text = sweep_figures.cost_caption(single, names1, "entropy_bits")
    assert text.count("no interval (no seeds at both ends)") == 2
    assert "excludes 0" not in text
    only = [p for p in ours if p["locality"] == 0]
    text = sweep_figures.cost_caption(only, names, "in_block_mass")
    assert text.count("has only λ = 0") == 2 and "not established" in text


def _range(axis, log: bool = False) -> tuple[float, float]:
    lo, hi = axis.range
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


def test_a_charts_axes_are_set_by_what_it_draws():
    runs = sweep_examples.multi_seed_runs()
    ours, _ = _headline(runs)
    fig = points_figure(ours, "locality", "test_perplexity", "λ", "test ppl", log_y=True)
    lo, hi = _range(fig.layout.yaxis, log=True)
    vals = [p["test_perplexity"] for p in ours]
    assert lo <= min(vals) and max(vals) <= hi
    assert lo > 0.8 * min(vals) and hi < 1.25 * max(vals)     # only a margin for the labels
    with_papers = points_figure(ours, "locality", "test_perplexity", "λ", "test ppl",
                                log_y=True, papers=tr.paper_points())
    assert _range(with_papers.layout.yaxis, log=True)[0] < tr.PAPER["test_perplexity_l06"]
    # Error bars are inside the axes.
    fig = points_figure(ours, "entropy_bits", "perplexity", "H", "ppl")
    lo, hi = _range(fig.layout.yaxis)
    assert all(lo <= p["perplexity"] - (p["perplexity_sd"] or 0) and
               p["perplexity"] + (p["perplexity_sd"] or 0) <= hi for p in ours)


def _label_boxes(fig, panel: str = "") -> dict[str, list[tuple]]:
    """Each trace's drawn labels as pixel boxes, from the figure's own ranges and positions."""
    xr, yr = fig.layout[f"xaxis{panel}"].range, fig.layout[f"yaxis{panel}"].range
    n = len([k for k in fig.layout if k.startswith("xaxis")])
    w = (sweep_figures.FIG_WIDTH - 80) * (1 - 0.08 * (n - 1)) / n
    h = fig.layout.height - 120
    logx, logy = (fig.layout[f"{a}axis{panel}"].type == "log" for a in "xy")
    out = {}
    for t in fig.data:
        if t.text is None or t.xaxis != f"x{panel}":
            continue
        pos = [t.textposition] * len(t.x) if isinstance(t.textposition, str) else t.textposition
        boxes = []
        for x, y, text, where in zip(t.x, t.y, t.text, pos):
            if text:
                x, y = (math.log10(x) if logx else x), (math.log10(y) if logy else y)
                px = (x - xr[0]) / (xr[1] - xr[0]) * w
                py = (y - yr[0]) / (yr[1] - yr[0]) * h
                boxes.append(sweep_figures.label_box(px, py, text, where))
        out[t.name] = boxes
    return out


def test_no_two_point_labels_in_a_chart_overlap():
    runs, _ = load_cache(REPO / "assets" / "sweep")
    pts = tr.curve_points(runs)           # every series of the shipped cache, the worst case
    figs = [points_figure(pts, x, "perplexity", "x", "ppl") for x in ("in_block_mass",
                                                                      "entropy_bits")]
    figs.append(panel_figure(pts + tr.leak_points(runs), "locality", "λ", [
        {"y": "entropy_bits", "title": "H"}, {"y": "test_perplexity", "title": "ppl",
                                              "log_y": True}], papers=tr.paper_points()))
    labelled = 0
    for fig in figs:
        for panel in ("", "2"):
            if f"xaxis{panel}" not in fig.layout or fig.layout[f"xaxis{panel}"].range is None:
                continue
            boxes = [b for bs in _label_boxes(fig, panel).values() for b in bs]
            labelled += len(boxes)
            for i, a in enumerate(boxes):
                assert not any(sweep_figures.boxes_overlap(a, b) for b in boxes[i + 1:])
    assert labelled > 40                  # most points keep their label


def test_labels_of_points_on_one_spot_take_different_positions_or_none():
    spot = [[(100.0, 100.0, "λ=0.6")] * 12]
    (where,) = sweep_figures.place_labels(spot, 400, 300)
    placed = [w for w in where if w]
    assert len(placed) == len(set(placed)) >= 2 and None in where
    assert sweep_figures.place_labels([[(10.0, 10.0, "λ=1")]], 20, 20) == [[None]]   # no room
    # Labels keep clear of every marker, not only of other labels.
    (w,) = sweep_figures.place_labels([[(50.0, 50.0, "abc"), (50.0, 68.0, "")]], 400, 300)
    assert w[0] != "top center"


# -- blocks against their context-matched control ------------------------------------------------

def _block_figure(seeds=(1, 2, 3)):
    from sweep_examples import block_runs
    runs = block_runs(seeds)
    pts = cp.block_control_points(runs, 0.6)
    return pts, sweep_figures.block_control_figure(pts), cp.block_control_differences(runs, 0.6)


def test_the_block_figure_joins_fixed_sizes_by_one_line_and_marks_each_partition():
    pts, fig, _ = _block_figure()
    for panel, y in (("x", "perplexity"), ("x2", "in_block_mass")):
        traces = {t.name: t for t in fig.data if t.xaxis == panel}
        assert list(traces) == [sweep_figures.FIXED_LINE, "punctuation blocks",
                                "recruited blocks"]
        line = traces[sweep_figures.FIXED_LINE]
        assert "lines" in line.mode and list(line.x) == pytest.approx([2.98, 3.96])  # by keys
        assert list(line.y) == [pytest.approx(p[y]) for p in pts[:2]]
        marks = [traces[n] for n in ("punctuation blocks", "recruited blocks")]
        assert all("lines" not in t.mode and len(t.x) == 1 for t in marks)
        assert {t.marker.symbol for t in marks} == {"diamond", "square"}
        # ± 1 sd across seeds on every point (each averages 3 seeds), x too where keys vary.
        assert list(line.error_y.array) == [pytest.approx(p[f"{y}_sd"]) for p in pts[:2]]
        assert list(marks[1].error_x.array) == [pytest.approx(0.04)]
    assert fig.layout.xaxis.title.text.startswith("visible in-block keys")
    json.loads(fig.to_json())
    # In-block mass is a share: its axis never zooms in below SHARE_MIN_SPAN.
    lo, hi = fig.layout.yaxis2.range
    assert hi - lo >= sweep_figures.SHARE_MIN_SPAN - 1e-12
    assert lo <= min(p["in_block_mass"] for p in pts) and hi >= max(p["in_block_mass"] for p in pts)
    flat = [{**p, "in_block_mass": 1.0 - 1e-4 * i, "in_block_mass_sd": None}
            for i, p in enumerate(pts)]
    lo, hi = sweep_figures.block_control_figure(flat).layout.yaxis2.range
    assert hi - lo == pytest.approx(sweep_figures.SHARE_MIN_SPAN)
    assert 1.0 < hi <= 1.0 + sweep_figures.SHARE_MIN_SPAN / 5             # the points near the top
    # Points spread over most of the span: the taller axis still holds the lowest one.
    near = [{**p, "in_block_mass": v, "in_block_mass_sd": None}
            for p, v in zip(pts, (0.9175, 1.0, 0.95, 0.96))]
    lo, hi = sweep_figures.block_control_figure(near).layout.yaxis2.range
    assert hi - lo == pytest.approx(sweep_figures.SHARE_MIN_SPAN) and lo < 0.9175 and hi > 1.0
    # One seed each: the same traces, no error bars.
    _, one, _ = _block_figure(seeds=(1,))
    assert len(one.data) == 6 and all(t.error_y.array is None and t.error_x.array is None
                                      for t in one.data)


def test_the_block_figures_labels_never_overlap():
    _, fig, _ = _block_figure()
    labelled = 0
    for panel in ("", "2"):
        boxes = [b for bs in _label_boxes(fig, panel).values() for b in bs]
        labelled += len(boxes)
        for i, a in enumerate(boxes):
            assert not any(sweep_figures.boxes_overlap(a, b) for b in boxes[i + 1:])
    assert labelled >= 6


def test_the_block_caption_names_each_partitions_matched_control_and_its_verdict():
    pts, _, rows = _block_figure()
    text = sweep_figures.block_control_caption(pts, rows)
    assert "punctuation blocks let a query see 3.91 in-block keys, nearest to fixed blocks " \
           "of 7 (3.96)" in text
    assert "+10.1; 95% interval" in text and "excludes 0: a reading, not a finding" in text
    assert "recruited blocks let a query see 3.04 in-block keys, nearest to fixed blocks of 5" \
        in text and "includes 0" in text
    assert sweep_figures.has_visible_keys(pts)
    old = [{k: v for k, v in p.items() if k != "visible_in_block_keys"} for p in pts]
    assert not sweep_figures.has_visible_keys(old)
    assert "No adaptive partition" in sweep_figures.block_control_caption(old, rows)
