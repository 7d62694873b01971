"""Settings compared by seed from synthetic sweep results: partitions against fixed blocks, and
blocks against their context-matched control (builders: sweep_examples)."""
import pytest
from sweep_examples import (
    KEYS,
    PPL,
    arrangement_run,
    block_runs,
    make_run,
    multi_seed_runs,
    seeded,
    synthetic_runs,
)

from localist_core.experiments import comparisons as cp
from localist_core.experiments import results as tr


def test_partition_differences_pair_by_seed():
    fixed = make_run("attention", 0.5)
    punct = make_run("attention", 0.5, run_id="attention-l0.5-partitionpunctuation")
    runs = ([seeded(fixed, s, p) for s, p in ((1, 100.0), (2, 102.0), (3, 107.0))]
            + [seeded(punct, s, p, partition="punctuation")
               for s, p in ((1, 104.0), (2, 105.0), (3, 112.0))])
    series = {p["series"]: p for p in tr.strategy_points(runs)}
    assert series["punctuation"]["n"] == 3 and series["fixed (b=5)"]["n"] == 3
    rows = {r["metric"]: r for r in cp.partition_differences(runs)}
    assert set(rows) == set(cp.DIFF_METRICS)
    ppl = rows["perplexity"]
    assert ppl["partition"] == "punctuation" and ppl["locality"] == 0.5
    assert ppl["mean"] == pytest.approx(4.0) and ppl["sd"] == pytest.approx(1.0)
    assert ppl["established"]
    same = rows["in_block_mass"]                  # equal in every run: no difference
    assert same["mean"] == pytest.approx(0.0) and not same["established"]


def test_block_control_points_one_per_arrangement_with_its_visible_keys_seeds_merged():
    pts = cp.block_control_points(block_runs(), 0.6)
    assert [p["series"] for p in pts] == ["fixed (b=5)", "fixed (b=7)", "punctuation",
                                          "recruited"]
    assert [p["label"] for p in pts] == ["b=5", "b=7", "punctuation", "recruited"]
    assert [(p["arrangement"], p["block_size"]) for p in pts] == [
        ("fixed", 5), ("fixed", 7), ("punctuation", None), ("recruited", None)]
    for p in pts:                                                # seeds merged: mean, sd, n
        key = (p["arrangement"], p["block_size"] or 5)
        assert p["n"] == 3 and p["seeds"] == "1,2,3" and p["locality"] == 0.6
        assert p["visible_in_block_keys"] == pytest.approx(KEYS[key])
        assert p["perplexity"] == pytest.approx(sum(PPL[key]) / 3)
        assert p["perplexity_sd"] > 0
        assert p["dial_locality"] == 0.0 and p["attn_temperature"] == 1.0
        assert p["protocol"] == "attention" and not p["leak"]
    assert pts[3]["visible_in_block_keys_sd"] == pytest.approx(0.04)
    assert not any(p["run_id"].startswith(("weights", "attention-l0.6-d_model"))
                   or "noncausal" in p["run_id"] for p in pts)
    # One seed each: the same arrangements, unmerged.
    single = cp.block_control_points(block_runs(seeds=(1,)))
    assert [p["n"] for p in single] == [1] * 4 and single[0]["perplexity_sd"] is None


def test_block_control_localities_need_two_arrangements():
    runs = block_runs()
    assert cp.block_control_localities(runs) == [0.6, 1.0]        # λ = 0.2 has fixed-5 alone
    assert [p["series"] for p in cp.block_control_points(runs, 1.0)] == [
        "fixed (b=3)", "punctuation"]
    assert cp.block_control_points(runs, 0.2)[0]["series"] == "fixed (b=5)"
    assert cp.block_control_localities(synthetic_runs()) == []
    assert cp.fixed_sizes(runs) == [5, 3, 7]                      # the default first


def test_adaptive_partitions_are_paired_with_each_earlier_one():
    runs = block_runs()
    bigram = [arrangement_run("bigram", s, p, 3.92) for s, p in ((1, 221.0), (2, 222.5),
                                                                  (3, 220.9))]
    rows = cp.adaptive_differences(runs + bigram)
    pairs = list(dict.fromkeys((r["partition"], r["control"], r["locality"]) for r in rows))
    assert pairs == [("recruited", "punctuation", 0.6), ("bigram", "punctuation", 0.6),
                     ("bigram", "recruited", 0.6)]     # λ = 1 has punctuation alone
    ppl = {(r["partition"], r["control"]): r for r in rows if r["metric"] == "perplexity"}
    vs_punct = ppl[("bigram", "punctuation")]                  # −4, −4.7, −3.2 by seed
    assert vs_punct["n"] == 3 and vs_punct["mean"] == pytest.approx(-11.9 / 3)
    assert vs_punct["hi"] < 0 and vs_punct["established"]
    assert not ppl[("recruited", "punctuation")]["established"]   # 1.0, 8.8, −8.1
    # One seed in common leaves no interval; no seed in common, no row.
    lone = cp.adaptive_differences([r for r in runs if r["config"]["train"]["seed"] != 2]
                                   + bigram[1:2])
    assert not any(r["partition"] == "bigram" for r in lone)


