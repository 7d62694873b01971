"""The dashboard's helpers as the pages see them (``import ui``): the page list and the
navigation app.py builds from it, ``page_setup`` (the shared sidebar, deep links, notices), the
live analysis and theory report (behind the one error guard), and what pages
need from ``ui.loaders`` (the other cached loaders) and ``ui.notices`` (plain text, the error
guard). Views of the core's results are ``ui.views``; figures ``ui.figures``,
``ui.sweep_figures`` and ``ui.theory_figures``; sweeps started from
the app ``ui.launcher``.

Pages hold no tensor maths. Every value that arrives by deep link is validated; a bad one falls
back to its default with a visible notice.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import streamlit as st
import torch

from localist_core.analysis.inspection import MAX_TEXT_CHARS, analyze, cut_text, theory_report
from localist_core.analysis.inspection import next_words as next_words_after
from localist_core.model.config import (
    ANCHOR_STRENGTH_RANGE,
    ANCHOR_STRENGTH_SLIDER_MAX,
    LOCALITY_RANGE,
    TEMPERATURE_RANGE,
)
from localist_core.model.dial import Dial

# ``X as X`` marks a re-export: a name that pages (or tests) reach as ui.X.
from localist_core.paths import PROMPTS_FILE
from localist_core.paths import REPO as REPO
from localist_core.paths import SHIPPED_SWEEP as SHIPPED_SWEEP
from ui import server_guard
from ui.links import (
    BLOCK_CHOICES,
    BLOCK_SIZE_DEFAULT,
    BLOCK_SIZE_RANGE,
    PERSIST,
    apply_deep_link,
    keep,
    write_deep_link,
)
from ui.links import fit_choice as fit_choice
from ui.loaders import cache_label as cache_label
from ui.loaders import checkpoints, load_checkpoint, model_loads, sample_prompts
from ui.loaders import launched_sweeps as launched_sweeps
from ui.loaders import n_layers as n_layers
from ui.loaders import project_caches as project_caches
from ui.loaders import recruitment_trace as recruitment_trace
from ui.loaders import stored_map as stored_map
from ui.loaders import study_cache as study_cache
from ui.loaders import sweep_cache as sweep_cache
from ui.loaders import sweep_results as sweep_results
from ui.notices import guarded, plain, show_notices
from ui.notices import shown as shown


class Page(NamedTuple):
    """One page of the dashboard: its file, its title in the menu and its icon."""

    file: str
    title: str
    icon: str


# The dashboard's pages in menu order, the first opening by default: app.py builds the
# navigation from this list and the AppTests visit every page in it.
PAGES = (Page("app_pages/explorer.py", "Explorer", ":material/grid_on:"),
         Page("app_pages/tradeoff.py", "Tradeoff", ":material/show_chart:"),
         Page("app_pages/compare.py", "Compare", ":material/compare:"),
         Page("app_pages/interventions.py", "Interventions", ":material/content_cut:"),
         Page("app_pages/rules.py", "Rules & blocks", ":material/rule:"),
         Page("app_pages/theory.py", "Theory", ":material/functions:"),
         Page("app_pages/sweeps.py", "Sweeps", ":material/science:"),
         Page("app_pages/experts.py", "Experts", ":material/account_tree:"),
         Page("app_pages/about.py", "About", ":material/school:"))

# -- navigation ------------------------------------------------------------------------------
# The page files live in app_pages/, not pages/: while a folder named pages/ sits beside app.py,
# a freshly started Streamlit runs a linked page file by itself, without app.py, and lists the
# folder by file name until some session has called st.navigation (PagesManager.__init__ in
# streamlit/runtime/pages_manager.py; ScriptRunner._run_script's ``_mpa_v1``). So on a cold
# server /rules?lam=0.6 showed "app, about, compare…". Under any other name app.py always runs.


def navigation():
    """Streamlit's navigation over PAGES (the first opens by default); app.py runs the page it
    returns with ``run_page``."""
    return st.navigation([st.Page(p.file, title=p.title, icon=p.icon, default=i == 0)
                          for i, p in enumerate(PAGES)])


# -- serving many sessions (BENCHMARKS.md, "Serving a class") ---------------------------------
# One torch thread per script run. The server runs one script thread per session on a machine
# of a few cores, so a second intra-op thread mostly waits, spinning, for a core that another
# session's run (or another process) holds: with a core taken, one analysis took over 50 times as
# long on two threads as on one. Set on every run: torch keeps the setting per thread.
SCRIPT_TORCH_THREADS = 1


@st.cache_resource(show_spinner=False, max_entries=1)
def _freeze_warm_heap() -> int:
    """Once per server process, after its first page run: move everything alive then (modules,
    torch, plotly, the model) out of the garbage collector's sight (``gc.freeze``). Streamlit's
    collection after every run is off (.streamlit/config.toml, ``runner.postScriptGC``); Python's
    own full collections, every few seconds under load, then walk only what came later. Returns
    how many objects were frozen."""
    gc.collect()     # garbage of the first run is freed, not frozen
    gc.freeze()
    return gc.get_freeze_count()


def run_page(page) -> None:
    """Run the page ``navigation`` chose, on one torch thread (SCRIPT_TORCH_THREADS), after
    the server's guards on what visitors send are in place (``ui.server_guard``, once)."""
    server_guard.install()
    torch.set_num_threads(SCRIPT_TORCH_THREADS)
    st.session_state["_page"] = page.url_path  # ui.keep re-seeds widgets once per page visit
    try:
        page.run()
    finally:                                   # st.stop and st.rerun end a run by raising
        _freeze_warm_heap()


