"""Starting sweeps from the app is safe (README "Security"): off unless the operator turns it on,
confined to one root folder, every override and list bounded, one global job limit taken
atomically, a stop that signals only our sweeps, and no server path shown to a visitor.

No real training runs here except the one tiny end-to-end sweep: the others start a harmless
sleeping process in place of the sweep command.
"""
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from localist_core.experiments.cache import load_cache
from localist_core.model.config import ModelConfig, TrainConfig
from localist_core.paths import REPO
from ui import launch_limits as limits
from ui import launch_root
from ui import launcher as launch

SLEEP = ("import sys, time, subprocess\n"
         "if len(sys.argv) > 3: open(sys.argv[3], 'w').write(str(subprocess.Popen("
         "['sleep', '60']).pid))\n"
         "time.sleep(60)")


@pytest.fixture()
def root(monkeypatch, tmp_path):
    """Sweeps on, the root in tmp, one job at a time, no extra checkpoint folders."""
    monkeypatch.setenv(launch_root.ENABLED_VAR, "1")
    monkeypatch.setenv(launch_root.ROOT_VAR, str(tmp_path / "root"))
    monkeypatch.delenv(launch_root.MAX_JOBS_VAR, raising=False)
    monkeypatch.delenv("LOCALIST_CHECKPOINT_DIRS", raising=False)
    return (tmp_path / "root").resolve()


@pytest.fixture()
def fake(monkeypatch, tmp_path):
    """The sweep command replaced by a sleeper whose command line looks like a sweep's; every
    process it starts is killed at the end. ``fake.child_file(name)`` names the file where a
    sleeper writes the pid of its own child (same process group)."""
    real = launch.sweep_command
    procs = []

    def command(req, python=sys.executable, shown=False):
        if shown:
            return real(req, python, shown)
        return [python, "-c", SLEEP, "localist_core", "sweep", str(tmp_path / f"{req.name}.child")]

    real_start = launch.start_sweep

    def start(req, low_priority=True):
        proc = real_start(req, low_priority)
        procs.append(proc)
        return proc

    monkeypatch.setattr(launch, "sweep_command", command)
    yield type("Fake", (), {"start": staticmethod(start), "procs": procs,
                            "child_file": staticmethod(lambda n: tmp_path / f"{n}.child")})
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()


def request(name="my-sweep", **kw):
    args = dict(protocols=["attention", "dial"], lambdas="0, 0.5 1", taus="1", config="tiny",
                overrides="max_steps=5", eval_tokens=500)
    return limits.check_request(name, **{**args, **kw})


def good(name="my-sweep", **kw) -> limits.SweepRequest:
    req, errors = request(name, **kw)
    assert req is not None and not errors, errors
    return req


