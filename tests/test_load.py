"""Concurrent users (README "Security"): threads sharing one model each get their own activations,
and 30 sessions speaking Streamlit's websocket protocol, moving sliders on the running app, meet
no error (bench/load_test.py; BENCHMARKS.md, "Serving a class", records its latencies, CPU and
memory, and holds the speed bar: no time is asserted here)."""
import importlib.util
import sys
import threading
from pathlib import Path

import pytest
import torch

from localist_core.experiments.train import make_model
from localist_core.model.dial import Dial

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("load_test", ROOT / "bench" / "load_test.py")
load_test = importlib.util.module_from_spec(_spec)
sys.modules["load_test"] = load_test     # its dataclasses look their module up
_spec.loader.exec_module(load_test)


def test_threads_sharing_one_model_never_see_each_others_activations(tiny_model_cfg,
                                                                     tiny_corpus, tokens):
    model = make_model(tiny_model_cfg, tiny_corpus, seed=0).eval()
    settings = [(lam, tau, gamma) for lam in (0.0, 0.5, 1.0) for tau in (0.5, 2.0)
                for gamma in (0.0, 3.0)]
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(tiny_model_cfg.n_layers)]

    def run(s):
        lp, cache = model.run_with_cache(tokens, Dial(*s), names_filter=names)
        return lp, [cache[n] for n in names]

    expected = {s: run(s) for s in settings}
    mismatches, errors = [], []

    def worker(s):
        try:
            for _ in range(4):
                lp, pats = run(s)
                if not (torch.equal(lp, expected[s][0])
                        and all(torch.equal(a, b) for a, b in zip(pats, expected[s][1]))):
                    mismatches.append(s)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(s,)) for s in settings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not mismatches, (errors, mismatches)


@pytest.mark.load
def test_thirty_sessions_moving_sliders_meet_no_error():
    # Websocket clients, not browsers: thirty Chromium renderers would starve a 2-core server
    # and the run would measure them. Wall time: server start, first views, 25 s of moves.
    result = load_test.run(sessions=30, seconds=25, client="ws")
    print("\n" + load_test.table(result))
    errors = result["error_messages"]       # the first 20; a failure shows them
    assert result["errors"] == 0, errors
    assert result["sessions_loaded"] == 30, errors
    assert result["fewest_moves"] >= 1, errors  # every session got a move through
    assert result["reruns"] >= 30, errors
    assert result["rss_mb"], "the server's memory was never sampled"
