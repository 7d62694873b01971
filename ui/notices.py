"""What a visitor is told: text shown literally (``plain``) and without the server's file layout
(``shown``), notices, and the one error guard (``guarded``) that turns a failed load or
computation into a notice and a server-log trace, never a traceback."""
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

LOG = logging.getLogger("ui")

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+-.!|<>~$:"})
# An absolute path: a "/" that does not follow a word character (so "λ/τ" is left alone).
_ABS_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"`,;:()\[\]<>|]*")


def _short_path(m: re.Match) -> str:
    path = Path(m.group(0))
    try:
        return str(path.relative_to(REPO)) or "."
    except ValueError:
        parts = path.parts
    # Only what starts at a real top-level folder (/tmp, /home, …) is a server path; a rule's
    # "/a{9}/" or a visitor's "/x/y" is their own text and stays as typed.
    if len(parts) <= 2 or not os.path.isdir(os.path.join("/", parts[1])):
        return m.group(0)
    return "…/" + "/".join(parts[-2:])


def shown(text: str) -> str:
    """``text`` without the server's file layout: a path inside the app's folder becomes
    relative to it, any other path under one of the server's top-level folders keeps its last
    two parts (``…/run/config.json``).
    The full message still goes to the server log where it is logged."""
    return _ABS_PATH.sub(_short_path, str(text))


def plain(text: str) -> str:
    """Escape Markdown so user-supplied text renders literally (HTML is never enabled), after
    cutting server paths out of it (``shown``)."""
    return shown(text).translate(_MD_SPECIAL)


def show_notices(notices: list[str]) -> None:
    """Notices as warnings, rendered as plain text (never as Markdown or HTML)."""
    for note in notices:
        st.warning(plain(note), icon="⚠️")


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
