"""What the server accepts from a visitor's websocket, beyond what Streamlit checks: installed
once, at the first page run (``install``), as small patches on Streamlit's ``AppSession``
(README "Security").

- ``clear_cache`` is ignored: Streamlit would clear st.cache_data and st.cache_resource, the
  loaded models, analyses and figures that every session shares, for any one visitor. The
  operator clears them by restarting the server.
"""
from __future__ import annotations

import logging

_LOG = logging.getLogger(__name__)

_installed = False


def install() -> bool:
    """Patch Streamlit's session, once per process; True the first time. Safe to call on every
    page run."""
    global _installed
    if _installed:
        return False
    from streamlit.runtime.app_session import AppSession

    AppSession._handle_clear_cache_request = _ignore_clear_cache
    _installed = True
    return True


def _ignore_clear_cache(self) -> None:
    """In place of AppSession._handle_clear_cache_request (which clears every shared cache and
    the session's state): nothing, and a line in the server log."""
    _LOG.warning("Ignored a visitor's clear_cache (session %s); restart the server to clear "
                 "the caches.", getattr(self, "id", "?"))
