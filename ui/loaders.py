"""The cached loaders (each reads only its own arguments) and what pages call to reach them, each
behind the one error guard (``ui.notices.guarded``): a failed load is a notice, never a
traceback. The analysis and the theory report, which read the sidebar's dial, are
``ui.get_analysis`` and ``ui.get_theory``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from localist_core import load_model
from localist_core.analysis.inspection import recruitment_trace as trace_text
from localist_core.experiments.cache import cached_run_pattern, load_cache
from localist_core.experiments.results import cache_stamp, read_baselines
from localist_core.model.checkpoint import CheckpointError
from localist_core.model.files import read_prompts
from localist_core.paths import PROMPTS_FILE, SHIPPED_SWEEP, STUDY_SWEEP
from ui.catalogue import checkpoint_stamp, list_checkpoints
from ui.notices import guarded

if TYPE_CHECKING:
    from ui import Settings

# Limits (README "Limits"): every cache is bounded.
MAPS_KEPT = 32    # stored sweep maps: 0.25 MiB each for the shipped runs, at most 4 MiB
MODELS_KEPT = 6   # loaded models, or refusals, one per version of a checkpoint folder's files
FALLBACK_PROMPTS = {"castle": "The old castle stood on a hill above the river ."}


@st.cache_resource(show_spinner="Loading the model…", max_entries=MODELS_KEPT)
def _model(path: str, stamp: tuple):
    """(model, tokenizer), one copy shared by every session, safe to share (run lock); or the
    message of the CheckpointError that refused the folder (NaN weights, a truncated file). A
    refusal is kept like a model, so a broken folder is read once per change of its files
    (``stamp``), not again on every rerun of every page."""
    try:
        return load_model(path)
    except CheckpointError as e:
        return str(e)


def load_checkpoint(path: str):
    """(model, tokenizer) of a checkpoint folder, loaded again only when its files change;
    raises CheckpointError when the folder is refused."""
    got = _model(path, checkpoint_stamp(Path(path)))
    if isinstance(got, str):
        raise CheckpointError(got)
    return got


@st.cache_data(show_spinner=False, max_entries=64)
def cached_trace(path: str, text: str, partition: str = "recruited"):
    """Where a recruiting partition starts blocks in ``text`` (inspection.recruitment_trace;
    the bigram one reads the checkpoint's own Kneser–Ney table or the shipped one, checked and
    read again for each new text, a few milliseconds)."""
    model, tok = load_checkpoint(path)
    return trace_text(model, tok, text, partition)


@st.cache_data(show_spinner=False, max_entries=MAPS_KEPT)
def cached_map(cache_dir: str, run_id: str, prompt: str, lam: float, tau: float):
    """A stored ``[layer, head, T, T]`` map, kept as float16 as it is stored (at most
    cache.MAX_MAP_BYTES each, so MAPS_KEPT of them at most 128 MiB)."""
    arr = cached_run_pattern(cache_dir, run_id, prompt, lam, tau)
    return None if arr is None else arr.astype(np.float16)


@st.cache_data(show_spinner=False, max_entries=4)
def _prompts(path: str) -> dict[str, str]:
    """The sample texts by name, bounded and checked by ``read_prompts``."""
    return {p["name"]: p["text"] for p in read_prompts(Path(path))}


@st.cache_data(show_spinner=False, ttl=30, max_entries=8)
def _checkpoints(extra_dirs: str):
    return list_checkpoints(extra_dirs)


@st.cache_data(show_spinner="Reading the sweep cache…", max_entries=16)
def _sweep_results(folder: str, stamp: tuple) -> tuple[list[dict], list[str], dict | None]:
    runs, problems = load_cache(folder)
    return runs, problems, read_baselines(folder)


@st.cache_resource(max_entries=1)
def launched_sweeps() -> dict:
    """Sweep processes this server started (name → Popen), so that finished ones are reaped.
    A registry, not a load: it cannot fail."""
    return {}


# -- what pages call -----------------------------------------------------------------------------

def sweep_cache() -> str:
    """The sweep cache the pages read: $LOCALIST_SWEEP_CACHE, else the shipped one."""
    return os.environ.get("LOCALIST_SWEEP_CACHE") or str(SHIPPED_SWEEP)


def study_cache() -> str:
    """The multi-seed study's cache the pages offer beside it: $LOCALIST_STUDY_CACHE, else the
    shipped one (scripts/study.sh writes it)."""
    return os.environ.get("LOCALIST_STUDY_CACHE") or str(STUDY_SWEEP)


def cache_label(kind: str, folder: str) -> str:
    """How the pages' cache menus name a project cache: ``kind`` ("Shipped sweeps",
    "Multi-seed study"), and "(another folder)" where the operator pointed it elsewhere; the
    folder itself is an operator's detail, not a visitor's (README "Operating")."""
    default = {"Shipped sweeps": SHIPPED_SWEEP, "Multi-seed study": STUDY_SWEEP}.get(kind)
    same = default is not None and Path(folder).resolve() == Path(default).resolve()
    return kind if same or default is None else f"{kind} (another folder)"


def project_caches() -> tuple[str, ...]:
    """The caches the project reads and an app sweep's root must stay clear of (the root
    checks in ui.launch_root): the sweep and study caches in use and the shipped ones."""
    return (sweep_cache(), str(SHIPPED_SWEEP), study_cache(), str(STUDY_SWEEP))


@guarded("read the sample texts", FALLBACK_PROMPTS)
def sample_prompts(path: str = str(PROMPTS_FILE)) -> dict[str, str]:
    """The sample texts by name (assets/prompts.json), or one fallback text."""
    return _prompts(str(path)) or dict(FALLBACK_PROMPTS)


@guarded("list the checkpoints", [])
def checkpoints():
    """Shipped checkpoints plus those under $LOCALIST_CHECKPOINT_DIRS (re-read every 30 s)."""
    return _checkpoints(os.environ.get("LOCALIST_CHECKPOINT_DIRS", ""))


@guarded("read the sweep results", ([], [], None))
def sweep_results(folder: str) -> tuple[list[dict], list[str], dict | None]:
    """Runs, refused files (each named, with the reason) and baselines of a sweep cache; read
    again only when its files change."""
    return _sweep_results(str(folder), cache_stamp(folder))


@guarded("load this checkpoint", False)
def model_loads(path: str) -> bool:
    """Whether the checkpoint folder at ``path`` loads (kept loaded for the pages); False after
    a notice saying why not."""
    load_checkpoint(path)
    return True


@guarded("load this checkpoint")
def n_layers(s: Settings) -> int | None:
    """How many layers the selected checkpoint has; None after a notice when it cannot be
    loaded."""
    return load_checkpoint(s.checkpoint_path)[0].cfg.n_layers


@guarded("trace the recruited blocks of this text")
def recruitment_trace(s: Settings, partition: str = "recruited"):
    """A recruiting partition's split test over the sidebar's text (a ``RecruitTrace``;
    ``partition`` is "recruited" or "bigram"), or None after a notice."""
    return cached_trace(s.checkpoint_path, s.text, partition)


@guarded("read this stored attention map")
def stored_map(run_id: str, prompt: str, lam: float, tau: float) -> np.ndarray | None:
    """The ``[layer, head, T, T]`` map a sweep run stored for a sample text at (λ_f, τ), or None
    when it has none (or after a notice when its file is refused)."""
    return cached_map(sweep_cache(), run_id, prompt, lam, tau)
