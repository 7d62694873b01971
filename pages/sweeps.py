"""Sweeps: browse the cached runs and start a λ-sweep as a background process whose progress
(read from the cache's progress.json) survives a page reload."""
import os
import shlex
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from localist_core import launch
from localist_core import tradeoff as tr
from localist_core.config import PARTITIONS
from localist_core.sweep import load_cache

s = ui.page_setup("Sweeps")
shipped = ui.sweep_cache()
user = os.environ.get("LOCALIST_APP_SWEEPS") or str(launch.APP_SWEEPS / "cache")
ss = st.session_state


@st.cache_data(show_spinner="Reading the sweep cache…", max_entries=16)
def sweep_results(folder: str, stamp: tuple) -> tuple[list[dict], list[str]]:
    """Runs and refused files of a cache folder; ``stamp`` changes with its files."""
    return load_cache(folder)


@st.cache_resource(max_entries=1)
def launched() -> dict:
    """Sweep processes this server started (cache folder → Popen), so finished ones are reaped."""
    return {}


@st.fragment(run_every=3)
def progress(folders: list[str]) -> None:
    """Progress of each folder's sweep, re-read every few seconds without blocking the page."""
    for proc in launched().values():
        proc.poll()
    states = ss.setdefault("_sweep_states", {})
    views = {f: launch.sweep_status(f) for f in folders}
    if not any(views.values()):
        st.caption("No sweep has run in these folders yet.")
    for folder, view in views.items():
        if view is None:
            continue
        st.progress(view["fraction"], text=ui.plain(f"{folder}: {view['text']}"))
        if view["state"] == "stopped":
            st.warning(ui.plain(f"{folder}: {view['text']}"), icon="⚠️")
        tail = launch.log_tail(folder)
        if tail:
            with st.expander(f"Log of {ui.plain(folder)}", expanded=False):
                st.code(tail, language=None)
        before, states[folder] = states.get(folder), view["state"]
        if before in ("running", "starting") and view["state"] not in ("running", "starting"):
            st.rerun(scope="app")   # the sweep ended: refresh the table of runs


st.subheader("Progress")
progress(list(dict.fromkeys([ss.get("sweep_cache_dir", user), user, shipped])))

st.subheader("Cached runs")
folders = {f"Shipped sweeps ({shipped})": shipped, f"Your sweeps ({user})": user}
folder = folders[st.radio("Cache folder", list(folders), horizontal=True, key="sweeps_browse")]
if not Path(folder).is_dir():
    st.info(f"There is no sweep cache at {ui.plain(folder)} yet: start a sweep below.")
else:
    runs, problems = sweep_results(folder, tr.cache_stamp(folder))
    ui.show_notices([f"Refused cache file: {p}" for p in problems])
    if not runs:
        st.info(f"The sweep cache {ui.plain(folder)} holds no finished runs yet.")
    else:
        st.dataframe(pd.DataFrame(tr.runs_table(runs)), hide_index=True, key="runs_table")
        st.caption("Headline figures at λ_f = 0, τ = 1 (valid split). In-block mass sits beside "
                   "its controls (recent-b, shifted blocks, uniform); a flagged run leaks the "
                   "future and is never part of a causal curve. The Tradeoff page plots them.")
        for run in runs:
            if tr.leak_flag(run):
                st.warning(ui.plain(f"{run.get('run_id')}: {tr.leak_flag(run)}"), icon="⚠️")

st.subheader("Start a sweep")
st.caption("A sweep trains one model per (penalty protocol, λ) plus one dial model, evaluates each "
           "on the λ/τ grid and writes one JSON per finished run. `tiny` runs take seconds (fine "
           "for demos, meaningless numbers); `cpu-ref` takes about 15 minutes per run on this "
           "CPU; `paper` takes hours. It runs in the background at low priority: you can leave "
           "or reload this page. Killed or stopped, the same sweep started again resumes.")
with st.form("sweep_form"):
    c1, c2, c3 = st.columns(3)
    protocols = c1.multiselect("Protocols", list(tr.PROTOCOL_NAMES), default=["attention", "dial"],
                               help="attention/weights: the penalty protocol, one model per λ. "
                                    "dial: one model for every λ.")
    config = c2.selectbox("Config", list(launch.CONFIG_COST), index=0)
    eval_tokens = c3.number_input("Evaluate the first N valid tokens (0 = all)", 0, 10**8,
                                  20_000, step=10_000)
    lambdas = c1.text_input("λ values", "0, 0.5, 1.0")
    taus = c2.text_input("τ values", "0.5, 1, 2")
    overrides = c3.text_input("Overrides (key=value …)", "", placeholder="max_steps=200 lr=0.002")
    cache_dir = c1.text_input("Cache folder", user, key="sweep_cache_dir",
                              help="Not the shipped assets/sweep.")
    runs_dir = c2.text_input("Checkpoints folder", str(Path(user).parent / "runs"))
    data_dir = c3.text_input("Data folder", "", placeholder="$LOCALIST_DATA_DIR or "
                             "../shared/data/wikitext-2")
    partition = c1.selectbox("Partition", PARTITIONS,
                             help="How the models cut text into blocks: fixed windows, "
                                  "punctuation or recruited (About explains each).")
    submitted = st.form_submit_button("Start sweep", type="primary")

if submitted:
    if partition != "fixed" and "partition=" not in overrides:
        overrides = f"{overrides} partition={partition}".strip()
    req, errors = launch.check_request(protocols, lambdas, taus, config, cache_dir, runs_dir,
                                   overrides, int(eval_tokens), data_dir,
                                   protected=(shipped, str(ui.SWEEP_CACHE)))
    for e in errors:
        st.error(ui.plain(e), icon="🚫")
    if req is not None:
        try:
            proc = launch.start_sweep(req)
        except launch.SweepBusy as e:
            st.error(ui.plain(str(e)), icon="⏳")
        except OSError as e:
            st.error(ui.plain(f"Could not start the sweep: {e}"), icon="🚫")
        else:
            launched()[str(req.cache_dir)] = proc
            ss["_sweep_states"] = {**ss.get("_sweep_states", {}), str(req.cache_dir): "starting"}
            st.success(ui.plain(f"Started {req.n_runs} run(s) as pid {proc.pid}, roughly "
                                f"{req.minutes():.0f} min. Log: {req.cache_dir / launch.LOG_FILE}"))
            st.code(shlex.join(launch.sweep_command(req)), language="bash")
