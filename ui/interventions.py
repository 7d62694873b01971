"""The Interventions page's helpers: cut heads' cross-block attention, patch a clean prompt into a
corrupted one and read the logit lens (``localist_core.analysis.interventions``), each cached and
behind the one error guard; the page's bounds, example pairs and deep-link values; numbers for
people (``sig3``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import streamlit as st

from localist_core.analysis import interventions as iv
from localist_core.analysis.inspection import (
    MissingTableError,
    inference_partition,
    prepare_text,
)
from localist_core.model.dial import Dial
from ui.links import PERSIST
from ui.loaders import load_checkpoint
from ui.notices import guarded, show_notices

# Limits (README "Limits"): what a visitor sets here is bounded like the sidebar's text.
MAX_PAIR_CHARS = 300      # each prompt of a patching pair (cut, with a notice)
MAX_PAIR_TOKENS = 32      # patching runs L·T + L·H patched copies of the corrupted prompt
MAX_WORD_CHARS = 40       # an answer or distractor word
MAX_LINK_LIST = 256       # characters of a link's head list read at all (longer: refused unread)
MAX_CHANGED_ROWS = 64     # rows of the "top-1 changed" table
# Cached results: an ablation holds a few arrays of T ≤ 256 values, a patching map L × (T + H)
# floats, a lens L × 5 words: a few KiB each.
ABLATIONS_KEPT, PATCHINGS_KEPT, LENSES_KEPT = 64, 32, 128

VARIANT_NAMES = {"renormalise": "Renormalise inside the block",
                 "zero": "Zero them, no renormalising"}


@dataclass(frozen=True)
class Pair:
    """Two prompts of the same length and the two next words whose logit difference is read."""

    name: str
    clean: str
    corrupted: str
    answer: str
    distractor: str


# Each pair changes a word that the end of the prompt may draw on, so the lead can come from an
# earlier block: what cutting cross-block attention asks about. A blank answer or distractor is
# the run's own most likely next word.
EXAMPLES = {p.name: p for p in (
    Pair("A son or a wife", "the king gave the crown to his son , and the son",
         "the king gave the crown to his wife , and the wife", "", ""),
    Pair("A name changed", "the song was written by John Lennon and Paul",
         "the song was written by Paul McCartney and John", "McCartney", "Lennon"),
    Pair("A country changed", "the king of England and the queen of",
         "the king of France and the queen of", "England", "France"),
    Pair("A year changed", "the season ran from 1990 to", "the season ran from 1970 to",
         "1991", "1971"),
)}
OWN_PAIR = "Your own pair"


def sig3(x) -> str:
    """A number for people: 3 significant figures, no e-notation, "—" when missing.

    >>> [sig3(v) for v in (0.012345, -1.5, 12345.6, 0.0, None, float("nan"), 3e-9)]
    ['0.0123', '-1.50', '12,300', '0', '—', '—', '0']
    """
    if x is None or not math.isfinite(float(x)):
        return "—"
    x = float(x)
    if x == 0 or abs(x) < 5e-7:
        return "0"
    decimals = 2 - math.floor(math.log10(abs(x)))
    if decimals <= 0:
        return f"{round(x, decimals):,.0f}"
    return f"{x:,.{min(decimals, 6)}f}"


def signed(x) -> str:
    """``sig3`` with a sign: "+0.123", "-0.123", "0"."""
    out = sig3(x)
    return out if out in ("0", "—") or out.startswith("-") else "+" + out


def _partition(model, tok, partition: str | None, block_size: int | None):
    """The inference partition the sidebar chose, as the live analysis reads it (the trained
    blocks where a bigram table does not fit; the analysis says so)."""
    try:
        return inference_partition(model, tok, partition, block_size)
    except MissingTableError:
        return None


# -- panel 1: cut cross-block attention --------------------------------------------------------

@dataclass(frozen=True)
class AblationView:
    """One ablation of the sidebar's text as the page shows it."""

    labels: list[str]
    loss_change: np.ndarray     # [T-1] nats, target t+1
    nll_clean: np.ndarray       # [T-1]
    top_before: list[str]       # [T] the most likely next word, clean
    top_after: list[str]        # [T] after the cut
    p_before: np.ndarray        # [T]
    p_after: np.ndarray         # [T]
    cross_mass: float           # mean attention the chosen heads give other blocks (clean)


