"""The Theory page's figures."""
from ui.theory_figures import theory_figure


def test_theory_figure_draws_measured_and_bound_on_a_log_tau_axis():
    rows = [{"attn_temperature": t, "measured_cross_mass": m, "bound_cross_mass": b}
            for t, m, b in ((0.1, 0.01, 0.05), (1.0, 0.2, 0.4), (10.0, 0.6, 0.9))]
    fig = theory_figure(rows)
    measured, bound = fig.data
    assert list(measured.x) == [0.1, 1.0, 10.0] and list(bound.y) == [0.05, 0.4, 0.9]
    assert bound.line.dash == "dash" and fig.layout.xaxis.type == "log"
    assert list(fig.layout.yaxis.range) == [0, 1]


def test_formula_sweep_figure_pairs_measured_and_predicted_per_tau():
    from ui.theory_figures import formula_sweep_figure
    rows = [{"locality": lf, "attn_temperature": t, "measured_in_block": 0.5 + lf / 4,
             "predicted_in_block": min(1.0, 0.5 + lf), "calibration": lf == 0 and t == 1.0}
            for t in (1.0, 0.5) for lf in (0.5, 0.0, 1.0)]
    fig = formula_sweep_figure(rows)
    names = [tr.name for tr in fig.data]
    assert names[:4] == ["measured, τ = 0.5", "formula, τ = 0.5", "measured, τ = 1",
                         "formula, τ = 1"]
    measured, formula = fig.data[2], fig.data[3]
    assert list(measured.x) == [0.0, 0.5, 1.0] and list(formula.y) == [0.5, 1.0, 1.0]
    assert formula.line.dash == "dash" and measured.line.dash is None
    assert formula.line.color == measured.line.color != fig.data[0].line.color
    star = fig.data[4]
    assert star.marker.symbol == "star" and list(star.x) == [0.0] and list(star.y) == [0.5]
    assert fig.layout.yaxis.range[0] == 0 and fig.layout.yaxis.range[1] >= 1