def spawn(argv: list[str]) -> subprocess.Popen:
    """Start a process and wait until it has exec'd (until then /proc shows the parent)."""
    proc = subprocess.Popen(argv)
    for _ in range(200):
        try:
            if b"sleep" in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                break
        except OSError:
            pass
        time.sleep(0.01)
    return proc


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended (no process, or a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


def record(root: Path, name: str, pid: int) -> Path:
    """A launch record for sweep ``name`` naming ``pid``, as start_sweep writes it."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / launch.LAUNCH_FILE).write_text(json.dumps({"pid": pid, "started": time.time()}))
    return folder


# -- off by default -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,on", [
    (None, False), ("", False), ("0", False), ("false", False), ("no", False), ("off", False),
    ("2", False), ("enable", False), ("1", True), ("true", True), ("YES", True), (" On ", True),
])
def test_only_the_operator_turns_sweeps_on(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv("LOCALIST_APP_SWEEPS_ENABLED", raising=False)
    else:
        monkeypatch.setenv("LOCALIST_APP_SWEEPS_ENABLED", value)
    assert launch_root.sweeps_enabled() is on


def test_a_visitor_request_is_refused_by_default(root, fake, monkeypatch):
    req = good()
    monkeypatch.delenv(launch_root.ENABLED_VAR)
    none, errors = request()
    assert none is None and len(errors) == 1
    assert "turned off" in errors[0] and launch_root.ENABLED_VAR in errors[0]
    with pytest.raises(launch.SweepsDisabled, match=launch_root.ENABLED_VAR):
        launch.start_sweep(req)
    with pytest.raises(launch.SweepsDisabled):
        launch.stop_sweep("my-sweep")
    assert not root.exists() and not fake.procs


# -- confinement ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "/tmp/x", "/etc", "../x", "..", ".", "x/../../y", "a/b", "~/x", "", "   ", ".hidden",
    "-rf", "a b", "x\ny", "naïve", "a" * 65, "$HOME", "x;rm", "..\\x",
])
def test_names_that_are_paths_or_odd_are_refused(root, name):
    req, errors = request(name)
    assert req is None and any(e.startswith("Sweep name") for e in errors), errors


def test_a_link_inside_the_root_that_leads_out_is_refused(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir(parents=True)
    (root / "link").symlink_to(outside)
    (root / "deep").mkdir()
    (root / "deep" / "cache").symlink_to(outside)
    (root / "up").symlink_to("..")
    (root / "loop").symlink_to(root / "loop")
    for name in ("link", "deep", "up", "loop"):
        req, errors = request(name)
        assert req is None and any("leads outside" in e or "link loop" in e for e in errors), \
            (name, errors)
    assert list(outside.iterdir()) == []


def test_every_accepted_name_stays_inside_the_root(root):
    """Property: any string is either refused or names a folder inside the root."""
    rng = random.Random(0)
    alphabet = "abcXYZ019-_./\\~ $\n"
    root.mkdir(parents=True)
    for _ in range(500):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 70)))
        try:
            folder = limits.sweep_folder(name, root)
        except ValueError as e:
            assert str(e).startswith("Sweep name")
            continue
        assert folder.parent == root and folder.resolve().parent == root, name
        assert limits.NAME.fullmatch(folder.name) and len(folder.name) <= 64


def test_the_derived_folders_are_under_the_root(root):
    req = good("sweep-1.a_b")
    assert req.cache_dir == root / "sweep-1.a_b" / "cache"
    assert req.runs_dir == root / "sweep-1.a_b" / "runs"


@pytest.mark.parametrize("where", ["assets", "assets/sweep/x", ".", "..", "ckpt-parent",
                                   "shipped-parent"])
def test_a_misplaced_root_is_refused(root, monkeypatch, tmp_path, where):
    if where == "ckpt-parent":   # its checkpoints would be in every visitor's Checkpoint menu
        monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(root / "a" / "runs"))
    elif where != "shipped-parent":
        monkeypatch.setenv(launch_root.ROOT_VAR, str(REPO / where))
    req, errors = limits.check_request("a", ["dial"], "0", "1", "tiny",
                                       protected=(str(root / "s"),))
    assert req is None and errors and all(launch_root.ROOT_VAR in e for e in errors), errors
    assert not any(str(REPO) in e or str(tmp_path) in e for e in errors)


@pytest.mark.parametrize("where", ["ckpt-parent", "assets", "shipped-parent"])
def test_a_misplaced_root_lists_no_cache(root, monkeypatch, where):
    """Every page's cache menu (Tradeoff as well as Sweeps) gets the root check from
    app_caches itself: a misplaced root's caches are not listed."""
    (root / "a" / "cache").mkdir(parents=True)
    assert launch.app_caches() == {"a": root / "a" / "cache"}
    if where == "shipped-parent":
        shipped = (str(root / "a" / "cache"),)
        assert launch.app_caches(protected=shipped) == launch.app_caches(root, shipped) == {}
        return
    if where == "ckpt-parent":
        monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(root / "a" / "runs"))
    else:
        monkeypatch.setattr(launch_root, "ASSETS", root / "a")
    assert launch.app_caches() == launch.app_caches(root) == {}


def test_the_launcher_takes_the_projects_paths_from_one_place(root):
    """The prompts an app sweep caches and the folders the root must keep clear of are
    localist_core.paths's."""
    from localist_core.paths import ASSETS, CHECKPOINT_DIR, PROMPTS_FILE
    assert REPO / launch.PROMPTS == PROMPTS_FILE
    assert launch.sweep_command(good())[launch.sweep_command(good()).index("--prompts") + 1] \
        == launch.PROMPTS
    assert launch_root.root_problems(ASSETS / "x") and launch_root.root_problems(CHECKPOINT_DIR)


def test_the_visitor_cannot_name_a_data_folder(root):
    import inspect
    assert "data_dir" not in inspect.signature(limits.check_request).parameters
    assert "--data-dir" not in launch.sweep_command(good())


# -- bounds ---------------------------------------------------------------------------------------

