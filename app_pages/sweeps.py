"""Sweeps: browse the cached runs and follow every sweep's progress (read from its cache's
progress.json, so it survives a page reload). When the operator allows it
(LOCALIST_APP_SWEEPS_ENABLED=1), visitors may also start a bounded λ-sweep under the app-sweeps
folder and stop a running one (README "Security"); the checks live in ui/launch_root.py (the
operator's switches), ui/launch_limits.py (the request) and ui/launcher.py (start and stop)."""
import time
from pathlib import Path

import streamlit as st

import ui
from ui import launch_budget, launch_limits, launch_root, views
from ui import launcher as launch
from ui.names import leak_title

s = ui.page_setup("Sweeps")
shipped = ui.sweep_cache()
# The project's own caches: the sweep cache and, when it exists, the multi-seed study's.
project_caches = {ui.cache_label("Shipped sweeps", shipped): shipped}
if Path(ui.study_cache()).is_dir():
    project_caches[ui.cache_label("Multi-seed study", ui.study_cache())] = ui.study_cache()
protected = ui.project_caches()
enabled = launch_root.sweeps_enabled()
root = launch_root.app_root()
misplaced = launch_root.root_problems(root, protected)
# A misplaced root (an operator's mistake) is neither listed nor written.
caches = launch.app_caches(root, protected)
ss = st.session_state


def stop(name: str, pid: int) -> None:
    """The Stop button: launcher.stop_sweep re-checks everything (enabled, pid, cmdline)."""
    try:
        launch.stop_sweep(name, pid)
    except (launch.LaunchError, OSError, ValueError) as e:
        ss["_stop_notice"] = ("error", str(e))   # ui.plain hides its paths
    else:
        ss["_stop_notice"] = ("success", f"Sent a stop signal to sweep {name} (pid {pid}). "
                                         f"Start the same sweep again to resume it.")


def when(stamp: float | None) -> str:
    """A launch record's start time, readable; 'unknown' for a missing or absurd one."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "unknown"
    except (OverflowError, OSError, ValueError):
        return "unknown"


def show_log(label: str, folder) -> None:
    """The tail of a sweep's log (server paths already replaced by launcher.log_tail)."""
    tail = launch.log_tail(folder)
    if tail:
        with st.expander(f"Log of {ui.plain(label)}", expanded=False):
            st.code(tail, language=None)


@st.fragment(run_every=3)
def progress() -> None:
    """Every sweep's progress, re-read every few seconds without blocking the page."""
    for proc in ui.launched_sweeps().values():
        proc.poll()
    # Shown until a run of this fragment completes: a stop often ends in st.rerun below.
    kind, text = ss.get("_stop_notice", (None, ""))
    if kind:
        getattr(st, kind)(ui.plain(text))
    states = ss.setdefault("_sweep_states", {})
    rows = [] if misplaced else launch.list_sweeps(root)
    statuses = {}
    for name, cache in project_caches.items():   # someone runs the CLI into a project cache
        statuses[name] = launch.sweep_status(cache)
        if statuses[name] is not None:
            st.progress(statuses[name]["fraction"],
                        text=ui.plain(f"{name}: {statuses[name]['text']}"))
            show_log(name, cache)
    if not rows and not any(statuses.values()):
        st.caption("No sweep has run in these folders yet.")
    for row in rows:
        name = row["name"]
        bar, button = st.columns([6, 1], vertical_alignment="center")
        bar.progress(row["fraction"], text=ui.plain(f"{name}: {row['text']}"))
        started = when(row["started"])
        bar.caption(ui.plain(f"{row['state']} · pid {row['pid'] or '–'} · started {started}"))
        if enabled and row["pid"] is not None:
            button.button("Stop", key=f"stop_{name}", on_click=stop, args=(name, row["pid"]),
                          help="Send SIGTERM to this sweep; finished runs are kept.")
        if row["state"] == "stopped":
            st.warning(ui.plain(f"{name}: {row['text']}"), icon="⚠️")
        show_log(name, root / name)   # an app sweep logs beside its cache
        before, states[name] = states.get(name), row["state"]
        if before in ("running", "starting") and row["state"] not in ("running", "starting"):
            st.rerun(scope="app")   # the sweep ended: refresh the table of runs
    ss.pop("_stop_notice", None)


st.subheader("Progress")
progress()

st.subheader("Cached runs")
folders = dict(project_caches)
folders.update({f"Sweep {name}": str(cache) for name, cache in caches.items()})
folder = folders[st.radio("Cache folder", list(folders), horizontal=True, key="sweeps_browse")]
if not Path(folder).is_dir():
    st.info(f"There is no sweep cache at {ui.plain(folder)} yet.")
else:
    runs, problems, _ = ui.sweep_results(folder)
    # A visitor's sweep folder is named by its sweep, not its server path.
    ui.show_notices([f"Refused cache file: {p}" for p in problems])
    if not runs:
        st.info(f"The sweep cache {ui.plain(folder)} holds no finished runs yet.")
    else:
        st.dataframe(views.runs_table(runs), hide_index=True, key="runs_table")
        st.caption("Headline figures at λ_f = 0, τ = 1 (valid split). In-block mass sits beside "
                   "its controls (recent-b, shifted blocks, uniform); a flagged run leaks the "
                   "future and is never part of a causal curve. The Tradeoff page plots them.")
        for run in runs:
            if views.leak_flag(run):
                st.warning(ui.plain(leak_title(run, views.leak_flag(run))), icon="⚠️")

