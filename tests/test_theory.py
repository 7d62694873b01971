"""The threshold formula, the cross-block-mass bound and the estimators of their inputs."""
import math

import pytest
import torch

from localist_core.analysis import theory as T
from localist_core.analysis.inspection import theory_report
from localist_core.model.blocks import same_block
from localist_core.model.dial import Dial

TAUS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0)
DELTAS = (-math.inf, -1e3, -1.0, 0.0, 1.0, 1e3, math.inf)
TEXT = "the cat sees the bridge . a dog follows the castle on Monday ."


def test_threshold_formula_by_hand():
    got = T.threshold_locality(0.5, 2.0, 1.5, 5, 0.5, 0.2, 1.0)
    want = 2 * 0.5 * 2.0 * 1.5 * math.sqrt(5) / (0.5 * 0.8) * math.exp(-2.0)
    assert math.isclose(got, want, rel_tol=1e-12)
    with pytest.raises(ValueError):
        T.threshold_locality(1, 1, 1, 5, 1.0, 1.0, 0.0)


def test_threshold_falls_with_margin_at_fixed_tau():
    vals = [T.threshold_locality(1, 1, 1, 5, 1.0, 0.3, d) for d in (0, 1, 2, 4)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("delta", DELTAS)
@pytest.mark.parametrize("lipschitz", [0.0, 1.0, 1e308, math.inf])
def test_the_threshold_is_never_nan(tau, delta, lipschitz):
    got = T.threshold_locality(lipschitz, 15.0, 12.0, 5.0, tau, 0.9, delta)
    assert not math.isnan(got) and got >= 0
    if delta == math.inf or lipschitz == 0.0:
        assert got == 0.0                     # no cross key can take mass / a zero factor
    elif delta == -math.inf or lipschitz == math.inf:
        assert got == math.inf


def test_the_threshold_overflows_to_inf_and_refuses_nan_inputs():
    assert T.threshold_locality(1e308, 1e308, 1, 5, 1.0, 0.5, 0.0) == math.inf
    assert T.threshold_locality(1, 1, 1, 5, 0.05, 0.5, -1e3) == math.inf
    with pytest.raises(ValueError):
        T.threshold_locality(1, 1, 1, 5, 1.0, 0.5, math.nan)
    with pytest.raises(ValueError):
        T.threshold_locality(1, 1, 1, 5, 0.0, 0.5, 1.0)


@pytest.mark.parametrize("n_in,n_x", [(1, 1), (3, 10), (5, 120), (1, 0)])
def test_bound_is_finite_and_in_the_unit_interval(n_in, n_x):
    for tau in TAUS:
        got = T.cross_block_mass_bound(n_in, n_x, torch.tensor(DELTAS), tau)
        assert torch.isfinite(got).all() and (got >= 0).all() and (got <= 1).all()
        if n_x == 0:
            assert (got == 0).all()           # no cross key: no cross mass
        else:
            assert got[-1] == 0 and got[0] == 1      # δ = +∞ → 0, δ = −∞ → 1
            assert got[3] == pytest.approx(n_x / (n_in + n_x))     # δ = 0: the count ratio


def test_bound_matches_the_direct_formula_where_that_does_not_overflow():
    for tau in (0.5, 1.0, 4.0):
        for delta in (-3.0, 0.0, 2.5):
            w = 10 * math.exp(-delta / tau)
            assert float(T.cross_block_mass_bound(3, 10, delta, tau)) == pytest.approx(w / (3 + w))


def test_bound_is_monotone_in_margin_and_in_tau_as_the_formula_says():
    deltas = torch.tensor(DELTAS)
    for tau in TAUS:                                        # falls as δ rises, at every τ
        b = T.cross_block_mass_bound(3, 10, deltas, tau)
        assert (b[1:] <= b[:-1]).all()
    for delta, sign in ((-1e3, -1), (-1.0, -1), (0.0, 0), (1.0, 1), (1e3, 1)):
        b = torch.stack([T.cross_block_mass_bound(3, 10, delta, tau) for tau in TAUS])
        steps = b[1:] - b[:-1]
        if sign > 0:        # a positive margin: the bound rises with τ (falls as τ falls)
            assert (steps >= 0).all()
        elif sign < 0:      # a negative margin: it falls with τ
            assert (steps <= 0).all()
        else:               # δ = 0: τ does not enter
            assert (steps == 0).all()
    vals = [float(T.cross_block_mass_bound(3, 10, 2.0, tau)) for tau in (10, 1, 0.5, 0.1)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


@pytest.mark.parametrize("lam", [0.0, 0.6])
def test_bound_never_below_measured_cross_mass(trained_tiny, tokens, lam):
    rows = T.predicted_vs_measured(trained_tiny, tokens, Dial(lam), list(TAUS))
    for row in rows:
        assert row["bound_holds"] and not row["exactly_local"]
        assert row["bound_cross_mass"] >= row["measured_cross_mass"] - 1e-6
        assert all(0 <= row[k] <= 1 for k in ("measured_cross_mass", "bound_cross_mass",
                                              "estimate_cross_mass"))
    assert rows[0]["measured_cross_mass"] != rows[-1]["measured_cross_mass"]
    at_one = next(r for r in rows if r["attn_temperature"] == 1.0)     # the estimate is exact
    assert at_one["estimate_cross_mass"] == pytest.approx(at_one["measured_cross_mass"],
                                                          abs=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9])
@pytest.mark.parametrize("tau", [0.05, 1.0, 10.0])
def test_the_bound_holds_query_by_query(trained_tiny, tokens, lam, tau):
    """For every query and head: measured cross mass ≤ the formula at that query's own
    min-in − max-cross margin. The typical margin gives the measured mass at τ = 1 only."""
    dial = Dial(lam, attn_temperature=tau)
    names = ["blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern"]
    _, cache = trained_tiny.run_with_cache(tokens, dial, names_filter=names, return_type=None)
    ids = trained_tiny.partition_info(tokens).block_ids
    measured = (cache[names[1]].double() * (~same_block(ids)).unsqueeze(1)).sum(-1)
    m = T.query_margins(cache[names[0]], ids)
    bound = T.cross_block_mass_bound(m["n_in"], m["n_x"], m["bound_margin"],
                                     dial.attn_temperature)
    assert bound.shape == measured.shape and torch.isfinite(bound).all()
    assert (measured <= bound + 1e-6).all()
    assert (m["typical_margin"] >= m["bound_margin"]).all()
    if tau == 1.0:
        est = T.cross_block_mass_bound(m["n_in"], m["n_x"], m["typical_margin"], 1.0)
        assert torch.allclose(est, measured, atol=1e-5)


def test_at_lambda_one_the_report_is_exactly_local(trained_tiny, tokens, tiny_corpus):
    est = T.estimate_threshold_inputs(trained_tiny, tokens, Dial(1.0))
    assert est.exactly_local and est.margin == math.inf
    assert T.threshold_locality(est.lipschitz, est.r_x, est.sigma_x, est.block_len, 1.0,
                                est.rho_max, est.margin) == 0.0
    report = theory_report(trained_tiny, tiny_corpus.tokenizer, TEXT, Dial(1.0), 0)
    assert report["exactly_local"] and report["inputs"]["exactly_local"]
    for row in report["rows"]:
        assert row["exactly_local"] and row["bound_holds"]
        assert row["measured_cross_mass"] == 0.0 and row["bound_cross_mass"] == 0.0
        assert row["estimate_cross_mass"] == 0.0
    below = theory_report(trained_tiny, tiny_corpus.tokenizer, TEXT, Dial(0.95), 0)
    assert not below["exactly_local"] and math.isfinite(below["inputs"]["margin"])


def test_estimated_inputs_are_finite_and_in_range(trained_tiny, tokens):
    est = T.estimate_threshold_inputs(trained_tiny, tokens)
    d = est.as_dict()
    assert all(math.isfinite(v) for v in d.values()) and not est.exactly_local
    assert est.lipschitz > 0 and est.r_x > 0 and est.sigma_x > 0
    assert 0 <= est.rho_max < 1 and est.block_len == pytest.approx(5.0, abs=0.5)
    lam = T.threshold_locality(est.lipschitz, est.r_x, est.sigma_x, est.block_len, 1.0,
                               est.rho_max, est.margin)
    assert math.isfinite(lam) and lam > 0


def test_the_margin_estimate_is_a_median_not_a_worst_case(trained_tiny, tokens):
    """δ is the median typical margin, which no single outlying query or key decides."""
    dial = Dial(0.6)
    est = T.estimate_threshold_inputs(trained_tiny, tokens, dial)
    _, cache = trained_tiny.run_with_cache(tokens, dial, return_type=None,
                                           names_filter=["blocks.0.attn.hook_attn_scores"])
    ids = trained_tiny.partition_info(tokens).block_ids
    m = T.query_margins(cache["blocks.0.attn.hook_attn_scores"], ids)
    typical = m["typical_margin"][m["n_x"] > 0]
    assert est.margin == pytest.approx(float(typical.median()))
    assert float(typical.min()) <= est.margin <= float(typical.max())


def test_query_margins_count_visible_keys():
    scores = torch.tensor([[[[0.0, -math.inf, -math.inf],
                             [1.0, 2.0, -math.inf],
                             [-3.0, 0.5, 1.0]]]])
    ids = torch.tensor([[0, 0, 1]])
    m = T.query_margins(scores, ids)
    assert m["n_in"].tolist() == [[[1, 2, 1]]] and m["n_x"].tolist() == [[[0, 0, 2]]]
    assert m["bound_margin"][0, 0, 2] == pytest.approx(0.5)          # 1 − max(−3, 0.5)
    lme_x = math.log((math.exp(-3.0) + math.exp(0.5)) / 2)
    assert m["typical_margin"][0, 0, 2] == pytest.approx(1.0 - lme_x)
    for key in ("bound_margin", "typical_margin"):
        assert math.isinf(m[key][0, 0, 0]) and m[key][0, 0, 0] > 0


def test_the_theory_calculator_shows_a_message_not_a_number_when_exactly_local():
    from ui import views
    assert views.exactly_local({"exactly_local": True}) is True
    assert views.exactly_local({"inputs": {}}) is False
    assert "exactly block-local (threshold 0)" in views.EXACTLY_LOCAL
    est = views.threshold_inputs({"inputs": {"lipschitz": 1.0, "r_x": 1.0, "sigma_x": 1.0,
                                             "block_len": 5.0, "rho_max": 0.5,
                                             "margin": math.inf, "exactly_local": True}})
    assert est["margin"] == 0.0


# -- what the threshold means, and the formula against a λ-sweep ------------------------------

@pytest.mark.parametrize("threshold,margin,want", [
    (2.4, 2.0, []), (0.0, 3.0, []), (2.4, 0.0, ["no_margin"]), (2.4, -1.0, ["no_margin"]),
    (math.inf, -1e6, ["no_margin", "overflow"]), (math.inf, 1.0, ["overflow"]),
    (1.776e17, 0.5, ["astronomical"]), (T.ASTRONOMICAL_THRESHOLD, 1.0, []),
])
def test_threshold_problems_name_every_failed_assumption(threshold, margin, want):
    assert T.threshold_problems(threshold, margin) == want


def test_the_sweep_prediction_by_hand():
    """One margin from m₀ = 0.3 at τ = 1 against u_x = 0.9, then λ_f = 0.5, β = 2, τ = 0.5."""
    logit = lambda p: math.log(p / (1 - p))                     # noqa: E731
    delta0 = T.effective_margin(0.3, 0.9)
    assert delta0 == pytest.approx(logit(0.9) - logit(0.3))
    delta = delta0 - 2.0 * math.log(1 - 0.5)                    # the barrier lowers the margin
    w = 0.9 * math.exp(-delta / 0.5)
    assert T.predicted_cross_mass(delta0, 0.9, 0.5, 0.5, 2.0) == pytest.approx(w / (0.1 + w))
    # at τ = 1 the count ratio cancels: the odds of m₀ times (1 − λ_f)^β
    odds = 0.3 / 0.7 * 0.5 ** 2.0
    assert T.predicted_cross_mass(delta0, 0.9, 0.5, 1.0, 2.0) == pytest.approx(odds / (1 + odds))
    assert T.predicted_cross_mass(delta0, 0.9, 0.0, 1.0, 2.0) == pytest.approx(0.3)
    assert T.predicted_cross_mass(delta0, 0.9, 1.0, 0.5, 2.0) == 0.0      # masked
    assert T.predicted_cross_mass(-math.inf, 0.9, 1.0, 1.0, 2.0) == 0.0   # no ∞ − ∞
    assert T.effective_margin(0.0, 0.9) == math.inf and T.effective_margin(1.0, 0.9) == -math.inf
    lams = [T.predicted_cross_mass(delta0, 0.9, lam, 1.0, 2.0) for lam in (0, .2, .5, .8, .99)]
    assert all(a > b for a, b in zip(lams, lams[1:]))
    with pytest.raises(ValueError):
        T.effective_margin(0.3, 1.0)
    with pytest.raises(ValueError):
        T.predicted_cross_mass(delta0, 0.9, 1.5, 1.0, 2.0)


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.9])
def test_one_margin_never_predicts_more_cross_mass_than_the_model_has(trained_tiny, tokens, lam):
    """Layer 0 (whose scores λ_f does not change) at τ = 1: read one margin at λ_f = 0 and
    predict λ_f. Queries differ, and their mean responds more slowly than one logistic curve
    (p(1−p) is concave), so the prediction is at most the measured cross-block mass."""
    names = ["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_attn_scores"]
    ids = trained_tiny.partition_info(tokens).block_ids
    cross_keys = (~same_block(ids)).unsqueeze(1)

    def cross_mass(locality: float):
        _, cache = trained_tiny.run_with_cache(tokens, Dial(locality), names_filter=names,
                                               return_type=None)
        return float((cache[names[0]].double() * cross_keys).sum(-1).mean()), cache

    m0, cache = cross_mass(0.0)
    counts = T.query_margins(cache[names[1]], ids)
    u_x = float((counts["n_x"] / (counts["n_in"] + counts["n_x"])).mean())
    delta0 = T.effective_margin(m0, u_x)
    beta = trained_tiny.cfg.barrier_sharpness
    assert T.predicted_cross_mass(delta0, u_x, 0.0, 1.0, beta) == pytest.approx(m0)
    measured, _ = cross_mass(lam)
    predicted = T.predicted_cross_mass(delta0, u_x, lam, 1.0, beta)
    assert predicted <= measured + 1e-9 and measured < m0


