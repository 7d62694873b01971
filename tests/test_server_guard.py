"""What a visitor's websocket may send (README "Security", ``ui.server_guard``): a real
``streamlit run app.py`` on a free loopback port, spoken to in Streamlit's own protocol with
bench/load_test.py's helpers. A visitor's ``clear_cache`` drops no shared cache."""
import asyncio
import importlib.util
import re
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if "load_test" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("load_test", ROOT / "bench" / "load_test.py")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["load_test"] = _module     # its dataclasses look their module up
    _spec.loader.exec_module(_module)
load_test = sys.modules["load_test"]

# The metrics endpoint recomputes cache sizes at most every 5 s
# (streamlit/web/server/starlette/starlette_routes.py, _METRICS_EXPENSIVE_STATS_TTL_SECONDS).
METRICS_TTL_S = 5.0
CACHE_LINE = re.compile(r'cache_memory_bytes\{cache_type="(\w+)",cache="([\w.]+)"\} (\d+)')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free loopback port: (url, process, log path)."""
    port = load_test.free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    proc = load_test.start_server(port, log)
    try:
        load_test.wait_healthy(url, proc)
        yield url, proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait(timeout=15)


def _connect(url: str):
    from websockets.asyncio.client import connect

    return connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                   max_size=None, open_timeout=60)


async def _first_view(ws):
    """A session on the Explorer of the shipped dial model, its first run finished."""
    user = load_test.WsUser(ws, load_test.START_QUERY)
    run = await user.rerun(load_test.WS_LOAD_TIMEOUT_S)
    assert run.title and not run.problems, run.problems
    return user


async def _send_and_settle(ws, back) -> None:
    """Send ``back``, then a heartbeat, and read until its answer: the server handles one
    session's messages in order, so ``back`` has been handled."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    await ws.send(back.SerializeToString())
    beat = BackMsg()
    beat.app_heartbeat = True
    await ws.send(beat.SerializeToString())
    deadline = time.monotonic() + 60
    while True:
        msg = ForwardMsg()
        msg.ParseFromString(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if msg.WhichOneof("type") == "heartbeat_ack":
            return


def _cache_sizes(url: str) -> dict[str, int]:
    """Bytes held by each st.cache_data and st.cache_resource function, from the server."""
    with urllib.request.urlopen(f"{url}/_stcore/metrics?families=cache_memory_bytes",
                                timeout=30) as r:
        text = r.read().decode()
    return {name: int(n) for _, name, n in CACHE_LINE.findall(text)}


def test_a_visitors_clear_cache_drops_no_shared_cache(server):
    """Streamlit clears every st.cache_data and st.cache_resource for everyone on one
    visitor's ``clear_cache``; the app ignores it and says so in the server log."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    url, _, log = server

    async def scenario():
        async with _connect(url) as ws:
            await _first_view(ws)                 # loads the model, analyses, figures
        time.sleep(METRICS_TTL_S + 0.5)
        before = _cache_sizes(url)
        async with _connect(url) as ws:           # another visitor
            back = BackMsg()
            back.clear_cache = True
            for _ in range(3):
                await _send_and_settle(ws, back)
        time.sleep(METRICS_TTL_S + 0.5)
        return before, _cache_sizes(url)

    before, after = asyncio.run(scenario())
    shared = ("ui.cached_analysis", "ui.loaders._model", "ui.figures.attention_heatmap")
    assert all(before.get(name, 0) > 0 for name in shared), before
    assert all(after.get(name, 0) >= before[name] for name in shared), (before, after)
    assert "Ignored a visitor's clear_cache" in log.read_text(errors="replace")
