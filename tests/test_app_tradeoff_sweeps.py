"""AppTest of the Tradeoff and Sweeps pages on a synthetic sweep cache and on a missing, empty or
corrupt one: no exception, the headline with its error bars and its own axes, the other series
behind a picker, the papers' points labelled and leaks flagged in a chart of their own, a
multi-seed study shown first, clear notices. The Sweeps
page starts and stops sweeps only when the operator allows it (README "Security")."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import streamlit as st
import sweep_examples as examples
from streamlit.testing.v1 import AppTest

from ui import launcher as launch

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


@pytest.fixture()
def env(monkeypatch, tmp_path, tiny_dial_root):
    """The app pointed at a tiny checkpoint, a sweep cache and a user sweeps folder in tmp."""
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(tiny_dial_root))
    monkeypatch.setenv("LOCALIST_SWEEP_CACHE", str(tmp_path / "shipped"))
    monkeypatch.setenv("LOCALIST_STUDY_CACHE", str(tmp_path / "study"))
    monkeypatch.setenv("LOCALIST_APP_SWEEPS", str(tmp_path / "mine"))
    monkeypatch.delenv("LOCALIST_APP_SWEEPS_ENABLED", raising=False)   # the default: sweeps off
    monkeypatch.delenv("LOCALIST_APP_SWEEPS_MAX_JOBS", raising=False)
    st.cache_data.clear()
    return tmp_path


def write_cache(folder: Path, runs: list[dict], extra: dict[str, str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for run in runs:
        (folder / f"{run['run_id']}.json").write_text(json.dumps(run))
    for name, text in (extra or {}).items():
        (folder / name).write_text(text)


def visit(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [x.value for kind in ("info", "warning", "error", "success", "caption", "markdown")
             for x in getattr(at, kind)]
    return "\n".join(map(str, parts)) + "\n".join(e.label for e in at.expander)


BASELINES = json.dumps({"schema_version": 1, "valid": {
    "unigram_perplexity": 900.0, "bigram_kn_perplexity": 300.0}, "test": {
    "unigram_perplexity": 850.0, "bigram_kn_perplexity": 280.0}})


def specs(at: AppTest) -> list[dict]:
    """The page's charts in order: the headline first, the papers' and the leak's next to last."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def names(spec: dict) -> list[str]:
    return [t.get("name") for t in spec["data"]]


def test_tradeoff_page_plots_the_synthetic_sweep(env):
    write_cache(env / "shipped", examples.synthetic_runs(), {"baselines.json": BASELINES})
    at = visit("app_pages/tradeoff.py")
    assert not at.warning and not at.error and not at.info
    charts = specs(at)
    assert len(charts) == 7
    blob = json.dumps(charts[-2], ensure_ascii=False)      # the papers' and the leak's chart
    assert "papers' report: 5.36 bits at λ=1.0" in blob and "causal ceiling" in blob
    assert "LEAK · attention-l0.6-noncausal_diagnostictrue" in blob
    assert "unigram baseline (test)" in blob
    others = json.dumps(charts[:-2], ensure_ascii=False)   # every chart of our curves
    assert "papers' report" not in others and "LEAK" not in others
    assert any("non-causal diagnostic" in e.label for e in at.expander)
    assert "every point is one training seed" in texts(at)
    at.selectbox(key="tau_run").set_value("attention-l0.5").run()
    assert not at.exception
    at.selectbox(key="tradeoff_metric").set_value("in_block_mass").run()
    assert not at.exception
    at.segmented_control(key="tradeoff_x").set_value("entropy_bits").run()
    assert not at.exception and specs(at)[0]["layout"]["xaxis"]["title"]["text"].startswith(
        "attention entropy")