st.subheader("Start a sweep")
if not enabled:
    st.info(f"**Starting sweeps is turned off on this server**: visitors can browse the cached "
            f"runs and follow progress here, but cannot start or stop training jobs. An operator "
            f"turns it on by starting the app with `{launch_root.ENABLED_VAR}=1` (and "
            f"`{launch_root.MAX_JOBS_VAR}=N` to allow more than one sweep at a time). On the "
            f"server's command line, `python -m localist_core sweep` works regardless.",
            icon="🔒")
    st.stop()
if misplaced:
    for p in misplaced:
        st.error(ui.plain(f"Starting sweeps is unavailable: {p}"), icon="🚫")
    st.stop()

limits = launch_limits.APP_LIMITS
st.caption(f"A sweep trains one model per (penalty protocol, λ) plus one dial model, evaluates "
           f"each on the λ/τ grid and writes one JSON per finished run into "
           f"{ui.plain(ui.shown(root) + '/<name>/cache')} (its checkpoints into "
           f"{ui.plain('…/<name>/runs')}). `tiny` "
           f"runs take seconds (fine for demos, meaningless numbers); `cpu-ref` takes about "
           f"{launch_limits.CONFIG_COST['cpu-ref']:g} minutes per run on this CPU; `paper` is "
           f"for the command line. It trains on the "
           f"server's corpus, in the background at low priority: you can leave or reload this "
           f"page. Stopped or killed, the same sweep started again resumes. At most "
           f"{launch_root.max_jobs()} sweep(s) run at once on this server.")
with st.expander("Limits on this server"):
    st.caption(f"At most {limits['lambdas']} λ values, {limits['taus']} τ values, "
               f"{limits['eval_tokens']:,} evaluation tokens, {limits['overrides']} overrides "
               f"of at most {limits['override_chars']} characters, runs × time_budget_s ≤ "
               f"{limits['budget_hours']} h, max_steps / eval_interval ≤ "
               f"{limits['evals_per_run']}, {limits['sweeps']} sweeps kept. Other override "
               f"keys: {', '.join(launch_limits.FREE_OVERRIDES)}.")
    disk = launch_budget.DISK_LIMITS
    st.caption(f"Disk: a run writes its final weights, a resumable trainer state (the weights "
               f"again with AdamW's two moments, so about five times the weights in all, even "
               f"after one step), its attention maps and its result. Once its result is in the "
               f"cache the trainer state is removed. Checked before a sweep starts, counting "
               f"every run at full size: at most {launch_budget.mb(disk['run'])} a run, "
               f"{launch_budget.mb(disk['sweep'])} a sweep folder (earlier runs under the same "
               f"name, other seeds included, count too) and {launch_budget.mb(disk['root'])} "
               f"for every app sweep together.")
    st.dataframe([{"override": k, "min": lo, "max": hi}
                  for k, (lo, hi) in launch_limits.OVERRIDE_BOUNDS.items()], hide_index=True)
with st.form("sweep_form"):
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("Sweep name", "my-sweep",
                         help=f"Letters, digits and - _ . (at most {limits['name_chars']}). "
                              f"The same name again resumes that sweep.")
    protocols = c2.multiselect("Protocols", list(views.PROTOCOL_NAMES),
                               default=["attention", "dial"],
                               help="attention/weights: the penalty protocol, one model per λ. "
                                    "dial: one model for every λ.")
    config = c3.selectbox("Config", list(launch_limits.APP_CONFIGS), index=0)
    lambdas = c1.text_input("λ values", "0, 0.5, 1.0")
    taus = c2.text_input("τ values", "0.5, 1, 2")
    eval_tokens = c3.number_input("Evaluate the first N valid tokens", 1, limits["eval_tokens"],
                                  launch_limits.DEFAULT_EVAL_TOKENS, step=10_000)
    overrides = c1.text_input("Overrides (key=value …)", "", placeholder="max_steps=200 lr=0.002")
    partition = c2.selectbox("Partition", views.PARTITIONS,
                             help="How the models cut text into blocks: fixed windows, "
                                  "punctuation or recruited (About explains each).")
    submitted = st.form_submit_button("Start sweep", type="primary")

if submitted:
    if partition != "fixed" and "partition=" not in overrides:
        overrides = f"{overrides} partition={partition}".strip()
    req, errors = launch_limits.check_request(name, protocols, lambdas, taus, config, overrides,
                                       int(eval_tokens), protected=protected)
    for e in errors:
        st.error(ui.plain(e), icon="🚫")
    if req is not None:
        try:
            proc = launch.start_sweep(req)
        except launch.SweepBusy as e:
            st.error(ui.plain(str(e)), icon="⏳")
        except (launch.LaunchError, OSError, ValueError) as e:
            st.error(ui.plain(f"Could not start the sweep: {e}"),
                     icon="🚫")
        else:
            ui.launched_sweeps()[req.name] = proc
            ss["_sweep_states"] = {**ss.get("_sweep_states", {}), req.name: "starting"}
            st.success(ui.plain(f"Started sweep {req.name}: {req.n_runs} run(s) as pid "
                                f"{proc.pid}, roughly {req.minutes():.0f} min. Its progress, log "
                                f"and Stop button are under Progress."))
            st.code(launch.shown_command(req), language="bash")
