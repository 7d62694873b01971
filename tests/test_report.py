"""The report's seed figures: mean ± sd (n) where a point averages n > 1 seeds, the paired
partition-minus-fixed table with its relative change, p-value and BH q-value (exploratory: no
verdict), and the pre-registered family first; a single-seed cache's report has no seed tables."""
from pathlib import Path

import sweep_examples

from localist_core.experiments import report

REPO = Path(__file__).resolve().parents[1]


def _seeded_partitions(punct_ppl=(104.0, 105.0, 112.0)):
    ex = sweep_examples
    fixed = ex.make_run("attention", 0.5)
    punct = ex.make_run("attention", 0.5, run_id="attention-l0.5-partitionpunctuation")
    return ([ex.seeded(fixed, s, p) for s, p in zip((1, 2, 3), (100.0, 102.0, 107.0))]
            + [ex.seeded(punct, s, p, partition="punctuation")
               for s, p in zip((1, 2, 3), punct_ppl)])


def test_strategy_table_shows_mean_sd_and_n():
    table = report.strategy_table(_seeded_partitions())
    assert "| fixed (b=5) | 0.5 | 5 | 103.0 ± 3.6 (3) |" in table
    assert "| punctuation | 0.5 | 5 | 107.0 ± 4.4 (3) |" in table


def _cell(line: str, i: int) -> str:
    return line.strip("| ").split(" | ")[i]


def test_differences_table_gives_relative_change_p_and_q_but_no_verdict():
    table = report.differences_table(_seeded_partitions())
    lines = table.splitlines()
    assert lines[0].endswith("| n | mean diff | relative | sd | 95% CI | p | BH q |")
    ppl = next(line for line in lines if "| perplexity |" in line)
    # diffs 4, 3, 5: mean 4, sd 1, half-width 4.303/√3 = 2.484; over fixed's mean 103: +3.9%;
    # t = 4√3 = 6.93 at df 2, where P(|T| ≥ t) = 1 − t/√(t² + 2) = 0.0202
    assert ppl.startswith("| punctuation | fixed (b=5) | 0.5 | perplexity | 3 | 4.000 | +3.9% | "
                          "1.000 | [1.516, 6.484] | 0.0202 |")
    assert float(_cell(ppl, -1)) >= 0.0202          # a q-value is never below its p
    assert "established" not in table
    noisy = report.differences_table(_seeded_partitions((110.0, 95.0, 108.0)))
    ppl = next(line for line in noisy.splitlines() if "| perplexity |" in line)
    assert float(_cell(ppl, -2)) > 0.5              # diffs 10, -7, 1: t = 0.24


def test_differences_table_compares_with_every_fixed_size_as_a_control():
    """Fixed-7 (matched to punctuation in visible in-block keys) is a second control beside
    fixed-5: punctuation is compared with each, paired by seed."""
    ex = sweep_examples
    fixed7 = ex.make_run("attention", 0.5, run_id="attention-l0.5-block_size7")
    fixed7["config"]["model"]["block_size"] = 7
    runs = _seeded_partitions() + [ex.seeded(fixed7, s, p)
                                   for s, p in zip((1, 2, 3), (106.0, 104.0, 112.0))]
    ppl = [line for line in report.differences_table(runs).splitlines()
           if "| perplexity |" in line]
    assert ppl[0].startswith("| punctuation | fixed (b=5) | 0.5 |")
    # 104−106, 105−104, 112−112: mean −1/3, the interval spans 0
    assert ppl[1].startswith("| punctuation | fixed (b=7) | 0.5 | perplexity | 3 | -0.333 |")
    assert float(_cell(ppl[1], -2)) > 0.5 and len(ppl) == 2


def test_locality_table_pairs_each_lambda_with_lambda_zero_by_seed():
    ex = sweep_examples
    runs = [ex.seeded(ex.make_run("attention", lam), s, p)
            for lam, ppls in ((0.0, (100.0, 102.0, 107.0)), (0.5, (104.0, 105.0, 112.0)))
            for s, p in zip((1, 2, 3), ppls)]
    lines = report.locality_table(runs).splitlines()
    ppl = next(line for line in lines if line.startswith(
        "| attention penalty · as trained | 0.5 | perplexity |"))
    assert ppl.startswith("| attention penalty · as trained | 0.5 | perplexity | 3 | 4.000 | "
                          "+3.9% | 1.000 | [1.516, 6.484] | 0.0202 |")
    assert report.locality_table([ex.make_run("attention", 0.5)]) is None


def test_run_table_prints_lambda_as_written():
    run = sweep_examples.make_run("attention", 0.05, lambdas=(0.0, 0.05))
    run["run_id"] = "attention-l0.05"
    row = next(line for line in report.run_table([run]).splitlines()
               if line.startswith("| attention-l0.05 |"))
    assert row.startswith("| attention-l0.05 | 0.05 | 0 |")
    dialled = report.dialled_table([run]).splitlines()[-1]
    assert dialled.startswith("| attention-l0.05 | 0.05 |")


def test_seeds_table_lists_only_multi_seed_points():
    runs = _seeded_partitions()
    table = report.seeds_table(runs)
    assert "| attention penalty · as trained | 0.5 | 1,2,3 | 103.0 ± 3.6 (3) |" in table
    assert report.seeds_table([sweep_examples.make_run("attention", 0.5)]) is None


