"""What a visitor is told: text shown literally (``plain``) and without the server's file layout
(``shown``, the one place that hides it), notices, and the one error guard (``guarded``) that
turns a failed load or computation into a notice and a server-log trace, never a traceback."""
from __future__ import annotations

import copy
import functools
import logging
import os
import re
from pathlib import Path

import streamlit as st

from localist_core.analysis.rules import RuleError
from localist_core.experiments.cache import SweepCacheError
from localist_core.model.checkpoint import CheckpointError
from localist_core.paths import REPO
from ui.launch_root import ROOT_VAR, app_root

LOG = logging.getLogger("ui")

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+-.!|<>~$:"})
# A path in a message runs up to a space, a quote, a bracket or the punctuation after it. An
# absolute one starts at a "/" that does not follow a word character (so "λ/τ" is left alone).
_PATH_CHAR = r"[^\s'\"`,;:()\[\]<>|]"
_NOT_AFTER = r"(?<![\w.~-])"


@functools.lru_cache(maxsize=8)
def _paths(known: tuple[str, ...]) -> re.Pattern:
    """Absolute paths in a message: one of the ``known`` folders (whose names may hold a space)
    with what follows it, else any "/…" run of path characters."""
    ends = r"(?![^\s'\"`,;:()\[\]<>|/])"   # a known folder ends at "/" or where a path ends
    alts = [re.escape(k) + ends + _PATH_CHAR + "*" for k in sorted(known, key=len, reverse=True)]
    return re.compile(_NOT_AFTER + "(?:" + "|".join(alts + ["/" + _PATH_CHAR + "*"]) + ")")


def _hidden(raw: str, root: Path) -> str:
    path = Path(raw)
    if path == REPO or REPO in path.parents:
        out = str(path.relative_to(REPO))
    elif path == root or root in path.parents:
        rest = path.relative_to(root)
        out = f"${ROOT_VAR}" + (f"/{rest}" if str(rest) != "." else "")
    else:
        parts = path.parts
        # Only what starts at a real top-level folder (/tmp, /home, …) is a server path; a
        # rule's "/a{9}/" or a visitor's "/x/y" is their own text and stays as typed.
        if len(parts) <= 2 or not os.path.isdir(os.path.join("/", parts[1])):
            return raw
        out = "…/" + "/".join(parts[-2:])
    return out + "/" if raw.endswith("/") and not out.endswith("/") else out


def shown(text, root: Path | None = None) -> str:
    """``text`` (a message, a log, a path) without the server's file layout, the same on every
    page. Each absolute path in it becomes
    - relative to the app's folder when inside it (``assets/sweep``; the folder itself ``.``);
    - else ``$LOCALIST_APP_SWEEPS/…`` when inside the root of the sweeps visitors start
      (``root``, default ``ui.launch_root.app_root()``), so an app sweep's cache reads
      ``$LOCALIST_APP_SWEEPS/<name>/cache`` wherever it is named;
    - else, under one of the server's top-level folders, its last two parts
      (``…/run/config.json``).
    The full message still goes to the server log where it is logged."""
    text = str(text)
    if "/" not in text:
        return text
    root = app_root() if root is None else Path(root)
    return _paths((str(REPO), str(root))).sub(lambda m: _hidden(m.group(0), root), text)


def plain(text: str) -> str:
    """Escape Markdown so user-supplied text renders literally (HTML is never enabled), after
    cutting server paths out of it (``shown``)."""
    return shown(text).translate(_MD_SPECIAL)


MAX_NOTICES = 32  # shown per call; a folder of 10,000 junk files gave 4,097 warnings a rerun


def show_notices(notices: list[str]) -> None:
    """Notices as warnings, rendered as plain text (never as Markdown or HTML): the first
    MAX_NOTICES, then one line counting the rest, which go to the server log (once per list)."""
    for note in notices[:MAX_NOTICES]:
        st.warning(plain(note), icon="⚠️")
    rest = notices[MAX_NOTICES:]
    if rest:
        st.warning(f"… and {len(rest):,} more notices like these (the server log lists them).",
                   icon="⚠️")
        _log_rest(tuple(rest))


@functools.lru_cache(maxsize=16)
def _log_rest(rest: tuple[str, ...]) -> None:
    """Log the notices not shown, once per distinct list (not on every rerun)."""
    LOG.warning("%d notices not shown:\n%s", len(rest), "\n".join(rest[:1000]))


# -- the error guard -----------------------------------------------------------------------------
# Failures whose message is written for the visitor (a refused checkpoint, cache file or rule)
# are shown as they are; anything else is a bug or the operator's problem: the visitor gets one
# line, the server log the trace.
TOLD = ((CheckpointError, "error", "This checkpoint cannot be used: {}"),
        (SweepCacheError, "warning", "Refused cache file: {}"),
        (RuleError, "warning", "The rule is not applied: {}."))
ICONS = {"error": "🚫", "warning": "⚠️"}


def refuse(e: Exception, what: str, detail: str | None = None) -> None:
    """The notice for a load or computation that failed: ``what`` completes "Could not …"
    (``"read the sweep results"``); ``detail`` (a path) goes to the server log only."""
    where = f" ({detail})" if detail else ""
    for kind, level, message in TOLD:
        if isinstance(e, kind):
            LOG.warning("could not %s%s: %s", what, where, e)
            getattr(st, level)(plain(message.format(e)), icon=ICONS[level])
            return
    LOG.error("could not %s%s", what, where, exc_info=e)
    st.error(plain(f"Could not {what}; the server log has the details."), icon="🚫")


def guarded(what: str, fallback=None, detail=None):
    """Decorator for what a page calls: when the call raises, the visitor gets ``refuse``'s
    notice and the page gets a fresh copy of ``fallback``. ``detail``, called with the call's
    arguments, names what failed in the server log (a checkpoint's path).

    Streamlit's own st.stop and st.rerun pass through (they are not ``Exception``s).
    """
    def wrap(fn):
        @functools.wraps(fn)
        def safe(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:   # noqa: BLE001 - a visitor gets a notice, never a traceback
                refuse(e, what, _detail(detail, args, kwargs))
                return copy.deepcopy(fallback)
        return safe
    return wrap


def _detail(detail, args, kwargs) -> str | None:
    try:
        return None if detail is None else detail(*args, **kwargs)
    except Exception:   # noqa: BLE001 - the log line loses its detail, the visitor nothing
        return None
