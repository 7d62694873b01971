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


# -- the dial in motion and the grid of heads --------------------------------------------------

def _frames(n=12, seed=0):
    """FRAMES views that localise step by step: frame f keeps a share f/(FRAMES−1) of each row
    inside its block of 4."""
    from ui.motion import FRAMES

    p = _causal(n, seed)
    inside = (np.arange(n)[:, None] // 4) == (np.arange(n)[None, :] // 4)
    local = np.tril(inside * p)
    local /= local.sum(-1, keepdims=True)
    share = np.linspace(0, 1, FRAMES)[:, None, None]
    return (1 - share) * p + share * local


def test_the_animation_has_the_fixed_frames_and_its_heatmap_moves(view):
    from ui.figures import dial_animation
    from ui.motion import FRAMES, LOCALITY_FRAMES

    _, labels, ids, anchors = view
    views = _frames(len(labels))
    tiles = {"in-block mass": np.linspace(0.5, 1.0, FRAMES), "perplexity": np.full(FRAMES, np.nan)}
    fig = dial_animation(views, LOCALITY_FRAMES, "λ", tiles, labels, ids, anchors, title="<b>")
    assert len(fig.frames) == FRAMES == len(fig.layout.sliders[0].steps)
    assert [f.name for f in fig.frames] == [f"{v:g}" for v in LOCALITY_FRAMES]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["▶ Play", "❚❚ Pause"]
    first, last = (np.asarray(fig.frames[i].data[0].z, float) for i in (0, -1))
    future = np.triu(np.ones_like(first, bool), 1)
    assert np.isnan(first[future]).all() and np.isnan(last[future]).all()
    np.testing.assert_allclose(first[~future], views[0][~future], rtol=1e-6)
    np.testing.assert_allclose(last[~future], views[-1][~future], rtol=1e-6)
    assert not np.allclose(first[~future], last[~future])
    # Each frame moves the heatmap and one marker per tile, to that frame's value.
    for f, frame in enumerate(fig.frames):
        marks = frame.data[1:]
        assert [fig.data[i].type for i in frame.traces] == ["heatmap", "scatter", "scatter"]
        assert [m.x[0] for m in marks] == [LOCALITY_FRAMES[f]] * 2
        assert marks[0].y[0] == pytest.approx(tiles["in-block mass"][f])
        assert marks[1].y[0] is None and marks[1].text[0] == "—"   # undefined, not NaN
    assert "<b>" not in fig.layout.title.text
    json.loads(fig.to_json(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_the_log_scale_animation_hovers_the_exact_weights(view):
    from ui.figures import dial_animation
    from ui.motion import TEMPERATURE_FRAMES

    _, labels, ids, anchors = view
    views = _frames(len(labels))
    fig = dial_animation(views, TEMPERATURE_FRAMES, "τ", {"entropy": np.arange(11.0)}, labels,
                         ids, log_scale=True, log_axis=True)
    last = fig.frames[-1].data[0]
    future = np.triu(np.ones(views[0].shape, bool), 1)
    np.testing.assert_allclose(np.asarray(last.customdata, float)[~future], views[-1][~future],
                               rtol=1e-6)
    assert np.nanmax(np.asarray(last.z, float)) <= 0            # log10 of weights ≤ 1
    assert fig.layout.xaxis2.type == "log"


def test_the_frame_grids_span_the_dial_ranges_with_the_fixed_count():
    from localist_core.model.config import LOCALITY_RANGE, TEMPERATURE_RANGE
    from ui.motion import AXES, FRAMES

    lam, tau = AXES["locality"], AXES["attn_temperature"]
    assert len(lam) == len(tau) == FRAMES
    assert (lam[0], lam[-1]) == LOCALITY_RANGE and (tau[0], tau[-1]) == TEMPERATURE_RANGE
    assert np.all(np.diff(lam) > 0) and np.all(np.diff(tau) > 0)
    assert 1.0 in tau                                  # the temperature the models trained at


def _patterns(n_layers=2, n_heads=3, n=10, seed=0):
    return np.stack([np.stack([_causal(n, seed + 10 * ly + h) for h in range(n_heads)])
                     for ly in range(n_layers)]).astype(np.float16)


def test_the_head_grid_has_a_panel_per_layer_and_head_and_the_means():
    from localist_core.analysis.inspection import reduce_heads
    from ui.figures import GRID_GAP, head_grid
    from ui.motion import head_panels

    pats = _patterns()
    grid = head_panels(pats)
    assert grid.layers == [0, 1, "mean"] and grid.heads == [0, 1, 2, "mean"]
    assert grid.pool == 1 and grid.panels.shape == (3, 4, 10, 10)
    fig = head_grid(grid.panels, grid.layers, grid.heads, chosen=(1, "mean"))
    targets = fig.data[1]
    picked = [tuple(c) for c in targets.customdata]
    assert len(picked) == len(set(picked)) == 3 * 4                  # (layers + 1) × (heads + 1)
    tiles, step = np.asarray(fig.data[0].z, float), 10 + GRID_GAP
    future = np.triu(np.ones((10, 10), bool), 1)
    for (ly, h), x, y in zip(picked, targets.x, targets.y):
        r, c = grid.layers.index(ly), grid.heads.index(h)
        assert (x, y) == (c * step + 4.5, r * step + 4.5)             # the marker sits on its panel
        tile = tiles[r * step:r * step + 10, c * step:c * step + 10]
        want = reduce_heads(pats, None if ly == "mean" else ly, None if h == "mean" else h)
        np.testing.assert_allclose(tile[~future], want[~future], rtol=1e-3)
        assert np.isnan(tile[future]).all()
    assert np.isnan(tiles[10, :]).all() and np.isnan(tiles[:, 10]).all()   # the gaps
    outlined = [s for s in fig.layout.shapes if s.line.color == "#ff7f0e"]
    assert [(s.x0, s.y0) for s in outlined] == [(3 * step - 0.5, 1 * step - 0.5)]


def test_pooled_cells_average_the_visible_weights_they_cover():
    from ui.motion import pooled

    p = _causal(7)
    cells = pooled(p, 3)                                   # 7 tokens → 3 cells a side
    assert cells.shape == (3, 3)
    np.testing.assert_allclose(cells[1, 0], p[3:6, 0:3].mean(), rtol=1e-6)
    np.testing.assert_allclose(cells[1, 1], p[3:6, 3:6][np.tril_indices(3)].mean(), rtol=1e-6)
    np.testing.assert_allclose(cells[2, 2], p[6, 6], rtol=1e-6)   # the padding is not a weight
    assert np.isnan(cells[0, 1]) and np.isnan(cells[0, 2]) and np.isnan(cells[1, 2])
    np.testing.assert_allclose(pooled(p, 1)[np.tril_indices(7)], p[np.tril_indices(7)],
                               rtol=1e-6)


def test_the_head_grid_stays_within_its_limits_for_a_large_model():
    from ui.motion import GRID_CELL_BUDGET, GRID_MAX_SHOWN, head_panels

    n = 64
    pats = np.tile(np.tril(np.full((n, n), 1 / n, np.float16)), (40, 24, 1, 1))   # 40 × 24 heads
    grid = head_panels(pats)
    assert len(grid.layers) == len(grid.heads) == GRID_MAX_SHOWN + 1
    assert grid.panels[..., 0, 0].size * grid.panels.shape[-1] ** 2 <= GRID_CELL_BUDGET
    assert grid.pool > 1 and grid.panels.shape[-1] == -(-n // grid.pool)


@pytest.mark.parametrize("event,choice", [
    ({"selection": {"points": [{"customdata": [1, "mean"]}]}}, (1, "mean")),
    ({"selection": {"points": [{"x": 1}, {"customdata": ["mean", 2.0]}]}}, ("mean", 2)),
    ({"selection": {"points": []}}, None),
    ({"selection": {"points": [{"customdata": ["x", 1]}]}}, None),
    ({"selection": {"points": [{"customdata": [1e400, 1]}]}}, None),
    ({"selection": {"points": [{"customdata": [1, 2, 3]}]}}, None),
    ({"selection": {"points": "nonsense"}}, None),
    ({"selection": None}, None), ("junk", None), (None, None),
])
def test_a_grid_click_is_read_or_ignored_never_raised(event, choice):
    from ui.motion import panel_choice

    assert panel_choice(event) == choice


def test_one_querys_anchors_and_the_leaving_strip(view):
    """``query`` marks that row's anchors only (and stars its anchor keys); ``cross_share`` adds
    a strip with one value per query on its own [0, 1] scale."""
    from localist_core.analysis.inspection import cross_block_share
    p, labels, ids, anchors = view
    share = cross_block_share(p, ids)
    fig = attention_heatmap(p, labels, ids, anchors, block_anchors=anchors.any(0), query=7,
                            cross_share=share)
    heat, marks, strip = fig.data
    assert {heat.y.index(y) for y in marks.y} == {7}
    assert {heat.x.index(x) for x in marks.x} == set(np.nonzero(anchors[7])[0])
    starred = {i for i, name in enumerate(heat.x) if name.endswith("★")}
    assert starred == set(np.nonzero(anchors[7])[0])
    assert list(strip.y) == list(heat.y) and (strip.zmin, strip.zmax) == (0.0, 1.0)
    assert np.allclose(np.asarray(strip.z).ravel(), share)
    in_block = (p * (ids[:, None] == ids[None, :])).sum(1)
    assert np.allclose(share, 1 - in_block, atol=1e-6)
