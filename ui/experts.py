"""The Experts page's helpers: the results folder it reads (``$LOCALIST_EXPERTS_DIR``, else
``assets/experts``), its cached loaders behind the one error guard, the tables and the timeline
figure built from a run, and the routing of the sidebar's text through a run's experts. The
maths are in ``localist_core.experiments`` (``experts``, ``expert_runs``)."""
from __future__ import annotations

import html
import os
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from localist_core.experiments.expert_files import (
    SUMMARY,
    ExpertsError,
    list_runs,
    load_runs,
    read_adapters,
    read_summary,
)
from localist_core.experiments.expert_runs import lineage_deltas, route_text
from localist_core.model.checkpoint import weights_sha256
from localist_core.paths import ASSETS
from ui.catalogue import checkpoint_stamp
from ui.loaders import load_checkpoint
from ui.notices import guarded, shown

SHIPPED_EXPERTS = ASSETS / "experts"
COMMAND = ("python -m localist_core experts --checkpoint assets/checkpoints/attention-l0.0 "
           "--out assets/experts")
TITLES_SHOWN = 8     # article titles listed per expert in the table
ROUTES_KEPT = 64     # routed texts cached (a few floats each)


def experts_dir() -> str:
    """The results folder the page reads: $LOCALIST_EXPERTS_DIR, else assets/experts."""
    return os.environ.get("LOCALIST_EXPERTS_DIR") or str(SHIPPED_EXPERTS)


def no_results(folder: str) -> str:
    return (f"No model-level recruitment results in {shown(folder)}. Make them with "
            f"`{COMMAND}` (add --seeds 1234,2,3 for intervals; README, \"Model-level "
            f"recruitment\").")


def _stamp(folder: str) -> tuple:
    """Names, sizes and times of the files the loader reads: a cache key that changes with
    them."""
    stamp = []
    for p in [*list_runs(Path(folder))[0], Path(folder) / SUMMARY]:
        try:
            st_ = p.stat()
        except OSError:
            continue
        stamp.append((p.name, st_.st_mtime_ns, st_.st_size))
    return tuple(stamp)


@st.cache_data(show_spinner="Reading the experts…", max_entries=8)
def _results(folder: str, stamp: tuple) -> tuple[list[dict], list[str], dict | None]:
    runs, problems = load_runs(folder)
    try:
        summary = read_summary(folder)
    except ExpertsError as e:
        summary, problems = None, problems + [str(e)]
    return runs, problems, summary


@guarded("read the model-level recruitment results", ([], [], None))
def results(folder: str) -> tuple[list[dict], list[str], dict | None]:
    """Runs (checked), a message per refused file, and summary.json (or None)."""
    return _results(folder, _stamp(folder))


# -- tables and the figure -------------------------------------------------------------------------

def _sd(x: dict, digits: int = 4) -> str:
    if x.get("mean") is None:
        return "–"
    return f"{x['mean']:.{digits}f}" + (f" ± {x['sd']:.{digits}f}" if x.get("sd") is not None
                                        else "")


def cost_rows(summary: dict) -> list[dict]:
    """Per bits-per-parameter value: the cost, how many were recruited, held-out bits per token
    (mean ± sd over seeds) and the pool − single difference with its 95% interval."""
    rows = []
    for r in summary["by_bits_per_param"]:
        d = r["pool_minus_single"]
        ci = (f"[{d['lo']:+.4f}, {d['hi']:+.4f}]" if d.get("lo") is not None else "–")
        rows.append({"bits / param": r["bits_per_param"], "cost (bits)": r["cost_bits"],
                     "seeds": len(r.get("seeds", [])),
                     "experts recruited": _sd(r["recruited"], 1),
                     "base bits/token": r.get("base_bits_per_token"),
                     "single adapter": _sd(r["single_bits_per_token"]),
                     "pool": _sd(r["pool_bits_per_token"]),
                     "pool − single, 95% CI": ci,
                     "established": "yes" if d.get("established") else "no"})
    return rows


def run_caption(run: dict) -> str:
    """What a run grew on, and what one expert costs in it: plain text (names come from the
    file) for ``ui.plain``, never Markdown."""
    st_, cfg = run["stream"], run["settings"]
    per = 2 * cfg["d_model"] * cfg["rank"]
    return (f"{st_['docs']} articles of the {cfg.get('stream', 'train')} split "
            f"({st_['tokens']:,} tokens) arrived in order, on "
            f"the base {cfg['base'].get('name')}. An expert's adapter holds 2·d·r = {per:,} "
            f"numbers, so at {run['bits_per_param']:g} bits each it costs "
            f"{per * run['bits_per_param']:,.6g} bits. {len(run['experts']) - 1} recruited in "
            f"{len(run['attempts'])} attempts.")


def attempt_rows(run: dict) -> list[dict]:
    return [{"after document": a["doc_index"] + 1, "parent": a["parent"],
             "seed article": a["seed_title"], "documents taken": f"{a['docs_moved']} of "
             f"{a['candidates']}", "bits saved (held-out halves)": round(a["savings_bits"], 1),
             "cost (bits)": a["cost_bits"], "recruited": f"expert {a['child']}"
             if a["recruited"] else "no"} for a in run["attempts"]]