DEFAULTS = {"lam": 0.0, "tau": 1.0, "gamma": 0.0, "layer": "mean", "head": "mean"}
# Limits (README "Limits"): every cache is bounded. One analysis holds at most
# inspection.analysis_bytes_bound() bytes (0.42 MiB for the shipped models), so ≤ 80 MiB in all.
ANALYSES_KEPT = 192   # the stored sweep maps' bound is ui.loaders.MAPS_KEPT


@dataclass(frozen=True)
class Settings:
    """What the shared sidebar chose, as plain values."""

    checkpoint_key: str | None
    checkpoint_path: str | None    # None: no usable checkpoint, or it was refused at load
    dial: Dial                     # λ, τ, γ as one checked value; dial.notices: what was clamped
    block_size: int | None
    text: str
    text_source: str
    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)   # what was cut or changed, for the user
    partition: str | None = None   # re-block the text at inference; None: as trained

    @property
    def locality(self) -> float:
        return self.dial.locality

    @property
    def attn_temperature(self) -> float:
        return self.dial.attn_temperature

    @property
    def rule_strength(self) -> float:
        return self.dial.rule_strength


# -- cached loaders (each reads only its own arguments; the others are in ui.loaders) ---------

@st.cache_data(show_spinner=False, max_entries=ANALYSES_KEPT)
def cached_analysis(path: str, text: str, dial: Dial, block_size: int | None,
                    partition: str | None = None, rule: tuple | None = None):
    """``rule`` is ``(source_kind, source, target_kind, target, strength)``, already checked
    by ``make_rule`` (plain values keep the cache key simple). st.cache_data keys a dataclass
    such as ``dial`` on its fields (``dataclasses.asdict``): a few floats, cheap to hash."""
    model, tok = load_checkpoint(path)
    return analyze(model, tok, text, dial, block_size=block_size, partition=partition,
                   rule=rule)


def _analysis(path: str, text: str, dial: Dial, block_size: int | None,
              partition: str | None = None, rule: tuple | None = None):
    """``cached_analysis`` with every argument given, as every caller gives them: Streamlit keys
    a cached call on the arguments passed, so leaving out ``rule=None`` would key (and compute)
    the same analysis a second time."""
    return cached_analysis(path, text, dial, block_size, partition, rule)


@st.cache_data(show_spinner=False, max_entries=ANALYSES_KEPT)
def cached_next_words(path: str, text: str, dial: Dial, block_size: int | None,
                      partition: str | None, pos: int):
    """The top-5 after ``pos`` of ``cached_analysis``'s analysis for the same arguments, so
    ``model.top_k`` runs once per setting and position, not on every rerun (five words and five
    floats an entry)."""
    model, tok = load_checkpoint(path)
    return next_words_after(model, tok, _analysis(path, text, dial, block_size, partition), pos)


