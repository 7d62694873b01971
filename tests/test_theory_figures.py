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
