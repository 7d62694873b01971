"""Tradeoff points from synthetic sweep results (one point per λ, the papers' points labelled, leaks
kept apart, missing evals skipped); starting and watching sweeps is tests/test_launcher.py."""
import math
from pathlib import Path

import pytest
from sweep_examples import make_eval, make_run, seeded, synthetic_runs, with_partition

from localist_core.experiments import results as tr
from localist_core.experiments.report import PAPER


def _by_series(points: list[dict], word: str) -> dict[str, list[dict]]:
    out = {}
    for p in points:
        if word in p["series"]:
            out.setdefault(p["series"], []).append(p)
    return out


def test_penalty_runs_as_trained_give_one_point_per_lambda_per_form():
    by_series = _by_series(tr.curve_points(synthetic_runs()), "as trained")
    assert all(p["dial_locality"] == 0.0 and p["attn_temperature"] == 1.0
               for pts in by_series.values() for p in pts)
    assert len(by_series) == 2 and all("penalty" in s for s in by_series)
    att = next(v for s, v in by_series.items() if s.startswith("attention"))
    assert [p["locality"] for p in att] == [0.0, 0.5, 1.0]
    assert [p["label"] for p in att] == ["λ=0", "λ=0.5", "λ=1"]
    assert att[0]["entropy_bits"] > att[-1]["entropy_bits"]


def test_strategy_points_compare_partitions_at_equal_settings_only():
    runs = [with_partition(make_run("attention", lam), part)
            for lam in (0.2, 0.6, 1.0) for part in ("fixed", "punctuation", "recruited")]
    runs += [with_partition(make_run("attention", 0.6), "fixed", 10),        # another size
             with_partition(make_run("weights", 0.6), "punctuation"),         # another form
             with_partition(make_run("attention", 0.6, noncausal=True, run_id="leaky"),
                             "recruited"),
             make_run("dial")]
    pts = tr.strategy_points(runs)
    by = {}
    for p in pts:
        by.setdefault(p["series"], []).append(p["locality"])
    assert by == {"fixed (b=5)": [0.2, 0.6, 1.0], "punctuation": [0.2, 0.6, 1.0],
                  "recruited": [0.2, 0.6, 1.0]}
    assert all(p["dial_locality"] == 0.0 and p["attn_temperature"] == 1.0 for p in pts)
    # The generic curves keep to fixed blocks: no adaptive run is drawn twice.
    assert not [p for p in tr.curve_points(runs) if "partition" in p["run_id"]]


def test_the_dial_curve_and_the_dialled_penalties():
    pts = tr.curve_points(synthetic_runs())
    (dial,) = _by_series(pts, "dial protocol").values()
    assert [p["locality"] for p in dial] == [0.0, 0.5, 1.0]          # τ = 0.5 evals not repeated
    assert all(p["dial_locality"] == p["locality"] and p["attn_temperature"] == 1.0 for p in dial)
    dialled = [p for pts in _by_series(pts, "dialled").values() for p in pts]
    assert {(p["run_id"], p["dial_locality"]) for p in dialled} == {
        ("attention-l0.5", 0.5), ("attention-l1.0", 1.0), ("weights-l1.0", 1.0)}
    pairs = [(p["series"], p["locality"]) for p in pts]
    assert len(pairs) == len(set(pairs))                              # one point per (series, λ)


def test_papers_points_are_labelled_and_never_ours():
    papers = tr.paper_points()
    assert all(p["series"] == tr.PAPERS and p["label"].startswith("papers' report")
               for p in papers)
    ent = {p["locality"]: p["entropy_bits"] for p in papers if "entropy_bits" in p}
    assert ent == {1.0: 5.36, 0.0: 7.18}
    (ppl,) = [p for p in papers if "test_perplexity" in p]
    assert (ppl["locality"], ppl["test_perplexity"], ppl["test_accuracy"]) == (0.6, 4.65, 0.847)
    assert PAPER["test_perplexity_l06"] == 4.65
    assert not any(p["series"] == tr.PAPERS for p in tr.curve_points(synthetic_runs()))
    refs = tr.entropy_references(tr.curve_points(synthetic_runs()))
    assert [r["kind"] for r in refs] == ["ceiling", "paper", "paper"] and refs[0]["value"] == 4.0