def expert_rows(run: dict) -> list[dict]:
    rows = []
    for e in run["experts"]:
        titles = e["titles"][:TITLES_SHOWN]
        more = len(e["titles"]) - len(titles)
        rows.append({"expert": e["id"],      # text columns: "–" marks the base's blanks
                     "parent": "–" if e["parent"] is None else str(e["parent"]),
                     "recruited after document": "–" if e["recruited_at_doc"] is None
                     else str(e["recruited_at_doc"] + 1),
                     "bits it saved": round(e["savings_bits"], 1), "cost (bits)": e["cost_bits"],
                     "articles": len(e["titles"]), "tokens": e["tokens"],
                     "held-out articles routed": e["heldout_docs"],
                     "most over-represented words": ", ".join(w["word"] for w in e["top_words"]),
                     "articles it took": "; ".join(titles) + (f" … (+{more})" if more else "")})
    return rows


def heldout_rows(run: dict) -> list[dict]:
    h = run["heldout"]
    names = {"base": "base alone", "single": f"one adapter ({run['single']['steps']} steps)",
             "pool": f"pool of {len(run['experts'])}, routed by each article's first 25%"}
    return [{"model": names[k], "bits": round(h[k]["bits"], 1), "tokens": h[k]["tokens"],
             "bits/token": round(h[k]["bits_per_token"], 4),
             "perplexity": round(h[k]["perplexity"], 2)} for k in ("base", "single", "pool")]


def timeline_figure(run: dict) -> go.Figure:
    """Every attempt as a point (documents seen, bits saved), recruited ones filled, against
    the cost line."""
    fig = go.Figure()
    for ok, name, symbol in ((True, "recruited", "circle"), (False, "not recruited",
                                                              "circle-open")):
        pts = [a for a in run["attempts"] if a["recruited"] == ok]
        fig.add_trace(go.Scatter(
            x=[a["doc_index"] + 1 for a in pts], y=[a["savings_bits"] for a in pts],
            mode="markers", name=name, marker={"symbol": symbol, "size": 10},
            # plotly renders a subset of HTML in hover text (links included): escape titles
            text=[html.escape(f"parent {a['parent']}: {a['seed_title']}") for a in pts]))
    if run["attempts"]:
        fig.add_hline(y=run["attempts"][0]["cost_bits"], line_dash="dash",
                      annotation_text="description cost")
    fig.update_layout(xaxis_title="documents seen", yaxis_title="bits saved on held-out halves",
                      height=360, margin={"t": 30})
    return fig


# -- routing the sidebar's text ------------------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=16)
def _weights_sha(path: str, stamp: tuple) -> str:
    return weights_sha256(path)


@guarded("check which base these experts were grown on", False)
def grown_from(run: dict, checkpoint_path: str) -> bool:
    """Whether the checkpoint at ``checkpoint_path`` is the base ``run`` was grown on (the
    SHA-256 of its weights)."""
    sha = _weights_sha(checkpoint_path, checkpoint_stamp(Path(checkpoint_path)))
    return sha == run["settings"]["base"].get("sha256")


@st.cache_resource(show_spinner=False, max_entries=8)
def _deltas(folder: str, file: str, stamp: tuple):
    """Σ A B over each expert's lineage, ``[K, d, d]``, from the run's checked adapters."""
    run = next(r for r in _results(folder, stamp)[0] if r["file"] == file)
    tensors = read_adapters(Path(folder) / f"{file}.safetensors", run)
    pairs = [None] + [(tensors[f"expert.{e['id']}.A"], tensors[f"expert.{e['id']}.B"])
                      for e in run["experts"][1:]]
    return lineage_deltas([e["parent"] for e in run["experts"]], pairs,
                          run["settings"]["d_model"])


@st.cache_data(show_spinner="Routing the text…", max_entries=ROUTES_KEPT)
def _route(checkpoint_path: str, folder: str, file: str, stamp: tuple, text: str):
    model, tok = load_checkpoint(checkpoint_path)
    deltas = _deltas(folder, file, stamp)
    if deltas.shape[-1] != model.cfg.d_model:
        raise ExpertsError(f"the adapters are {deltas.shape[-1]}-wide, the model "
                           f"{model.cfg.d_model}")
    return route_text(model, tok, text, deltas)


@guarded("route this text through the experts", (None, []))
def route(checkpoint_path: str, folder: str, run: dict, text: str):
    """(routing, notices): the bits of the text under each expert and the winner, or None with
    the notice that says why (a refused adapters file included)."""
    try:
        return _route(checkpoint_path, folder, run["file"], _stamp(folder), text), []
    except ExpertsError as e:
        return None, [f"Refused adapters file: {e}"]


def route_rows(run: dict, routing: dict) -> list[dict]:
    return [{"expert": e["id"], "bits": round(b, 1), "bits/token": round(bpt, 4),
             "chosen": "◀" if e["id"] == routing["expert"] else "",
             "its words": ", ".join(w["word"] for w in e["top_words"][:6])}
            for e, b, bpt in zip(run["experts"], routing["bits"], routing["bits_per_token"])]