def test_block_control_differences_are_the_reports_rows_at_one_lambda():
    runs = block_runs()
    rows = cp.block_control_differences(runs, 0.6)
    assert [(r["partition"], r["control"]) for r in rows[::len(cp.DIFF_METRICS)]] == [
        ("punctuation", "fixed (b=5)"), ("punctuation", "fixed (b=7)"),
        ("recruited", "fixed (b=5)"), ("recruited", "fixed (b=7)"),
        ("recruited", "punctuation")]
    every = [r for b in cp.fixed_sizes(runs) for r in cp.partition_differences(runs,
                                                                              block_size=b)]
    every += cp.adaptive_differences(runs)
    key = lambda r: (r["partition"], r["control"], r["metric"])   # noqa: E731
    assert sorted(map(key, rows)) == sorted(key(r) for r in every if r["locality"] == 0.6)
    established = {key(r) for r in rows if r["established"]}
    assert established == {("punctuation", "fixed (b=5)", "perplexity"),
                           ("punctuation", "fixed (b=7)", "perplexity")}
    vs7 = next(r for r in rows if key(r) == ("punctuation", "fixed (b=7)", "perplexity"))
    assert vs7["n"] == 3 and vs7["mean"] == pytest.approx(10.1) and vs7["lo"] > 0
    assert {cp.verdict(r) for r in rows} == {"established", "not established"}
    one = cp.block_control_differences(runs, 1.0)
    assert {(r["control"], cp.verdict(r)) for r in one} == {
        ("fixed (b=3)", "not established (n = 1)")}


def test_dial_differences_pair_each_dial_setting_with_the_penalty_model_of_its_lambda():
    runs = multi_seed_runs()
    rows = cp.dial_differences(runs)
    points = {(p["series"], p["locality"], p["seed"]): p for p in tr.curve_run_points(runs)}
    dial_lams = {lam for (s, lam, _) in points if s == "dial protocol"}
    penalty_lams = {lam for (s, lam, _) in points if s == cp.PENALTY_AS_TRAINED}
    assert {r["locality"] for r in rows} == dial_lams & penalty_lams and len(dial_lams) > 1
    assert {(r["series"], r["control"]) for r in rows} == {("dial protocol",
                                                            cp.PENALTY_AS_TRAINED)}
    for r in (r for r in rows if r["metric"] == "perplexity"):
        diffs = [points[("dial protocol", r["locality"], s)]["perplexity"]
                 - points[(cp.PENALTY_AS_TRAINED, r["locality"], s)]["perplexity"]
                 for s in (1, 2, 3)]
        assert r["n"] == 3 and r["mean"] == pytest.approx(sum(diffs) / 3)
    # No penalty model at the dial's λ, or no seed in common: no row.
    only_dial = [r for r in runs if r["protocol"] == "dial"]
    assert cp.dial_differences(only_dial) == []


def _with_lift(run: dict, lift: float) -> dict:
    """``run`` with its pointer-fidelity lift at λ_f = 0, τ = 1 set to ``lift``."""
    for ev in run["metrics"]["valid"]:
        if ev["dial"]["locality"] == 0.0 and ev["dial"]["attn_temperature"] == 1.0:
            ev["attention"]["pointer_fidelity_lift"]["mean"] = lift
    return run


def test_lift_intervals_set_each_setting_against_zero_its_uniform_baseline():
    runs = block_runs()
    bigram = [_with_lift(arrangement_run("bigram", s, 220.0, 3.92), lift)
              for s, lift in ((1, 0.003), (2, 0.004), (3, 0.005))]
    noisy = {1: -0.01, 2: 0.0, 3: 0.012}
    for run in runs:
        if run["run_id"].startswith("attention-l0.6-partitionpunctuation-s"):
            _with_lift(run, noisy[run["config"]["train"]["seed"]])
    rows = {(r["series"], r["locality"]): r for r in cp.lift_intervals(runs + bigram)}
    up = rows[("bigram", 0.6)]
    assert up["metric"] == cp.LIFT and up["n"] == 3 and up["seeds"] == [1, 2, 3]
    assert up["mean"] == pytest.approx(0.004) and up["lo"] > 0 and up["established"]
    spread = rows[("punctuation", 0.6)]
    assert spread["mean"] == pytest.approx(0.002 / 3) and not spread["established"]
    assert spread["lo"] < 0 < spread["hi"]
    # One seed: no interval. The leaky run and the weights run stay out of the partitions.
    assert rows[("punctuation", 1.0)]["n"] == 1 and rows[("punctuation", 1.0)]["lo"] is None
    assert not any("noncausal" in s or s.startswith("weights") for s, _ in rows
                   if s in ("punctuation", "bigram"))
    assert {s for s, _ in rows} >= {"punctuation", "recruited", "bigram"}


def test_holm_and_benjamini_hochberg_match_a_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far 0.06
    assert cp.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: 0.005·4/1 = 0.02, 0.01·4/2 = 0.02, 0.03·4/3 = 0.04, 0.04·4/4 = 0.04 (min from the top)
    assert cp.benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # A comparison with no test yet counts in Holm's m as p = 1 and stays None
    assert cp.holm([0.01, None]) == [pytest.approx(0.02), None]
    assert cp.benjamini_hochberg([0.01, None]) == [pytest.approx(0.01), None]
    assert cp.holm([0.9, 0.8]) == [1.0, 1.0]                     # capped at 1
    assert cp.holm([0.02, 0.03]) == pytest.approx([0.04, 0.04])  # 0.03·1 < 0.04: monotone
    rows = cp.with_q_values([{"p": 0.01}, {"p": None}, {"p": 0.04}])
    assert [r["q"] for r in rows] == [pytest.approx(0.02), None, pytest.approx(0.04)]
