"""Every script in scripts/ runs as its docstring says, from a fresh clone: no install and no
PYTHONPATH, from the repository root."""
import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))
# An indented line of a docstring that runs the script: optional VAR=value words, then python.
COMMAND = re.compile(r"^\s+((?:\w+=\S+\s+)*python\s+scripts/\S+\.py)", re.M)


def _documented_command(script: Path) -> list[str]:
    """The docstring's command line for ``script``, up to the script's path."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    found = [shlex.split(m) for m in COMMAND.findall(doc)]
    found = [words for words in found if words[-1] == f"scripts/{script.name}"]
    assert found, f"{script.name}: its docstring shows no `python scripts/{script.name}` line"
    return found[0]


def _run(words: list[str], *extra: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a documented command line: its VAR=value words go to the environment, ``python`` is
    this interpreter, and PYTHONPATH is dropped, as in a fresh shell on a fresh clone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    while "=" in words[0]:
        key, value = words[0].split("=", 1)
        env[key] = value
        words = words[1:]
    assert words[0] == "python"
    return subprocess.run([sys.executable, *words[1:], *extra], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120)


def test_there_are_scripts_to_check():
    assert {p.name for p in SCRIPTS} >= {"block_lengths.py", "calibrate_beta.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_runs_as_the_docstring_says(script):
    out = _run(_documented_command(script), "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: ")


@pytest.mark.parametrize("given", [[], ["{tmp}/runs/dial-*", "{tmp}/runs/attention-l0.0-*"]],
                         ids=["no checkpoints", "unexpanded globs"])
def test_calibrate_beta_names_what_it_needs_in_one_line(tmp_path, given):
    words = _documented_command(ROOT / "scripts" / "calibrate_beta.py")
    out = _run(words, *(g.format(tmp=tmp_path) for g in given))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "reproduce.sh" in lines[0] and "not shipped" in lines[0]
    if given:
        assert "no such folder" in lines[0] and "dial-*" in lines[0]


def test_calibrate_beta_reads_the_corpus_once_per_vocabulary(tmp_path, monkeypatch, capsys):
    """Checkpoints that share a vocabulary share one read of the corpus; one with another
    vocabulary gets its own, so every checkpoint is scored on its own token ids."""
    import importlib.util
    from types import SimpleNamespace

    import torch

    import localist_core
    from localist_core.analysis import evaluate
    from localist_core.experiments import data, sweep
    vocab = {"a": ["<eos>", "<unk>", "the"], "b": ["<eos>", "<unk>", "the"],
             "c": ["<eos>", "<unk>", "a"]}
    for name in vocab:
        (tmp_path / name).mkdir()
    reads = []

    def load_corpus(data_dir, tokenizer):
        reads.append(tokenizer.words)
        return SimpleNamespace(tokenizer=tokenizer, valid=torch.zeros(4, dtype=torch.long))
    ev = {"attention": {"in_block_mass": {"mean": 0.5}}, "perplexity": 100.0}
    monkeypatch.setattr(localist_core, "load_model", lambda run: (
        None, SimpleNamespace(words=list(vocab[Path(run).name]))))
    monkeypatch.setattr(data, "load_corpus", load_corpus)
    monkeypatch.setattr(sweep, "with_barrier_sharpness", lambda model, beta: model)
    monkeypatch.setattr(evaluate, "evaluate_stream", lambda *a, **k: ev)
    monkeypatch.setattr(sys, "argv", ["calibrate_beta.py", *(str(tmp_path / n) for n in vocab)])
    spec = importlib.util.spec_from_file_location("calibrate_beta",
                                                  ROOT / "scripts" / "calibrate_beta.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    threads = torch.get_num_threads()
    try:
        assert script.main() == 0
    finally:
        torch.set_num_threads(threads)
    assert reads == [vocab["a"], vocab["c"]]
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == len(vocab) * len(script.BETAS)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.sh")))
def test_every_shell_script_parses(script):
    out = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