def test_strategy_table_step_1000_column_is_the_mean_over_seeds():
    """The column once printed the first seed's value in string order, not the mean."""
    runs = _seeded_partitions()
    for run, ppl in zip(runs, (300.0, 310.0, 320.0, 400.0, 410.0, 420.0)):
        run["training"]["history"] = [{"step": 1000, "valid_ppl": ppl}]
    table = report.strategy_table(runs)
    assert next(line for line in table.splitlines() if line.startswith("| fixed (b=5) |")) \
        .endswith("| 310.0 ± 10.0 (3) |")
    assert next(line for line in table.splitlines() if line.startswith("| punctuation |")) \
        .endswith("| 410.0 ± 10.0 (3) |")


def test_the_report_opens_with_the_primary_family():
    text = report.full_report(REPO / "assets" / "study")
    first = text.split("\n\n")[0].splitlines()
    assert first[0].startswith("## The primary family")
    assert [line.split(" | ")[0] for line in first[3:]] == [f"| F{i}" for i in range(1, 11)]
    assert "established" not in text.split("## Baselines")[1]     # the rest is exploratory


def test_single_seed_report_has_no_seed_sections():
    text = report.full_report(REPO / "assets" / "sweep")
    assert "Across seeds" not in text and "paired by seed" not in text and "±" not in text
    assert "## Partitions: fixed, punctuation, recruited" in text


def test_metric_columns_take_their_labels_from_metric_labels(monkeypatch):
    """One home for a metric's label (metrics.METRIC_LABELS): relabel every metric and each
    table's metric columns follow, with no label typed again."""
    from localist_core.analysis.metrics import METRIC_LABELS
    from localist_core.experiments import results
    relabelled = {k: f"<{k}>" for k in METRIC_LABELS}
    monkeypatch.setattr(report, "METRIC_LABELS", relabelled)
    monkeypatch.setattr(report, "ATT_COLUMNS", list(relabelled.items()))
    monkeypatch.setattr(results, "METRIC_LABELS", relabelled, raising=False)
    runs = _seeded_partitions() + [sweep_examples.make_run("attention", 0.5)]
    dial = next(r for r in sweep_examples.synthetic_runs() if r["protocol"] == "dial")
    heads = {name: table.splitlines()[0] for name, table in (
        ("run", report.run_table(runs)), ("dialled", report.dialled_table(runs)),
        ("tau", report.tau_table(dial)), ("strategy", report.strategy_table(runs)),
        ("seeds", report.seeds_table(runs)))}
    heads["runs_table"] = " | ".join(results.runs_table(runs)[0])
    old_labels = set(METRIC_LABELS.values())
    for name, head in heads.items():
        cells = {c.strip() for c in head.strip("| ").split("|")}
        assert any(c.startswith("<") for c in cells), name
        assert not cells & old_labels, (name, cells & old_labels)
        assert not any(c.startswith(label + " at") for c in cells for label in old_labels), name


def test_the_formula_table_has_a_row_per_usable_run_and_names_its_worst_miss():
    from localist_core.experiments.comparisons import formula_rows
    runs = sweep_examples.synthetic_runs()
    table = report.formula_table(runs)
    usable = [r for r in runs if formula_rows(r)]
    body = table.splitlines()[2:]
    assert len(body) == len(usable) and usable
    leaky = [r["run_id"] for r in runs if r["config"]["model"].get("noncausal_diagnostic")]
    assert not any(line.startswith(f"| {rid} |") for rid in leaky for line in body)
    dial = next(r for r in runs if r["run_id"] == "dial")
    rows = [r for r in formula_rows(dial) if not r["calibration"]]
    worst = max(rows, key=lambda r: abs(r["predicted_in_block"] - r["measured_in_block"]))
    line = next(x for x in body if x.startswith("| dial |"))
    assert f"{worst['measured_in_block']:.3f} vs {worst['predicted_in_block']:.3f}" in line
    agree = sum(abs(r["predicted_in_block"] - r["measured_in_block"]) <= report.AGREE
                for r in rows)
    assert f"{agree} of {len(rows)}" in line
    assert report.formula_table([]) is None


def test_a_lambda_is_printed_as_written():
    """λ = 0.05 once printed as 0.1 (one fixed decimal), beside the real λ = 0.1 runs."""
    base = sweep_examples.make_run("attention", 0.05, run_id="attention-l0.05")
    runs = [sweep_examples.seeded(base, s, p) for s, p in ((1, 100.0), (2, 101.0))]
    table = report.seeds_table(runs)
    assert "| 0.05 |" in table and "| 0.1 |" not in table


def test_lift_table_sets_each_setting_against_zero():
    runs = sweep_examples.multi_seed_runs()
    for run in runs:             # lifts 0.002, 0.003, 0.004 by seed at λ_f = 0, τ = 1
        seed = run["config"]["train"].get("seed")
        for ev in run["metrics"]["valid"]:
            if ev["dial"]["locality"] == 0.0 and ev["dial"]["attn_temperature"] == 1.0:
                ev["attention"]["pointer_fidelity_lift"]["mean"] = 0.001 * ((seed or 0) + 1)
    lines = report.lift_table(runs).splitlines()
    assert lines[0] == "| series | λ | n | mean lift | relative | sd | 95% CI | p | BH q |"
    # lifts 0.002, 0.003, 0.004: t = 3√3 = 5.20 at df 2, p = 1 − t/√(t² + 2) = 0.0351; a lift
    # against zero has no relative change
    assert any(line.startswith("| attention penalty · as trained | 0 | 3 | 0.003 | — | 0.001 | "
                               "[0.001, 0.005] | 0.0351 |") for line in lines)
    assert "pointer fidelity lift" in report.full_report(REPO / "assets" / "study")
    assert report.lift_table([sweep_examples.make_run("attention", 0.5)]) is None
