"""Files an operator (or a failed sweep) put in place reach visitors only bounded and without
the server's internals (issue 30, item 8): a cache folder of 10,000 junk files gives a bounded
number of notices, and a failed app-started sweep's stack trace stays in the server's log."""
import time

import sweep_examples as examples

from tests import test_app_tradeoff_sweeps as app
from ui import launcher as launch
from ui.notices import MAX_NOTICES

env = app.env   # the Sweeps page pointed at caches in tmp (fixture)

TRACE = '''=== 2026-01-01 00:00:00 python -m localist_core sweep --config tiny
loading WikiText-2
Traceback (most recent call last):
  File "/srv/app/localist_core/__main__.py", line 4, in <module>
    sys.exit(main())
             ^^^^^^
  File "/srv/app/localist_core/experiments/train.py", line 99, in train
    raise ValueError("the secret internals")

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/srv/app/localist_core/cli/__init__.py", line 12, in main
    return run(args)
RuntimeError: training failed
'''


def test_a_junk_cache_folder_gives_a_bounded_number_of_notices(env):
    runs = examples.synthetic_runs()
    app.write_cache(env / "shipped", runs, {f"junk{i:05d}.json": "x" for i in range(10_000)})
    at = app.visit("app_pages/sweeps.py")
    t0 = time.process_time()
    at.run()
    cpu = time.process_time() - t0
    assert not at.exception
    assert len(at.warning) <= MAX_NOTICES + 2, len(at.warning)      # 4,097 before
    assert any("more notices like these" in w.value for w in at.warning)
    print(f"junk cache: {len(at.warning)} warnings, {cpu:.2f} s CPU per rerun")


def test_a_stack_trace_in_a_sweep_log_is_not_shown(env, tmp_path):
    folder = env / "mine" / "broken"
    folder.mkdir(parents=True)
    (folder / launch.LOG_FILE).write_text(TRACE)
    tail = launch.log_tail(folder)
    assert "Traceback" not in tail and 'File "' not in tail and "sys.exit" not in tail
    assert "secret internals" not in tail
    assert "RuntimeError: training failed" in tail and launch.TRACE_SHOWN in tail
    (folder / launch.LOG_FILE).write_text("\n".join(TRACE.splitlines()[4:]))   # cut mid-trace
    assert 'File "' not in launch.log_tail(folder)


def test_the_sweeps_page_log_panel_shows_no_trace(env):
    folder = env / "mine" / "broken"
    (folder / "cache").mkdir(parents=True)
    (folder / launch.LAUNCH_FILE).write_text('{"pid": 999999999, "started": 1.0}')
    (folder / launch.LOG_FILE).write_text(TRACE)
    at = app.visit("app_pages/sweeps.py")
    logs = [c.value for c in at.code]
    assert logs and not any("Traceback" in c or 'File "' in c for c in logs), logs