def test_the_picker_is_off_by_default_and_a_picked_series_joins_the_charts(env):
    write_cache(env / "shipped", examples.synthetic_runs())
    at = visit("app_pages/tradeoff.py")
    picker = at.multiselect(key="tradeoff_series")
    assert picker.value == [] and "weights penalty, trained for one λ" in picker.options
    headline = ["trained for one λ", "one model, dial turned (β as trained)"]
    here = "you are here (λ = 0)"                         # the sidebar's λ on the dial curve
    assert names(specs(at)[0]) == headline + [here]       # legends in words, not series keys
    picker.set_value(["weights penalty · as trained"]).run()
    assert not at.exception
    assert names(specs(at)[0]) == headline + ["weights penalty, trained for one λ", here]
    assert "weights penalty, trained for one λ" in names(specs(at)[1])   # entropy vs λ too


def _leaky_study() -> list[dict]:
    """multi_seed_runs with the leak's perplexity where the real one lies (3.3)."""
    runs = examples.multi_seed_runs()
    leak = next(r for r in runs if r["config"]["model"]["noncausal_diagnostic"])
    for split in ("valid", "test"):
        for ev in leak["metrics"][split]:
            ev["perplexity"] = 3.3
    return runs


def test_you_are_here_sits_on_the_dial_curve_at_the_sidebars_lambda(env):
    write_cache(env / "shipped", examples.synthetic_runs())
    at = visit("app_pages/tradeoff.py")
    at.sidebar.slider(key="lam").set_value(0.45).run()
    assert not at.exception
    head = specs(at)[0]
    star = next(t for t in head["data"] if t["name"].startswith("you are here"))
    dial = next(t for t in head["data"] if t["name"].startswith("one model, dial turned"))
    assert star["name"] == "you are here (λ = 0.5)"        # the nearest λ_f evaluated
    points = list(zip(dial["x"], dial["y"]))
    assert (star["x"][0], star["y"][0]) in points


def test_a_multi_seed_study_is_shown_first_with_error_bars_and_its_own_axes(env):
    write_cache(env / "shipped", examples.synthetic_runs())
    write_cache(env / "study", _leaky_study(), {"baselines.json": BASELINES})
    at = visit("app_pages/tradeoff.py")
    assert at.selectbox(key="tradeoff_cache").value.startswith("Multi-seed study")
    assert "a point averages up to 3 training seeds" in texts(at)
    assert "over 3 paired seeds excludes 0" in texts(at)
    head = specs(at)[0]
    penalty = next(t for t in head["data"] if t["name"] == "trained for one λ")
    assert penalty["error_y"]["visible"] and min(penalty["error_y"]["array"]) > 0
    # The headline's axes are ours: the leak (3.3) and the papers' 4.65 lie outside them, and
    # the chart of their own reaches both.
    lo, hi = head["layout"]["yaxis"]["range"]
    ys = [y for t in head["data"] for y in t["y"]]
    assert lo <= min(ys) and max(ys) <= hi and lo > 50
    papers = specs(at)[-2]
    assert papers["layout"]["yaxis2"]["range"][0] < math.log10(3.3)
    # The shipped single-seed cache is one choice away, and says so.
    at.selectbox(key="tradeoff_cache").set_value(
        next(o for o in at.selectbox(key="tradeoff_cache").options if o.startswith("Shipped"))
    ).run()
    assert not at.exception and "every point is one training seed" in texts(at)


def test_a_single_seed_study_is_offered_but_not_shown_first(env):
    write_cache(env / "shipped", examples.synthetic_runs())
    write_cache(env / "study", [examples.seeded(examples.make_run("attention", 0.0), 2, 170.0)])
    at = visit("app_pages/tradeoff.py")
    cache = at.selectbox(key="tradeoff_cache")
    assert cache.value.startswith("Shipped") and cache.options[0].startswith("Multi-seed study")
    cache.set_value(cache.options[0]).run()
    assert not at.exception and "has only λ = 0" in texts(at)


@pytest.mark.parametrize("setup,notice", [
    ("missing", "There is no sweep cache"),
    ("empty", "holds no finished runs"),
    ("corrupt", "holds no finished runs"),
])
def test_tradeoff_page_without_usable_results_explains_why(env, setup, notice):
    if setup != "missing":
        write_cache(env / "shipped", [], {"progress.json": "{}"} if setup == "empty" else
                    {"broken.json": "{not json", "old.json": json.dumps(
                        {"schema_version": 99, "run_id": "x", "config": {}, "metrics": {}})})
    at = visit("app_pages/tradeoff.py")
    assert notice in texts(at) and not at.get("plotly_chart")
    if setup == "corrupt":
        warned = " ".join(w.value for w in at.warning)
        assert "corrupt JSON" in warned and "schema\\_version 99" in warned


