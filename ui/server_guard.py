"""What the server accepts from a visitor's websocket, beyond what Streamlit checks: installed
once, at the first page run (``install``), as small patches on Streamlit's ``AppSession`` and
on the websocket protocol uvicorn builds per connection (README "Security").

- ``clear_cache`` is ignored: Streamlit would clear st.cache_data and st.cache_resource, the
  loaded models, analyses and figures that every session shares, for any one visitor. The
  operator clears them by restarting the server.
- A widget value is cut or dropped before Streamlit holds it: a text to what the app reads
  (``MAX_TEXT_CHARS`` + 1 characters, so the app still says it cut), any other value over
  ``WIDGET_VALUE_MAX_BYTES`` dropped (the widget keeps its value), the query string to
  ``QUERY_MAX_BYTES``.
- A websocket frame over ``server.maxWidgetStateSize`` (.streamlit/config.toml) is refused by
  the protocol from its header, before its payload is read: Streamlit applies that limit only
  to a frame already received, and uvicorn's own limit is ``server.maxMessageSize``, which
  also bounds what the server sends (the largest figure).
"""
from __future__ import annotations

import logging
import math

from localist_core.analysis.inspection import MAX_TEXT_CHARS

_LOG = logging.getLogger(__name__)

# A deep link's query string: the web server refuses a request line over ~128 KB (README
# "Limits"), so a browser never sends a longer one; what the app reads of it is far less.
QUERY_MAX_BYTES = 128 * 1024
# Added to a query string that was cut, with its length, so the page says so (ui.links).
LINK_CUT = "link_cut"
# The largest value of any other widget: a typed text is cut, not dropped; the rest (numbers,
# choices, the Sweeps form's fields) are a few hundred bytes at most.
WIDGET_VALUE_MAX_BYTES = 4 * MAX_TEXT_CHARS + 1024

_installed = False


def install() -> bool:
    """Patch Streamlit's session and the websocket protocol, once per process; True the first
    time. Safe to call on every page run."""
    global _installed
    if _installed:
        return False
    from streamlit.runtime.app_session import AppSession

    AppSession._handle_clear_cache_request = _ignore_clear_cache
    handle = AppSession.handle_backmsg
    AppSession.handle_backmsg = lambda self, msg: handle(self, bound_backmsg(msg))
    _bound_frames()
    _installed = True
    return True


def _ignore_clear_cache(self) -> None:
    """In place of AppSession._handle_clear_cache_request (which clears every shared cache and
    the session's state): nothing, and a line in the server log."""
    _LOG.warning("Ignored a visitor's clear_cache (session %s); restart the server to clear "
                 "the caches.", getattr(self, "id", "?"))


def bound_backmsg(msg):
    """``msg`` (a BackMsg) with every widget value and the query string of a rerun request cut
    to what the app reads; returns the same message."""
    if msg.WhichOneof("type") != "rerun_script":
        return msg
    state = msg.rerun_script
    if len(state.query_string) > QUERY_MAX_BYTES:
        n = len(state.query_string)
        cut = state.query_string[:QUERY_MAX_BYTES - 64]
        kept = cut[:cut.rfind("&")] if "&" in cut else ""
        state.query_string = (kept + "&" if kept else "") + f"{LINK_CUT}={n}"
        _LOG.warning("Cut a query string of %d bytes.", n)
    widgets = state.widget_states.widgets
    for i in reversed(range(len(widgets))):
        w = widgets[i]
        kind = w.WhichOneof("value")
        if kind == "string_value":
            if len(w.string_value) > MAX_TEXT_CHARS + 1:
                w.string_value = w.string_value[:MAX_TEXT_CHARS + 1]
        elif (kind == "double_value" and not math.isfinite(w.double_value)) or (
                kind == "double_array_value"
                and not all(math.isfinite(x) for x in w.double_array_value.data[:64])):
            # no widget here sends NaN or inf; a forged one jammed the session (Streamlit's
            # int deserializer raised on every later rerun, before the page ran)
            _LOG.warning("Dropped a non-finite widget value (%s).", kind)
            del widgets[i]
        elif w.ByteSize() > WIDGET_VALUE_MAX_BYTES:
            _LOG.warning("Dropped a widget value of %d bytes (%s).", w.ByteSize(),
                         w.WhichOneof("value"))
            del widgets[i]
    return msg


def _bound_frames() -> None:
    """Every later websocket connection refuses a frame over ``server.maxWidgetStateSize`` from
    its header (websockets' ``max_size``), before reading it. Only with uvicorn's
    "websockets-sansio" protocol, the one Streamlit 1.67 picks; elsewhere Streamlit's own check
    after the frame closes the connection."""
    try:
        from streamlit.runtime.runtime_util import get_max_widget_state_size_bytes
        from uvicorn.protocols.websockets import websockets_sansio_impl as impl
    except ImportError:
        return
    protocol, limit = impl.ServerProtocol, get_max_widget_state_size_bytes()

    def bounded(*args, max_size=None, **kwargs):
        if isinstance(max_size, int):
            max_size = min(max_size, limit)
        return protocol(*args, max_size=max_size, **kwargs)

    impl.ServerProtocol = bounded