def test_leaky_runs_are_flagged_and_kept_out_of_causal_curves():
    runs = synthetic_runs() + [make_run("weights", 0.5, leak_passed=False)]
    causal = {p["run_id"] for p in tr.curve_points(runs)}
    assert "attention-l0.6-noncausal_diagnostictrue" not in causal and "weights-l0.5" not in causal
    leaks = tr.leak_points(runs)
    assert {p["run_id"] for p in leaks} == {"attention-l0.6-noncausal_diagnostictrue",
                                            "weights-l0.5"}
    assert all(p["series"].startswith(tr.LEAK) and p["leak"] for p in leaks)
    assert "non-causal" in tr.leak_flag(runs[-2]) and "leak test" in tr.leak_flag(runs[-1])
    rows = {r["run"]: r for r in tr.runs_table(runs)}
    assert rows["weights-l0.5"]["leak test"] == "FAIL" and rows["dial"]["leak test"] == "pass"
    assert rows["attention-l0.6-noncausal_diagnostictrue"]["variant"] == "noncausal_diagnostictrue"
    assert len(tr.position_rows(runs[-2])) == 5


def test_missing_and_malformed_evals_are_skipped():
    no_tau1 = make_run("attention", 0.2, taus=(0.5,))
    broken = make_run("attention", 0.4)
    broken["metrics"]["valid"] = [{"perplexity": 3.0}, "junk", {"dial": None},
                                  make_eval(0.0, 1.0, 0.4, attention=False)]
    broken["metrics"].pop("test")
    empty = {"schema_version": 1, "run_id": "odd", "config": {}, "metrics": {}}
    nan = make_run("attention", 0.8)
    for ev in nan["metrics"]["valid"]:
        ev["perplexity"] = float("nan")
    pts = tr.curve_points([no_tau1, broken, empty, nan])
    assert [(p["run_id"], p["dial_locality"]) for p in pts] == [("attention-l0.4", 0.0)]
    assert pts[0]["entropy_bits"] is None and pts[0]["test_perplexity"] is None
    assert len(tr.runs_table([no_tau1, broken, empty, nan])) == 4
    assert tr.tau_family([empty], "odd") == [] and tr.position_rows(empty) == []


def test_tau_family_has_one_series_per_dial_value():
    fam = tr.tau_family(synthetic_runs(), "dial")
    assert {p["series"] for p in fam} == {"λ_f=0", "λ_f=0.5", "λ_f=1"}
    assert [p["attn_temperature"] for p in fam if p["series"] == "λ_f=0"] == [0.5, 1.0]


# -- seeds: grouping, mean ± sd and intervals on the curves --------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_curve_points_average_seeds_with_sd_and_interval():
    base = make_run("attention", 0.5)
    runs = [seeded(base, s, p, e) for s, p, e in ((1, 100.0, 1.0), (2, 102.0, 2.0),
                                                  (3, 107.0, 4.0))]
    pts = [p for p in tr.curve_points(runs) if "as trained" in p["series"]]
    assert len(pts) == 1
    p = pts[0]
    assert p["n"] == 3 and p["seeds"] == "1,2,3" and p["variant"] == ""
    assert p["perplexity"] == pytest.approx(103.0)
    assert p["perplexity_sd"] == pytest.approx(math.sqrt(13.0))
    assert p["perplexity_ci95"] == pytest.approx(4.303 * math.sqrt(13.0 / 3.0))
    assert p["entropy_bits"] == pytest.approx(7.0 / 3.0)
    assert p["entropy_bits_sd"] == pytest.approx(math.sqrt(7.0 / 3.0))   # SS 14/3, /2
    for k in ("in_block_mass", "pointer_fidelity_mass"):
        assert p[f"{k}_sd"] == pytest.approx(0.0) and p[f"{k}_ci95"] == pytest.approx(0.0)
    # The same settings with one seed: n = 1, no sd.
    single = [p for p in tr.curve_points([base]) if "as trained" in p["series"]]
    assert single[0]["n"] == 1 and single[0]["perplexity_sd"] is None
    assert single[0]["perplexity_ci95"] is None


def test_grouping_ignores_the_seed_and_nothing_else():
    base = make_run("attention", 0.5)
    a, b = seeded(base, 1, 100.0), seeded(base, 2, 110.0)
    other = seeded(base, 3, 200.0)
    other["config"]["train"]["lr"] = 0.123        # another setting, not another seed
    wider = seeded(base, 4, 300.0)
    wider["config"]["model"]["block_size"] = 7
    assert tr.group_key(a) == tr.group_key(b) != tr.group_key(other) != tr.group_key(wider)
    groups = tr.group_by_seed([a, other, b, wider])
    assert [[r["run_id"] for r in g] for g in groups] == [
        ["attention-l0.5-s1", "attention-l0.5-s2"], ["attention-l0.5-s3"],
        ["attention-l0.5-s4"]]
    pts = [p for p in tr.curve_points([a, other, b]) if "as trained" in p["series"]]
    assert sorted((p["n"], p["perplexity"]) for p in pts) == [(1, 200.0), (2, 105.0)]


