"""The statistics of the sweep results against hand computations: which values count, the
Student-t table, mean ± sd with its 95% interval, and the paired difference matched by seed."""
import math

import pytest

from localist_core.experiments import stats


def test_finite_keeps_finite_real_numbers_only():
    assert stats.finite(3) == 3.0 and isinstance(stats.finite(3), float)
    assert stats.finite(-2.5) == -2.5
    for v in (True, None, "1", float("nan"), float("inf"), 10 ** 400, [1.0]):
        assert stats.finite(v) is None, v


def test_student_t_table_and_summary_match_a_hand_computation():
    assert stats.t975(1) == 12.706 and stats.t975(2) == 4.303 and stats.t975(30) == 2.042
    assert stats.t975(31) == 1.96 and stats.t975(1000) == 1.96
    s = stats.summary([100.0, 102.0, 107.0])       # mean 103, deviations -3, -1, 4: SS 26, var 13
    assert s["n"] == 3 and s["mean"] == pytest.approx(103.0)
    assert s["sd"] == pytest.approx(math.sqrt(13.0))
    assert s["ci95"] == pytest.approx(4.303 * math.sqrt(13.0) / math.sqrt(3.0))
    assert stats.summary([5.0]) == {"mean": 5.0, "sd": None, "n": 1, "ci95": None}
    assert stats.summary([None, float("nan")])["n"] == 0


def test_paired_difference_matches_a_hand_computation():
    d = stats.paired_difference({1: 104.0, 2: 105.0, 3: 112.0, 9: 1.0}, {1: 100.0, 2: 102.0,
                                                                      3: 107.0})
    half = 4.303 * 1.0 / math.sqrt(3.0)            # diffs 4, 3, 5: mean 4, sd 1
    assert d["seeds"] == [1, 2, 3] and d["n"] == 3     # seed 9 has no partner
    assert d["mean"] == pytest.approx(4.0) and d["sd"] == pytest.approx(1.0)
    assert d["ci95"] == pytest.approx(half)
    assert (d["lo"], d["hi"]) == (pytest.approx(4.0 - half), pytest.approx(4.0 + half))
    assert d["established"]
    weak = stats.paired_difference({1: 1.0, 2: -1.0, 3: 2.0}, {1: 0.0, 2: 0.0, 3: 0.0})
    assert weak["lo"] < 0 < weak["hi"] and not weak["established"]
    one = stats.paired_difference({1: 3.0}, {1: 1.0})
    assert one["n"] == 1 and one["sd"] is None and not one["established"]


def test_t_p_value_meets_the_t_table_and_a_hand_computation():
    """P(|T| ≥ t975(df)) is 0.05 at every df of the table (both come from the same
    distribution), and at df = 2, P(|T| ≥ t) = 1 − t/√(t² + 2) by hand."""
    for df, t in enumerate(stats.T975, 1):
        assert stats.t_two_sided_p(t, df) == pytest.approx(0.05, abs=2e-4), df
    for t in (0.5, 2.0, 6.0):
        assert stats.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2))
        assert stats.t_two_sided_p(-t, 2) == stats.t_two_sided_p(t, 2)
    assert stats.t_two_sided_p(1.0, 1) == pytest.approx(0.5)     # Cauchy: atan(1) = π/4
    assert stats.t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    # p falls as |t| grows and as df grows at a fixed t
    assert stats.t_two_sided_p(3.0, 4) < stats.t_two_sided_p(2.0, 4)
    assert stats.t_two_sided_p(3.0, 9) < stats.t_two_sided_p(3.0, 4)
    with pytest.raises(ValueError):
        stats.t_two_sided_p(1.0, 0)


def test_paired_difference_carries_its_p_value_and_the_controls_mean():
    d = stats.paired_difference({1: 104.0, 2: 105.0, 3: 112.0}, {1: 100.0, 2: 102.0, 3: 107.0})
    t = 4.0 / (1.0 / math.sqrt(3.0))                # diffs 4, 3, 5: mean 4, sd 1
    assert d["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert d["base_mean"] == pytest.approx(103.0)
    assert stats.paired_difference({1: 2.0, 2: 2.0}, {1: 1.0, 2: 1.0})["p"] == 0.0
    assert stats.paired_difference({1: 1.0, 2: 1.0}, {1: 1.0, 2: 1.0})["p"] == 1.0
    assert stats.paired_difference({1: 3.0}, {1: 1.0})["p"] is None
