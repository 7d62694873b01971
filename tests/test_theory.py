"""The threshold formula, the cross-block-mass bound and the estimators of their inputs."""
import math

import pytest
import torch

from localist_core.analysis import theory as T
from localist_core.model.dial import Dial


def test_threshold_formula_by_hand():
    got = T.threshold_locality(0.5, 2.0, 1.5, 5, 0.5, 0.2, 1.0)
    want = 2 * 0.5 * 2.0 * 1.5 * math.sqrt(5) / (0.5 * 0.8) * math.exp(-2.0)
    assert math.isclose(got, want, rel_tol=1e-12)
    with pytest.raises(ValueError):
        T.threshold_locality(1, 1, 1, 5, 1.0, 1.0, 0.0)


def test_threshold_falls_with_margin_at_fixed_tau():
    vals = [T.threshold_locality(1, 1, 1, 5, 1.0, 0.3, d) for d in (0, 1, 2, 4)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


def test_bound_shrinks_as_tau_falls_for_positive_margin():
    vals = [float(T.cross_block_mass_bound(3, 10, 2.0, tau)) for tau in (10, 1, 0.5, 0.1)]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    assert float(T.cross_block_mass_bound(3, 10, 0.0, 1.0)) == pytest.approx(10 / 13)


@pytest.mark.parametrize("lam", [0.0, 0.6])
def test_bound_never_below_measured_cross_mass(trained_tiny, tokens, lam):
    rows = T.predicted_vs_measured(trained_tiny, tokens, Dial(lam), [0.05, 0.25, 1.0, 4.0])
    for row in rows:
        assert row["bound_cross_mass"] >= row["measured_cross_mass"] - 1e-6
    assert rows[0]["measured_cross_mass"] != rows[-1]["measured_cross_mass"]


def test_estimated_inputs_are_finite_and_in_range(trained_tiny, tokens):
    est = T.estimate_threshold_inputs(trained_tiny, tokens)
    d = est.as_dict()
    assert all(math.isfinite(v) for v in d.values())
    assert est.lipschitz > 0 and est.r_x > 0 and est.sigma_x > 0
    assert 0 <= est.rho_max < 1 and est.block_len == pytest.approx(5.0, abs=0.5)
    lam = T.threshold_locality(est.lipschitz, est.r_x, est.sigma_x, est.block_len, 1.0,
                               est.rho_max, est.margin)
    assert math.isfinite(lam) and lam > 0


def test_query_margins_count_visible_keys():
    scores = torch.tensor([[[[0.0, -math.inf, -math.inf],
                             [1.0, 2.0, -math.inf],
                             [-3.0, 0.5, 1.0]]]])
    ids = torch.tensor([[0, 0, 1]])
    m = T.query_margins(scores, ids)
    assert m["n_in"].tolist() == [[[1, 2, 1]]] and m["n_x"].tolist() == [[[0, 0, 2]]]
    assert m["margin"][0, 0, 2] == pytest.approx(0.5)
    assert math.isinf(m["margin"][0, 0, 0])