def test_sweeps_page_lists_runs_and_flags_leaks(env):
    write_cache(env / "shipped", examples.synthetic_runs(), {"bad.json": "[]"})
    at = visit("app_pages/sweeps.py")
    (table,) = at.dataframe
    assert len(table.value) == len(examples.synthetic_runs())
    assert {"leak test", "in-block", "recent-b", "shifted", "uniform", "git commit"} <= set(
        table.value.columns)
    warned = " ".join(w.value for w in at.warning)
    assert "A leak, trained at λ = 0\\.6" in warned and "not a sweep result" in warned
    assert "No sweep has run" in texts(at)


def test_sweeps_page_offers_the_study_cache_and_its_progress(env):
    write_cache(env / "shipped", examples.synthetic_runs())
    write_cache(env / "study", examples.multi_seed_runs())
    (env / "study" / "progress.json").write_text(json.dumps(
        {"pid": os.getpid(), "updated": time.time(), "runs_done": 1, "runs_total": 4}))
    at = visit("app_pages/sweeps.py")
    bars = [p.proto.text.replace("\\", "") for p in at.get("progress")]
    assert any(t.startswith("Multi-seed study") and "1 of 4" in t for t in bars), bars
    options = at.radio(key="sweeps_browse").options
    assert options[0].startswith("Shipped sweeps") and options[1].startswith("Multi-seed study")
    at.radio(key="sweeps_browse").set_value(options[1]).run()
    assert len(at.dataframe[0].value) == len(examples.multi_seed_runs())


@pytest.mark.parametrize("setup", ["missing", "corrupt"])
def test_sweeps_page_without_a_cache_gives_notices(env, setup):
    if setup == "corrupt":
        write_cache(env / "shipped", [], {"x.json": "\x00\x01garbage",
                                          "progress.json": "{broken"})
    (env / "mine" / "empty-one" / "cache").mkdir(parents=True)
    at = visit("app_pages/sweeps.py")
    assert ("There is no sweep cache" if setup == "missing" else "holds no finished runs") \
        in texts(at)
    browse = at.radio(key="sweeps_browse")
    assert browse.options[1] == "Sweep empty-one"
    browse.set_value(browse.options[1]).run()
    assert not at.exception and "holds no finished runs" in texts(at)
    assert str(env) not in texts(at)


# -- starting and stopping ----------------------------------------------------------------------

SWEEP_LIKE = [sys.executable, "-c", "import time; time.sleep(60)", "localist_core", "sweep"]


def fake_sweep() -> subprocess.Popen:
    """A live process whose command line looks like a sweep's, in a session of its own."""
    proc = subprocess.Popen(SWEEP_LIKE, start_new_session=True)
    for _ in range(200):
        try:
            if b"sweep" in open(f"/proc/{proc.pid}/cmdline", "rb").read():
                break
        except OSError:
            pass
        time.sleep(0.01)
    return proc