def _kind(key: str) -> type:
    for cls in (ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.name == key:
                return int if key == "cutoffs" else type(f.default)
    raise KeyError(key)


def _show(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def test_every_bound_names_a_config_key_and_the_shipped_presets_fit():
    for key, (lo, hi) in limits.OVERRIDE_BOUNDS.items():
        assert _kind(key) in (int, float) and lo <= hi, key
    assert "vocab_size" not in limits.OVERRIDE_BOUNDS
    for config in limits.APP_CONFIGS:
        assert limits.check_overrides(config, "") == ((), [])
    assert "paper" not in limits.APP_CONFIGS


def test_every_config_field_is_bounded_free_or_refused():
    """A field added to ModelConfig or TrainConfig is refused from the app until a bound (or a
    reason it costs nothing) is decided here."""
    kinds = {f.name for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)}
    known = (set(limits.OVERRIDE_BOUNDS) | set(limits.FREE_OVERRIDES)
             | set(limits.RESERVED_OVERRIDES) | set(limits.REFUSED_OVERRIDES))
    assert kinds - known == set(), "decide a bound in limits.OVERRIDE_BOUNDS"


@pytest.mark.parametrize("key", sorted(limits.OVERRIDE_BOUNDS))
@pytest.mark.parametrize("side", ["above", "below"])
def test_each_override_beyond_its_bound_is_refused(root, key, side):
    lo, hi = limits.OVERRIDE_BOUNDS[key]
    kind = _kind(key)
    if kind is int:
        value = int(hi) + 1 if side == "above" else int(lo) - 1
    else:
        value = hi * 2 + 1 if side == "above" else (lo / 2 if lo > 0 else -1.0)
    req, errors = request(overrides=f"{key}={_show(value)}")
    assert req is None, errors
    bound = _show(hi if side == "above" else lo)
    assert any(f"{key}={_show(value)}" in e and bound in e for e in errors), errors
    _, errors = request(overrides=f"{key}={_show(kind(hi))}")   # the bound itself is fine
    assert not any("above the limit" in e or "below the minimum" in e for e in errors), errors


@pytest.mark.parametrize("overrides,message", [
    ("vocab_size=10", "vocab_size comes from the corpus"),
    ("locality=0.3", "set protocol and λ with the form"),
    ("protocol=dial", "set protocol and λ with the form"),
    ("nonsense=1", "unknown key"),
    ("max_steps", "key=value"),
    ("lr=fast", "not a valid float"),
    ("cutoffs=1,2,3,4,5", "at most 4"),
    (" ".join(["seed=1"] * 21), "at most 20"),
    ("partition=" + "x" * 100, "longer than 100"),
    ("max_steps=5000 eval_interval=10", "evaluations during training"),
    ("d_model=100 n_heads=3", "divisible"),
])
def test_bad_overrides_are_refused_with_a_message(root, overrides, message):
    req, errors = request(overrides=overrides)
    assert req is None and any(message in e for e in errors), errors


def test_a_few_in_bound_overrides_are_accepted(root):
    req = good(overrides="max_steps=200 d_model=64 n_heads=4 partition=recruited bf16=false "
                         "cutoffs=100,500 threads=2")
    assert req.overrides[0] == "max_steps=200"


@pytest.mark.parametrize("kw,message", [
    ({"lambdas": ", ".join(str(i / 20) for i in range(12))}, "at most 11"),
    ({"lambdas": " ".join(["0.5"] * 100)}, "at most 11"), ({"lambdas": "0," * 5000}, "at most 11"),
    ({"overrides": "seed=1 " * 2000}, "at most 20"),
    ({"taus": ", ".join(str(1 + i / 10) for i in range(9))}, "at most 8"),
    ({"lambdas": "0, 1.5"}, "outside [0, 1]"), ({"lambdas": "a"}, "not a number"),
    ({"lambdas": ""}, "at least one"), ({"lambdas": "nan"}, "outside"), ({"taus": "0"}, "τ"),
    ({"protocols": []}, "Protocols"), ({"protocols": ["magic"]}, "magic"),
    ({"config": "paper"}, "not offered here"), ({"config": "huge"}, "Config"),
    ({"eval_tokens": 250_001}, "1..250,000"), ({"eval_tokens": 0}, "whole number"),
    ({"eval_tokens": -1}, "whole number"), ({"eval_tokens": True}, "whole number"),
    ({"protocols": ["attention", "weights", "dial"], "lambdas": "0 .1 .2 .3 .4 .5 .6 .7 .8 .9 1",
      "config": "cpu-ref", "overrides": "time_budget_s=3600"}, "at most 8 h"),
])
def test_lists_counts_and_budgets_are_bounded(root, kw, message):
    req, errors = request(**kw)
    assert req is None and any(message in e for e in errors), errors


def test_eleven_lambdas_and_eight_taus_are_fine(root):
    req = good(lambdas=",".join(str(i / 10) for i in range(11)),
               taus=",".join(str(0.5 + i / 4) for i in range(8)))
    assert len(req.lambdas) == 11 and len(req.taus) == 8


def test_the_shipped_cache_is_never_a_target(root):
    req, errors = limits.check_request("a", ["dial"], "0", "1", "tiny",
                                       protected=(str(root / "a" / "cache"),))
    assert req is None
    assert errors == [f"{launch_root.ROOT_VAR} must not overlap the shipped sweep cache."]
    # the refusal is for the overlap: the same request with the shipped cache elsewhere passes
    req, errors = limits.check_request("a", ["dial"], "0", "1", "tiny",
                                       protected=(str(root.parent / "elsewhere"),))
    assert req is not None and not errors


# -- the global job limit -------------------------------------------------------------------------

@pytest.mark.parametrize("value,jobs", [(None, 1), ("1", 1), ("3", 3), ("0", 1), ("-2", 1),
                                        ("many", 1), (" 2 ", 2)])
def test_max_jobs_reads_the_operator_setting(monkeypatch, value, jobs):
    if value is None:
        monkeypatch.delenv("LOCALIST_APP_SWEEPS_MAX_JOBS", raising=False)
    else:
        monkeypatch.setenv("LOCALIST_APP_SWEEPS_MAX_JOBS", value)
    assert launch_root.max_jobs() == jobs


def test_the_global_job_limit_refuses_a_second_sweep(root, fake, monkeypatch):
    first = fake.start(good("a"))
    assert launch.is_sweep_process(first.pid)
    with pytest.raises(launch.SweepBusy, match="already running"):   # the same sweep twice
        fake.start(good("a"))
    with pytest.raises(launch.SweepBusy, match=r"1 sweep\(s\) already running"):
        fake.start(good("b"))
    monkeypatch.setenv(launch_root.MAX_JOBS_VAR, "2")
    fake.start(good("b"))
    with pytest.raises(launch.SweepBusy, match=r"2 sweep\(s\) already running"):
        fake.start(good("c"))
    assert [r["name"] for r in launch.running_sweeps()] == ["b", "a"]
    assert len(fake.procs) == 2


def test_the_job_limit_holds_under_concurrent_starts(root, fake, monkeypatch):
    """Four sessions press Start at once; a slow Popen would let all four through without the
    root's lock."""
    real = subprocess.Popen

    def slow(*a, **k):
        time.sleep(0.2)
        return real(*a, **k)

    monkeypatch.setattr(launch.subprocess, "Popen", slow)
    reqs = [good(f"s{i}") for i in range(4)]
    outcomes = []

    def press(req):
        try:
            fake.start(req)
            outcomes.append("started")
        except launch.SweepBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=press, args=(r,)) for r in reqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(outcomes) == ["busy", "busy", "busy", "started"]