def test_the_sweep_against_the_formula_reads_a_cached_run():
    from sweep_examples import make_run

    from ui import views
    run = make_run("dial", lambdas=(0.0, 0.5, 1.0), taus=(0.5, 1.0))    # in-block 0.5 + λ_f/2
    rows = views.formula_against_sweep(run)
    assert {(r["locality"], r["attn_temperature"]) for r in rows} == {
        (lf, t) for lf in (0.0, 0.5, 1.0) for t in (0.5, 1.0)}
    at = {(r["locality"], r["attn_temperature"]): r for r in rows}
    assert [r for r in rows if r["calibration"]] == [at[0.0, 1.0]]
    assert at[0.0, 1.0]["predicted_in_block"] == pytest.approx(0.5)       # read off here
    assert at[1.0, 0.5]["predicted_in_block"] == at[1.0, 0.5]["measured_in_block"] == 1.0
    w = 0.5 ** 4.0                                # odds 1 · (1 − 0.5)^β, β = 4 (the default)
    assert at[0.5, 1.0]["predicted_in_block"] == pytest.approx(1 - w / (1 + w))
    assert at[0.5, 1.0]["measured_in_block"] == pytest.approx(0.75)
    caption = views.formula_caption(rows)
    assert caption.startswith("They agree at λ_f = 0, τ = 1") and "at λ_f = 1, where" in caption
    assert (f"off by {1 - w / (1 + w) - 0.75:.2f} along λ_f at τ = 1 (λ_f = 0.5: predicted "
            f"{1 - w / (1 + w):.2f}, measured 0.75)") in caption
    exact = [{**r, "predicted_in_block": r["measured_in_block"] + 0.01} for r in rows]
    assert "is off by" not in views.formula_caption(exact)
    assert "within 0.02 along λ_f at τ = 1 and within 0.02 along τ" in views.formula_caption(exact)
    leaky = make_run("attention", 0.6, noncausal=True)
    old = make_run("dial", taus=(0.5,))                                   # no τ = 1 to read off
    assert views.formula_against_sweep(leaky) == views.formula_against_sweep(old) == []
    penalty = make_run("attention", 0.5)
    assert views.formula_runs([penalty, leaky, old, run]) == ["dial", "attention-l0.5"]
