"""The pre-registered primary family: ten fixed rows in order, Holm's correction over all ten
(an untested row counting as p = 1), verdicts only with five common seeds, and the smallest
effect that matters separating "established" from "established, below the size that matters"."""
import math

import pytest
from sweep_examples import arrangement_run, make_run, seeded

from localist_core.experiments import family


def _penalty(lam: float, ppls) -> list[dict]:
    base = make_run("attention", lam, run_id=f"attention-l{lam:g}")
    return [seeded(base, s, p) for s, p in zip(range(1, len(ppls) + 1), ppls)]


def _row(rows, key):
    return next(r for r in rows if r["key"] == key)


def test_the_family_is_the_ten_pre_registered_rows_in_order():
    rows = family.primary_family([])
    assert [r["key"] for r in rows] == [f"F{i}" for i in range(1, 11)]
    assert all(r["n"] == 0 and r["p_holm"] is None for r in rows)
    assert all(r["verdict"] == "no verdict yet (0 of 5 seeds)" for r in rows)


def test_holm_counts_all_ten_rows_and_a_verdict_needs_five_seeds():
    zero = (100.0, 102.0, 101.0, 99.0, 103.0)
    costly = [p + d for p, d in zip(zero, (30.0, 31.0, 29.0, 30.5, 29.5))]   # about +30%
    rows = family.primary_family(_penalty(0.0, zero) + _penalty(0.2, costly))
    f3 = _row(rows, "F3")
    diffs = [30.0, 31.0, 29.0, 30.5, 29.5]
    mean, sd = sum(diffs) / 5, math.sqrt(sum((d - 30.0) ** 2 for d in diffs) / 4)
    assert f3["n"] == 5 and f3["mean"] == pytest.approx(mean)
    assert f3["relative"] == pytest.approx(30.0 / 101.0)
    t = mean / (sd / math.sqrt(5))
    assert f3["p"] < 1e-5 and f3["p_holm"] == pytest.approx(min(1.0, 10 * f3["p"]))
    assert f3["verdict"] == "established" and t > 40
    # the λ = 0 model against itself tests F2 with nothing: no run at 0.05
    assert _row(rows, "F2")["verdict"] == "no verdict yet (0 of 5 seeds)"


def test_a_small_established_effect_is_labelled_below_the_size_that_matters():
    zero = (100.0, 102.0, 101.0, 99.0, 103.0)
    tiny = [p + d for p, d in zip(zero, (1.0, 1.1, 0.9, 1.05, 0.95))]        # about +1%
    f3 = _row(family.primary_family(_penalty(0.0, zero) + _penalty(0.2, tiny)), "F3")
    assert f3["p_holm"] < 0.05 and f3["relative"] < 0.02
    assert f3["verdict"] == "established, below the size that matters"


def test_three_seeds_give_figures_but_no_verdict_and_noise_is_not_established():
    rows = family.primary_family(_penalty(0.0, (100.0, 102.0, 101.0))
                                 + _penalty(1.0, (140.0, 139.0, 141.0)))
    assert _row(rows, "F5")["n"] == 3 and _row(rows, "F5")["verdict"] == \
        "no verdict yet (3 of 5 seeds)"
    noisy = family.primary_family(_penalty(0.0, (100.0, 102.0, 101.0, 99.0, 103.0))
                                  + _penalty(1.0, (110.0, 95.0, 108.0, 97.0, 101.0)))
    assert _row(noisy, "F5")["verdict"] == "not established"


def test_block_rows_pair_a_partition_with_its_control_block_size():
    runs = ([arrangement_run("bigram", s, 240.0 + s, 3.9) for s in range(1, 6)]
            + [arrangement_run("fixed", s, 230.0, 3.96, block_size=7) for s in range(1, 6)])
    f9 = _row(family.primary_family(runs), "F9")
    assert f9["n"] == 5 and f9["mean"] == pytest.approx(13.0)
    assert f9["relative"] == pytest.approx(13.0 / 230.0)