@st.cache_data(show_spinner="Cutting cross-block attention…", max_entries=ABLATIONS_KEPT)
def cached_ablation(path: str, text: str, dial: Dial, block_size: int | None,
                    partition: str | None, heads: tuple, variant: str) -> AblationView:
    model, tok = load_checkpoint(path)
    ids, _ = prepare_text(tok, text, model.cfg.n_ctx)
    ab = iv.cross_block_ablation(model, [ids], list(heads), dial, variant=variant,
                                 partition=_partition(model, tok, partition, block_size))
    return AblationView(tok.labels(ids), ab.loss_change[0].double().numpy(),
                        ab.nll_clean[0].double().numpy(),
                        tok.labels(ab.top_clean[0, :, 0].tolist()),
                        tok.labels(ab.top_ablated[0, :, 0].tolist()),
                        ab.top_lp_clean[0, :, 0].exp().double().numpy(),
                        ab.top_lp_ablated[0, :, 0].exp().double().numpy(),
                        float(ab.cross_mass.double().mean()))


@guarded("cut the cross-block attention of these heads")
def ablation(s, layer: int, heads: list[int], variant: str) -> AblationView | None:
    """The sidebar's text with the cross-block attention of ``heads`` of ``layer`` cut, or
    None after a notice."""
    return cached_ablation(s.checkpoint_path, s.text, s.dial, s.block_size, s.partition,
                           tuple((layer, h) for h in heads), variant)


def perplexities(v: AblationView) -> tuple[float | None, float | None]:
    """The text's perplexity before and after the cut (None with fewer than two tokens)."""
    if not len(v.nll_clean):
        return None, None
    return float(np.exp(v.nll_clean.mean())), float(np.exp((v.nll_clean + v.loss_change).mean()))


def changed_rows(v: AblationView) -> tuple[list[dict], int]:
    """The positions whose most likely next word changed, for a table (at most
    MAX_CHANGED_ROWS), and how many there are."""
    rows = []
    for i in range(len(v.labels)):
        if v.top_before[i] == v.top_after[i]:
            continue
        d = v.loss_change[i] if i < len(v.loss_change) else None
        rows.append({"Word": f"{i} · {v.labels[i]}",
                     "Predicted next": f"{v.top_before[i]} ({sig3(v.p_before[i])})",
                     "After the cut": f"{v.top_after[i]} ({sig3(v.p_after[i])})",
                     "Δ loss": sig3(d) if d is not None else "—"})
    return rows[:MAX_CHANGED_ROWS], len(rows)


def head_view(patterns: np.ndarray, layer: int, heads: list[int]) -> np.ndarray:
    """The ``[query, key]`` pattern of one head, or the mean of several heads of ``layer``."""
    return patterns[layer, heads].astype(np.float32).mean(0)


# -- panel 2: activation patching ----------------------------------------------------------------

@dataclass(frozen=True)
class PatchView:
    clean_labels: list[str]
    corrupted_labels: list[str]
    answer: str
    distractor: str
    clean_diff: float
    corrupted_diff: float
    resid: np.ndarray          # [L, T] share restored
    heads: np.ndarray          # [L, H]


@st.cache_data(show_spinner="Patching…", max_entries=PATCHINGS_KEPT)
def cached_patching(path: str, clean: str, corrupted: str, answer: str, distractor: str,
                    dial: Dial, block_size: int | None, partition: str | None
                    ) -> PatchView | str:
    """The patching maps, or what is wrong with the pair as one sentence for the visitor."""
    model, tok = load_checkpoint(path)
    a, b = tok.encode(clean), tok.encode(corrupted)    # ≤ MAX_PAIR_CHARS each: cheap
    most = min(MAX_PAIR_TOKENS, model.cfg.n_ctx)
    if not a or not b:
        return "Type both prompts to draw a patching map."
    if len(a) != len(b):
        return (f"The clean prompt has {len(a)} words and the corrupted one {len(b)}: patching "
                "copies activations position by position, so both need the same number of "
                "words (punctuation counts as a word).")
    if len(a) > most:
        return f"The prompts have {len(a)} words; patching here reads at most {most}."
    words = []
    for w, what in ((answer, "answer"), (distractor, "distractor")):
        ids = tok.encode(w) if w.strip() else []
        if len(ids) > 1:
            return f"The {what} must be one word; “{w}” is {len(ids)}."
        if ids and ids[0] == tok.unk_id:
            return f"The {what} “{w}” is not in this model's vocabulary."
        words.append(ids[0] if ids else None)
    try:
        p = iv.activation_patching(model, [a], [b], answer=words[0], distractor=words[1],
                                   dial=dial, partition=_partition(model, tok, partition,
                                                                   block_size))
    except ValueError as e:
        return (f"No patching map: {e}. Type an answer (the word the clean prompt should "
                "predict next) and a distractor (the corrupted prompt's).")
    ans, dis = tok.labels([p.answer, p.distractor])
    return PatchView(tok.labels(a), tok.labels(b), ans, dis, p.clean_diff, p.corrupted_diff,
                     p.resid.numpy(), p.heads.numpy())


