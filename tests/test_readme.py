"""The README's snippet runs, and CI runs the README's test command."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from localist_core.experiments.data import resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    test_cmd = next(c for c in commands if "pytest" in c)
    run = (ROOT / ".ci" / "run").read_text()
    assert test_cmd.split("&&")[-1].split()[-3:] == ["python", "-m", "pytest"]
    assert "\npython -m pytest" in run and "HF_DATASETS_OFFLINE=1" in run
    assert "pip install -r requirements.txt && streamlit run app.py" in README


@pytest.mark.skipif(resolve_data_dir() is None, reason="no WikiText-2 folder on this machine")
@pytest.mark.slow
def test_quick_start_snippet_runs():
    snippet = re.search(r"## Quick start.*?```python\n(.*?)```", README, flags=re.S).group(1)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for label in ("entropy (bits)", "in-block mass", "pointer fidelity"):
        assert label in out.stdout