@st.cache_data(show_spinner=False, max_entries=128)
def cached_theory(path: str, text: str, dial: Dial, layer: int, partition: str | None = None,
                  block_size: int | None = None):
    model, tok = load_checkpoint(path)
    return theory_report(model, tok, text, dial, layer, partition=partition,
                         block_size=block_size)


# -- the shared sidebar ----------------------------------------------------------------------
# Every page calls ``page_setup()``, which draws the same sidebar; ``keep`` (ui.links) carries
# each widget's value from page to page, so moving λ on Explorer keeps λ on Compare.

def sidebar() -> Settings:
    """Render the shared controls and return the settings."""
    ss = st.session_state
    infos = checkpoints()
    usable = [c for c in infos if c.problem is None]
    prompts = sample_prompts(str(PROMPTS_FILE))
    if "_link_read" not in ss:
        ss["_link_read"] = True
        apply_deep_link([c.key for c in usable], prompts)
    problems = [f"{c.key}: {c.problem}" for c in infos if c.problem]
    sb = st.sidebar
    if not usable:
        sb.error("No usable checkpoint in assets/checkpoints.")
        return Settings(None, None, Dial(), None, "", "none", problems)
    keys = [c.key for c in usable]
    if ss.get(PERSIST + "ckpt") not in keys:
        ss[PERSIST + "ckpt"] = keys[0]
    if "ckpt" in ss and ss["ckpt"] not in keys:      # a tour step naming a missing checkpoint
        ss["ckpt"] = ss[PERSIST + "ckpt"]
    labels = {c.key: c.label for c in usable}
    key = sb.selectbox("Checkpoint", keys, format_func=labels.get, **keep("ckpt", keys[0]),
                       help="The dial model was trained with λ drawn per batch, so one "
                            "checkpoint can be read at every λ. A penalty model was trained at "
                            "one λ.")
    info = next(c for c in usable if c.key == key)
    lam = sb.slider("λ — locality", *LOCALITY_RANGE, step=0.05, **keep("lam", DEFAULTS["lam"]),
                    help="0: ordinary (distributed) attention. 1: attention only inside the "
                         "query's block. In between, cross-block weights are scaled by "
                         "(1−λ)^(β/τ).")
    tau = sb.slider("τ — temperature", TEMPERATURE_RANGE[0], TEMPERATURE_RANGE[1], step=0.05,
                    **keep("tau", DEFAULTS["tau"]),
                    help="Lower τ sharpens attention; τ=1 is how the model was trained.")
    gamma = sb.slider("γ — rule strength toward anchors", ANCHOR_STRENGTH_RANGE[0],
                      ANCHOR_STRENGTH_SLIDER_MAX, step=0.25, **keep("gamma", DEFAULTS["gamma"]),
                      help="Adds γ to the score of each block's anchor tokens.")
    # The one place the sliders become a Dial. The sliders cannot leave the dial's ranges, so
    # this never clamps; if it did, dial.notices would reach the page with the analysis.
    dial = Dial(lam, tau, gamma)
    blocks = sb.selectbox("Blocks", BLOCK_CHOICES, **keep("blocks", "as trained"),
                          help="How the text is cut into blocks. 'as trained' uses the "
                               "checkpoint's own partition; the others re-block the text at "
                               "inference only: fixed windows, punctuation (a block ends at . "
                               ", ; : ! ? or after 8 words) or recruited (a block starts where "
                               "the description-length test saves bits; see About).")
    block = BLOCK_SIZE_DEFAULT
    if blocks == "fixed":
        block = sb.number_input("Block size (fixed windows)", *BLOCK_SIZE_RANGE,
                                **keep("block", BLOCK_SIZE_DEFAULT),
                                help=f"The shipped models use {BLOCK_SIZE_DEFAULT}.")
    mode = sb.radio("Text", ["Sample text", "Your own text"], horizontal=True,
                    **keep("text_mode", "Sample text"))
    if mode == "Sample text":
        names = list(prompts)
        if ss.get(PERSIST + "prompt") not in names:
            ss[PERSIST + "prompt"] = names[0]
        name = sb.selectbox("Sample", names, **keep("prompt", names[0]))
        text, source = prompts[name], f"prompt:{name}"
    else:
        # No max_chars: the browser would cut a paste silently. The cut happens here, with a
        # notice, before the text reaches any cache (README "Limits").
        text = sb.text_area("Your text", height=120, help=f"At most {MAX_TEXT_CHARS:,} "
                            "characters are read.",
                            **keep("free_text", next(iter(prompts.values()))))
        source = "free"
    text, notices = cut_text(text)
    partition = None if blocks == "as trained" else blocks
    # The chosen checkpoint is loaded here, through the one error guard, so a folder refused at
    # load (NaN weights; a file cut short since it was listed) gives the same notice on every
    # page, and the pages that need a model get no path and stop.
    path = info.path if model_loads(info.path) else None
    return Settings(key, path, dial, int(block) if partition == "fixed" else None, text,
                    source, problems, notices, partition)