def test_the_number_of_sweep_folders_is_bounded(root, fake, monkeypatch):
    monkeypatch.setitem(limits.APP_LIMITS, "sweeps", 2)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    with pytest.raises(launch.LaunchError, match="at most 2 sweeps"):
        fake.start(good("c"))
    fake.start(good("a"))   # resuming a kept sweep is allowed


# -- stopping -------------------------------------------------------------------------------------

def test_stop_terminates_the_sweep_and_its_process_group(root, fake):
    proc = fake.start(good("a"))
    child = fake.child_file("a")
    for _ in range(300):
        if child.is_file() and child.read_text():
            break
        time.sleep(0.01)
    grandchild = int(child.read_text())
    assert launch.stop_sweep("a", proc.pid) == proc.pid
    assert proc.wait(timeout=10) == -signal.SIGTERM
    for _ in range(500):   # the sleeper's own child got the signal too (then init reaps it)
        if gone(grandchild):
            break
        time.sleep(0.01)
    assert gone(grandchild)
    assert launch.list_sweeps()[0]["state"] == "stopped"
    assert launch.sweep_status(root / "a" / "cache", launch_dir=root / "a")["state"] == "stopped"
    with pytest.raises(launch.LaunchError, match="not running"):
        launch.stop_sweep("a")