@guarded("patch these prompts")
def patching(s, clean: str, corrupted: str, answer: str, distractor: str) -> PatchView | None:
    """The patching maps of a pair at the sidebar's dial and blocks; None after a notice (a
    pair that cannot be patched, such as prompts of different lengths, gives a warning)."""
    notes = []
    parts = []
    for text, what, most in ((clean, "clean prompt", MAX_PAIR_CHARS),
                             (corrupted, "corrupted prompt", MAX_PAIR_CHARS),
                             (answer, "answer", MAX_WORD_CHARS),
                             (distractor, "distractor", MAX_WORD_CHARS)):
        if len(text) > most:
            notes.append(f"The {what} has {len(text):,} characters; only the first {most} "
                         "were read.")
        parts.append(text[:most])
    show_notices(notes)
    got = cached_patching(s.checkpoint_path, *parts, s.dial, s.block_size, s.partition)
    if isinstance(got, str):
        st.info(got, icon="ℹ️")
        return None
    return got


def position_labels(v: PatchView) -> list[str]:
    """Each position as "i · word", or "i · clean/corrupted" where the prompts differ."""
    return [f"{i} · {a}" if a == b else f"{i} · {a}/{b}"
            for i, (a, b) in enumerate(zip(v.clean_labels, v.corrupted_labels))]


# -- panel 3: the logit lens -----------------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=LENSES_KEPT)
def cached_lens(path: str, text: str, dial: Dial, block_size: int | None,
                partition: str | None, pos: int) -> list[dict]:
    model, tok = load_checkpoint(path)
    ids, _ = prepare_text(tok, text, model.cfg.n_ctx)
    lp, top = iv.logit_lens(model, [ids], iv.TOP_K, dial,
                            _partition(model, tok, partition, block_size))
    last = len(lp) - 1
    rows = []
    for layer in range(len(lp)):
        words = tok.labels(top[layer, pos].tolist())
        probs = lp[layer, pos].exp().tolist()
        row = {"Read after": f"layer {layer}" + (" (the output)" if layer == last else "")}
        row.update({f"Top {k + 1}": f"{w} ({sig3(p)})"
                    for k, (w, p) in enumerate(zip(words, probs))})
        rows.append(row)
    return rows


@guarded("read the logit lens")
def lens(s, pos: int) -> list[dict]:
    """One row per layer: the top-5 next words after position ``pos`` read from the residual
    stream after that layer, with probabilities; [] after a notice."""
    return cached_lens(s.checkpoint_path, s.text, s.dial, s.block_size, s.partition, pos)


# -- the view's choices in the link ------------------------------------------------------------
# The sidebar's link (ui.links) is read once per session; this page's own values likewise, on
# its first run, into the values ``ui.keep`` seeds its widgets from. A bad one is skipped with a
# notice, like the sidebar's.

LINK_KEYS = ("iv_layer", "iv_heads", "iv_variant", "iv_pair", "iv_clean", "iv_corrupt",
             "iv_answer", "iv_distractor", "iv_pos")
_PAIR_TEXTS = {"iv_clean": ("clean", MAX_PAIR_CHARS), "iv_corrupt": ("corrupted", MAX_PAIR_CHARS),
               "iv_answer": ("answer", MAX_WORD_CHARS),
               "iv_distractor": ("distractor", MAX_WORD_CHARS)}


def parse_heads(raw: str, n_heads: int) -> list[int]:
    """A link's head list, "all" or "0,2,3", as sorted distinct heads; a ValueError says what
    is wrong (a list longer than the model's heads is refused unread).

    >>> parse_heads("3,1", 4), parse_heads("all", 2)
    ([1, 3], [0, 1])
    """
    if raw == "all":
        return list(range(n_heads))
    if len(raw) > MAX_LINK_LIST or raw.count(",") >= n_heads:
        raise ValueError(f"more heads than this model's {n_heads}")
    heads = [int(p) for p in raw.split(",")]
    if not heads or len(set(heads)) != len(heads) or not all(0 <= h < n_heads for h in heads):
        raise ValueError(f"heads must be distinct, in 0..{n_heads - 1}")
    return sorted(heads)