# Less empty space above a page's first element (Streamlit's default is 6rem; its fixed top bar
# is 3.75rem), so the picture starts near the top of a 720-px projector.
_COMPACT_TOP = ("<style>[data-testid='stMainBlockContainer']{padding-top:3.6rem;}"
                "</style>")


def page_setup(title: str, header: bool = True) -> Settings:
    """The top of every page: shared sidebar, link notices, header (``header=False``: none, for
    a page whose picture is its heading); returns the settings."""
    s = sidebar()
    st.html(_COMPACT_TOP)
    show_notices(st.session_state.get("_link_notices", []) + s.notices)
    if header:
        st.header(title)
    for p in s.problems:
        st.caption(f"Not offered: {plain(p)}")
    write_deep_link(s, st.session_state.get(PERSIST + "layer", "mean"),
                    st.session_state.get(PERSIST + "head", "mean"))
    return s


# -- what pages call: each behind the one error guard (ui.notices.guarded) --------------------

def _checkpoint_path(s: Settings, *args, path: str | None = None, **kwargs) -> str | None:
    """The checkpoint a guarded call below used, for the server log."""
    return path or s.checkpoint_path


@guarded("find the next words", ([], []), detail=_checkpoint_path)
def next_words(s: Settings, pos: int):
    """(words, probabilities) of the top-5 next words after ``pos`` of the sidebar's
    analysis (``get_analysis(s)``)."""
    return cached_next_words(s.checkpoint_path, s.text, s.dial, s.block_size, s.partition, pos)


@guarded("analyse this text with this checkpoint", (None, False), detail=_checkpoint_path)
def get_theory(s: Settings, layer: int):
    """The Theory page's cached report and True; (None, False) after a notice when the
    checkpoint fails (a report of None means the text is too short)."""
    return cached_theory(s.checkpoint_path, s.text, s.dial, layer, s.partition,
                         s.block_size), True


def analysis_or_stop(s: Settings):
    """The live analysis of the sidebar's settings with its notices shown, for the pages that
    draw one. Stops the page when there is no usable checkpoint, the analysis failed (the error
    guard gave its notice) or the text has no tokens."""
    if s.checkpoint_path is None:
        st.stop()
    a = get_analysis(s)
    if a is None:
        st.stop()
    show_notices(a.notices)
    if not a.labels:
        st.stop()
    return a


@guarded("analyse this text with this checkpoint", detail=_checkpoint_path)
def get_analysis(s: Settings, *, lam: float | None = None, tau: float | None = None,
                 gamma: float | None = None, path: str | None = None, rule: tuple | None = None):
    """The cached analysis for the sidebar settings, or for overrides (Compare page) and a
    rule (Rules page); None after a notice when it fails. An override replaces one field of the
    sidebar's dial (checked there)."""
    overrides = {k: v for k, v in (("locality", lam), ("attn_temperature", tau),
                                   ("rule_strength", gamma)) if v is not None}
    dial = replace(s.dial, **overrides) if overrides else s.dial
    return _analysis(path or s.checkpoint_path, s.text, dial, s.block_size, s.partition, rule)
