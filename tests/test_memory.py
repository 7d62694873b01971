"""The training processes' allocator setting (memory.py), run in a child process so that the
test process keeps glibc's defaults."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = textwrap.dedent("""
    import torch
    from localist_core.experiments.memory import keep_freed_memory
    print(keep_freed_memory(), keep_freed_memory())
    torch.zeros(40_000_000 // 4).add_(1)        # big tensors still work under the setting
""")


def _probe(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LOCALIST_KEEP_FREED_MEMORY"}
    env["PYTHONPATH"] = str(ROOT)
    if env_value is not None:
        env["LOCALIST_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return out.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.slow
def test_keep_freed_memory_is_idempotent_and_can_be_turned_off():
    assert _probe(None) == "True True"
    for off in ("0", "false", "Off"):
        assert _probe(off) == "False False"