def read_link(n_layers: int, n_heads: int, n_tokens: int) -> None:
    """Read this page's link values into the kept values, once per session."""
    ss = st.session_state
    if ss.get("_iv_link_read"):
        return
    ss["_iv_link_read"] = True
    qp, notices = st.query_params, []
    parsers = {
        "iv_layer": lambda r: _index(r, n_layers),
        "iv_heads": lambda r: parse_heads(r, n_heads),
        "iv_variant": lambda r: _one_of(r, iv.VARIANTS),
        "iv_pair": lambda r: _one_of(r, list(EXAMPLES) + [OWN_PAIR]),
        "iv_pos": lambda r: _index(r, n_tokens),
    }
    for key in LINK_KEYS:
        if key not in qp:
            continue
        raw = qp[key]
        try:
            value = parsers[key](raw) if key in parsers else raw[:_PAIR_TEXTS[key][1]]
        except (ValueError, TypeError):
            shown = raw if len(raw) < 40 else raw[:40] + "…"
            notices.append(f"Link parameter {key}={shown!r} is not valid; using the default.")
            continue
        ss[PERSIST + key] = value
    pair = EXAMPLES.get(ss.get(PERSIST + "iv_pair"))
    if pair is not None:                       # an example: its texts, whatever the link says
        for key, (field, _) in _PAIR_TEXTS.items():
            ss[PERSIST + key] = getattr(pair, field)
    elif any(k in qp for k in _PAIR_TEXTS):
        ss[PERSIST + "iv_pair"] = OWN_PAIR
    show_notices(notices)


def _index(raw: str, n: int) -> int:
    v = int(raw)
    if not 0 <= v < n:
        raise ValueError(f"{v} is not in 0..{n - 1}")
    return v


def _one_of(raw: str, options) -> str:
    if raw not in options:
        raise ValueError(f"{raw!r} is not an option")
    return raw


def fit_heads(n_heads: int) -> None:
    """Drop kept heads this checkpoint does not have (another checkpoint chose them); none
    left: head 0. A choice the visitor emptied stays empty."""
    ss = st.session_state
    for key in (PERSIST + "iv_heads", "iv_heads"):
        if key in ss:
            kept = [h for h in ss[key] if isinstance(h, int) and 0 <= h < n_heads]
            if kept != ss[key]:
                ss[key] = kept or [0]


def fill_pair(key: str) -> None:
    """The example menu's on_change: keep the choice and copy the example into the four
    fields (the visitor's own pair keeps what they typed)."""
    ss = st.session_state
    ss[PERSIST + key] = ss[key]
    pair = EXAMPLES.get(ss[key])
    if pair is not None:
        for k, (field, _) in _PAIR_TEXTS.items():
            ss[k] = ss[PERSIST + k] = getattr(pair, field)


def own_text(key: str) -> None:
    """A pair field's on_change: keep the text; the pair is now the visitor's own."""
    ss = st.session_state
    ss[PERSIST + key] = ss[key]
    ss["iv_pair"] = ss[PERSIST + "iv_pair"] = OWN_PAIR


def write_link(layer: int, heads: list[int], n_heads: int, variant: str, pos: int) -> None:
    """Mirror the view's choices into the URL (only what differs): an example pair by its
    name, the visitor's own by its four texts, each cut to its bound."""
    ss = st.session_state
    pair = ss.get("iv_pair", OWN_PAIR)
    want = {"iv_layer": str(layer), "iv_variant": variant, "iv_pair": pair, "iv_pos": str(pos)}
    if heads:
        want["iv_heads"] = "all" if len(heads) == n_heads else ",".join(map(str, heads))
    if pair not in EXAMPLES:
        want.update({k: str(ss.get(k, ""))[:most] for k, (_, most) in _PAIR_TEXTS.items()})
    current = st.query_params.to_dict()
    for k in _PAIR_TEXTS:
        if k in current and k not in want:
            del st.query_params[k]
    for k, v in want.items():
        if current.get(k) != v:
            st.query_params[k] = v