def test_the_shipped_sweep_gives_one_seed_points_each_its_runs_own_point_as_in_the_study():
    """assets/sweep holds one seed of the study: every point is one run's (n = 1, no sd, no
    interval), equal to make_point of that run, and the attention penalty's λ = 0 point has the
    perplexity the study's seed-1234 λ = 0 result records at λ_f = 0, τ = 1."""
    import json

    from localist_core.experiments.cache import load_cache
    runs, problems = load_cache(REPO / "assets" / "sweep")
    assert not problems
    curves, strategies = tr.curve_points(runs), tr.strategy_points(runs)
    assert curves and strategies
    assert all(p["n"] == 1 and p["perplexity_sd"] is None and p["entropy_bits_ci95"] is None
               for p in curves + strategies)
    # Each point is exactly its one run's point, plus its rise over λ = 0 of its curve.
    by_id = {r["run_id"]: r for r in runs}
    rise = ("perplexity_rise", "perplexity_rise_ci95", "perplexity_rise_n",
            "perplexity_rise_established")
    for p in curves + strategies:
        ref = tr.make_point(by_id[p["run_id"]], p["locality"], p["dial_locality"],
                            p["attn_temperature"], series=p["series"], label=p["label"],
                            curve=p["curve"])
        assert {k: v for k, v in p.items() if k not in rise} == {
            k: v for k, v in ref.items() if k not in rise}
    (zero,) = [p for p in curves
               if p["series"] == "attention penalty · as trained" and p["locality"] == 0.0]
    study = json.loads((REPO / "assets" / "study" / "attention-l0.0.json").read_text())
    assert tr.seed_of(study) == 1234 and zero["run_id"] == study["run_id"]
    (ev,) = [v for v in study["metrics"]["valid"]
             if (v["dial"]["locality"], v["dial"]["attn_temperature"]) == (0.0, 1.0)]
    assert zero["perplexity"] == ev["perplexity"]


def test_each_curve_point_carries_its_rise_over_lambda_0_paired_by_seed():
    # Seed 3 is missing at λ = 1 and seed 4 at λ = 0: neither enters the pairs.
    runs = ([seeded(make_run("attention", 0.0), s, p) for s, p in ((1, 100.0), (2, 102.0),
                                                                   (3, 107.0))]
            + [seeded(make_run("attention", 1.0), s, p) for s, p in ((1, 130.0), (2, 134.0),
                                                                     (4, 500.0))])
    pts = {p["locality"]: p for p in tr.curve_points(runs) if p["curve"] == "trained"}
    end = pts[1.0]
    assert end["perplexity_rise_n"] == 2                  # seeds 1 and 2: rises 30 and 32
    assert end["perplexity_rise"] == pytest.approx(31.0)
    assert end["perplexity_rise_ci95"] == pytest.approx(12.706 * math.sqrt(2.0) / math.sqrt(2))
    assert end["perplexity_rise_established"]             # 31 ± 12.7 excludes 0
    assert pts[0.0]["perplexity_rise"] == 0.0 and not pts[0.0]["perplexity_rise_established"]
    # One seed: a rise, no interval, not established.
    one = {p["locality"]: p for p in tr.curve_points(runs[:1] + runs[3:4])
           if p["curve"] == "trained"}
    assert one[1.0]["perplexity_rise"] == pytest.approx(30.0)
    assert one[1.0]["perplexity_rise_ci95"] is None
    assert not one[1.0]["perplexity_rise_established"]
    # Noisy seeds: the interval includes 0, so not established.
    noisy = ([seeded(make_run("attention", 0.0), s, 100.0) for s in (1, 2, 3)]
             + [seeded(make_run("attention", 1.0), s, p) for s, p in ((1, 110.0), (2, 92.0),
                                                                      (3, 101.0))])
    (end,) = [p for p in tr.curve_points(noisy) if p["curve"] == "trained"
              and p["locality"] == 1.0]
    assert end["perplexity_rise_n"] == 3 and not end["perplexity_rise_established"]
    # A curve without a λ = 0 point (the dialled penalty) and the dial model.
    pts = tr.curve_points(synthetic_runs())
    assert {p["curve"] for p in pts} == set(tr.CURVES)
    assert all(p["perplexity_rise"] is None for p in pts if p["curve"] == "dialled")
    assert all(p["perplexity_rise_n"] == 0 for p in pts)  # unseeded runs pair nothing