def test_stop_refuses_a_stale_pid_a_stranger_and_a_bad_name(root, fake, monkeypatch):
    proc = fake.start(good("a"))
    with pytest.raises(launch.LaunchError, match="not"):
        launch.stop_sweep("a", proc.pid + 1)
    with pytest.raises(launch.LaunchError, match="Sweep name"):
        launch.stop_sweep("../a")
    stranger = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    lookalike = spawn([sys.executable, "-c", "import time; time.sleep(60)", "localist_core"])
    try:
        record(root, "stranger", stranger.pid)
        with pytest.raises(launch.LaunchError, match="not running"):
            launch.stop_sweep("stranger")
        record(root, "lookalike", lookalike.pid)   # localist_core in its cmdline, no "sweep"
        with pytest.raises(launch.LaunchError, match="not a localist_core sweep"):
            launch.stop_sweep("lookalike", lookalike.pid)
        monkeypatch.delenv(launch_root.ENABLED_VAR)
        with pytest.raises(launch.SweepsDisabled):
            launch.stop_sweep("a", proc.pid)
        assert stranger.poll() is None and lookalike.poll() is None and proc.poll() is None
    finally:
        for p in (stranger, lookalike):
            p.kill()
            p.wait()


# -- what a visitor sees --------------------------------------------------------------------------

def test_the_shown_command_holds_no_server_path(root, fake, monkeypatch):
    req = good("a", overrides="max_steps=5 partition=recruited")
    shown = launch.shown_command(req)
    assert shown.startswith("python -m localist_core sweep --config tiny ")
    assert '--cache "$LOCALIST_APP_SWEEPS"/a/cache' in shown
    assert "--prompts assets/prompts.json" in shown and shown.endswith("partition=recruited")
    assert str(root) not in shown and sys.executable not in shown and " /" not in shown
    fake.start(req)
    log = (root / "a" / launch.LOG_FILE).read_text()
    assert not (root / "a" / "cache").exists()   # the cache holds only what run_sweep writes
    assert shown in log and str(root) not in log and sys.executable not in log
    monkeypatch.delenv(launch_root.ROOT_VAR)   # the default root lies inside the repository
    shown = launch.shown_command(good("a"))
    assert "--cache runs/app-sweeps/a/cache --runs-dir runs/app-sweeps/a/runs" in shown
    assert str(REPO) not in shown and " /" not in shown


def test_messages_and_logs_name_no_server_path(root, fake):
    root.mkdir(parents=True)
    (root / "f").write_text("")
    texts = request("f")[1] + request("x", overrides="max_steps=99999")[1]
    (root / "a").mkdir(parents=True)
    (root / "a" / launch.LOG_FILE).write_text(
        f"Traceback\n  File \"{REPO}/localist_core/x.py\"\n  File \"{sys.prefix}/lib/t.py\"\n"
        f"error: {REPO}/localist_core/x.py: bad\n{root}/a/cache/y.json\n")
    texts.append(launch.log_tail(root / "a"))
    blob = "\n".join(texts)
    assert "localist_core/x.py" in blob and "$LOCALIST_APP_SWEEPS/a/cache/y.json" in blob
    for secret in (str(REPO), sys.prefix, str(root)):
        assert secret not in blob


@pytest.mark.slow
def test_a_tiny_sweep_started_from_the_app_runs_to_the_end(root, monkeypatch, tiny_data_dir):
    monkeypatch.setenv("LOCALIST_DATA_DIR", str(tiny_data_dir))   # the server's own corpus
    req = good("e2e", protocols=["attention"], lambdas="0", taus="1",
               overrides="max_steps=4 eval_interval=10 ckpt_interval=10")
    proc = launch.start_sweep(req)
    try:
        assert proc.wait(timeout=120) == 0, launch.log_tail(req.folder, 40)
    finally:
        proc.kill()
    assert launch.sweep_status(req.cache_dir, launch_dir=req.folder)["state"] == "finished"
    runs, problems = load_cache(req.cache_dir)
    assert [r["run_id"] for r in runs] == ["attention-l0.0"] and not problems
    assert Path(runs[0]["checkpoint"]).resolve().parent == req.runs_dir
    assert launch.list_sweeps()[0]["name"] == "e2e"


SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)", "localist_core"]


def test_pid_alive_skips_zombies_strangers_and_junk():
    assert not any(launch.pid_alive(p) for p in (None, 0, -5, True, "12", 2**31 - 1))
    proc = spawn(SLEEPER)
    try:
        assert launch.pid_alive(proc.pid)
        proc.kill()
        time.sleep(0.3)                       # killed, not yet waited for: a zombie
        assert not launch.pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    stranger = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not launch.pid_alive(stranger.pid)  # alive, but not a sweep (a reused pid)
    finally:
        stranger.kill()
        stranger.wait()