def end(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def running(env: Path, name: str, proc: subprocess.Popen) -> None:
    """A sweep ``name`` under the root, one run done out of three, written by ``proc``."""
    cache = env / "mine" / name / "cache"
    cache.mkdir(parents=True)
    (cache / "progress.json").write_text(json.dumps({
        "pid": proc.pid, "updated": time.time(), "runs_total": 3, "runs_done": 1,
        "current": "attention-l0.5", "phase": "train"}))


def test_sweeps_are_off_by_default_a_notice_and_no_form_or_stop(env):
    busy = fake_sweep()
    try:
        running(env, "busy", busy)
        at = visit("app_pages/sweeps.py")
        notice = " ".join(i.value for i in at.info)
        assert "turned off" in notice and "LOCALIST_APP_SWEEPS_ENABLED" in notice
        assert "python -m localist_core sweep" in notice
        assert not at.get("form") and not at.text_input and not at.button
        assert any("Run 2 of 3: attention-l0.5 (train)" in p.proto.text.replace("\\", "")
                   for p in at.get("progress"))   # progress is still visible
        assert busy.poll() is None
    finally:
        end(busy)


def _form(at: AppTest, **values) -> AppTest:
    for label, v in values.items():
        next(w for w in at.text_input if w.label == label).set_value(v)
    next(b for b in at.button if b.label == "Start sweep").click()
    return at.run()


def test_sweep_form_refuses_bad_input_paths_and_unbounded_overrides(env, monkeypatch):
    monkeypatch.setenv("LOCALIST_APP_SWEEPS_ENABLED", "1")
    at = visit("app_pages/sweeps.py")
    assert not at.info or "turned off" not in " ".join(i.value for i in at.info)
    _form(at, **{"λ values": "0, 2", "Overrides (key=value …)": "nonsense=1"})
    errors = " ".join(e.value for e in at.error)
    assert "outside \\[0, 1\\]" in errors and "unknown key" in errors
    for name in ("../escape", str(env / "abs"), "a/b"):
        _form(at, **{"Sweep name": name, "λ values": "0", "Overrides (key=value …)": ""})
        assert "Sweep name" in " ".join(e.value for e in at.error) and not at.exception
    _form(at, **{"Sweep name": "ok", "Overrides (key=value …)":
                 "max_steps=100000000 d_model=1000000000"})
    errors = " ".join(e.value for e in at.error).replace("\\", "")
    assert "max_steps=100000000 is above the limit 5000" in errors
    assert "d_model=1000000000 is above the limit 512" in errors
    assert not at.success and not at.exception
    assert not (env / "escape").exists() and not (env / "abs").exists()
    assert not (env / "mine").exists() or not any((env / "mine").iterdir())
    assert str(env) not in " ".join(e.value for e in at.error)


def test_a_sweep_starts_is_listed_and_the_job_limit_refuses_a_second(env, monkeypatch):
    monkeypatch.setenv("LOCALIST_APP_SWEEPS_ENABLED", "1")
    real = launch.sweep_command
    monkeypatch.setattr(launch, "sweep_command", lambda req, python=sys.executable, shown=False:
                        real(req, python, shown) if shown else SWEEP_LIKE)
    at = visit("app_pages/sweeps.py")
    _form(at, **{"Sweep name": "first", "λ values": "0"})
    assert not at.error and not at.exception, [e.value for e in at.error]
    assert "Started sweep first" in at.success[0].value.replace("\\", "")
    (code,) = at.code
    assert code.value.startswith("python -m localist_core sweep --config tiny")
    assert '"$LOCALIST_APP_SWEEPS"/first/cache' in code.value
    assert str(env) not in code.value and sys.executable not in code.value
    pid = json.loads((env / "mine" / "first" / launch.LAUNCH_FILE).read_text())["pid"]
    try:
        _form(at, **{"Sweep name": "second"})
        errors = " ".join(e.value for e in at.error).replace("\\", "")
        assert "1 sweep(s) already running" in errors and not at.success
        assert not (env / "mine" / "second").exists()
    finally:
        os.killpg(pid, signal.SIGKILL)   # started in this process: kill and reap it
        os.waitpid(pid, 0)


def test_every_visitor_sees_running_sweeps_and_can_stop_one(env, monkeypatch):
    monkeypatch.setenv("LOCALIST_APP_SWEEPS_ENABLED", "1")
    busy = fake_sweep()
    try:
        running(env, "busy", busy)
        at = visit("app_pages/sweeps.py")
        assert any("busy: Run 2 of 3: attention-l0.5 (train)" in p.proto.text.replace("\\", "")
                   for p in at.get("progress"))
        assert f"pid {busy.pid}" in texts(at)
        at.button(key="stop_busy").click().run()
        assert not at.exception
        assert busy.wait(timeout=10) == -signal.SIGTERM
        assert f"Sent a stop signal to sweep busy (pid {busy.pid})" in " ".join(
            x.value for x in at.success).replace("\\", "")
    finally:
        end(busy)
    at = visit("app_pages/sweeps.py")
    assert "Stopped after 1 of 3 runs" in " ".join(w.value for w in at.warning).replace("\\", "")
    assert not any(b.key == "stop_busy" for b in at.button)


HOSTILE = ["", " ", "*x* [a](http://e) <script>alert(1)</script> `c` $x$", "\x00\x01", "1e309",
           "nan, inf, -0", "9" * 5000, "é" * 300, "=" * 50, "a=b=c ==", "../" * 40,
           "max_steps=1e9", "λ"]


def test_hostile_form_input_never_raises(env, monkeypatch):
    monkeypatch.setenv("LOCALIST_APP_SWEEPS_ENABLED", "1")
    at = visit("app_pages/sweeps.py")
    for text in HOSTILE:
        _form(at, **{label: text for label in ("Sweep name", "λ values", "τ values",
                                               "Overrides (key=value …)")})
        assert not at.exception and at.error and not at.success, text
        assert all("<script>" not in e.value for e in at.error)   # escaped by ui.plain
    assert not (env / "mine").exists() or not any((env / "mine").iterdir())


def _verdicts(at: AppTest) -> list[dict]:
    """The rows of the block comparison's table of paired differences."""
    (table,) = [d.value for d in at.dataframe if "p (uncorrected)" in d.value.columns]
    assert {"partition", "control", "metric", "n", "mean difference", "95% interval"} <= set(
        table.columns)
    assert "verdict" not in table.columns              # readings, not findings
    return table.to_dict("records")


def test_where_blocks_fall_sets_each_partition_against_its_context_matched_control(env):
    from sweep_examples import block_runs
    write_cache(env / "shipped", block_runs())
    at = visit("app_pages/tradeoff.py")
    picker = at.selectbox(key="tradeoff_blocks_lam")          # λ = 0.6 and 1 qualify
    assert picker.value == 0.6 and picker.options == ["λ = 0.6", "λ = 1"]
    blocks = next(s for s in specs(at) if "fixed blocks (b = block size)" in names(s))
    assert names(blocks)[:3] == ["fixed blocks (b = block size)", "punctuation blocks",
                                 "recruited blocks"]
    rows = _verdicts(at)
    assert {(r["partition"], r["control"]) for r in rows} == {
        (p, f"fixed blocks of {b}") for p in ("punctuation blocks", "recruited blocks")
        for b in (5, 7)} | {("recruited blocks", "punctuation blocks")}   # and against the last
    from localist_core.experiments.comparisons import DIFF_METRICS
    from ui.views import DIFFERENCE_LABELS
    assert {r["metric"] for r in rows} == {DIFFERENCE_LABELS[m] for m in DIFF_METRICS}
    assert {(r["partition"], r["control"], r["metric"]) for r in rows
            if r["p (uncorrected)"] not in ("—",) and (r["p (uncorrected)"] == "< 0.001"
                                                      or float(r["p (uncorrected)"]) < 0.05)} == {
        ("punctuation blocks", "fixed blocks of 5", "valid perplexity"),
        ("punctuation blocks", "fixed blocks of 7", "valid perplexity")}
    assert "nearest to fixed blocks of 7 (3.96)" in texts(at)
    picker.set_value(1.0).run()
    assert not at.exception
    assert {r["p (uncorrected)"] for r in _verdicts(at)} == {"—"}       # one seed: no test


def test_where_blocks_fall_without_visible_keys_still_gives_the_table(env):
    from sweep_examples import block_runs
    runs = block_runs(seeds=(1,))
    for run in runs:
        for ev in run["metrics"]["valid"]:
            ev["attention"].pop("visible_in_block_keys")
    write_cache(env / "shipped", runs)
    at = visit("app_pages/tradeoff.py")
    assert "were evaluated before the number of in-block keys" in texts(at)
    assert not any("fixed blocks (b = block size)" in names(s) for s in specs(at))
    assert {r["p (uncorrected)"] for r in _verdicts(at)} == {"—"}
