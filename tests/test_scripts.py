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
    assert "--cache" in lines[0] and "study.sh" in lines[0] and "not shipped" in lines[0]
    if given:
        assert "no such folder" in lines[0] and "dial-*" in lines[0]


def test_calibrate_beta_documents_the_default_json_location():
    """REPRODUCTION.md reads paths.BETA_CALIBRATION: the docstring writes there, and it lies
    outside every sweep cache folder (load_cache would read it as a result)."""
    from localist_core.paths import ASSETS, BETA_CALIBRATION, REPO, SHIPPED_SWEEP, STUDY_SWEEP
    doc = ast.get_docstring(ast.parse((ROOT / "scripts" / "calibrate_beta.py").read_text()))
    assert f"--json {BETA_CALIBRATION.relative_to(REPO)}" in doc
    assert BETA_CALIBRATION.parent == ASSETS != SHIPPED_SWEEP and ASSETS != STUDY_SWEEP


def _calibrate_beta():
    """scripts/calibrate_beta.py as a module (its ``main`` reads sys.argv)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("calibrate_beta",
                                                  ROOT / "scripts" / "calibrate_beta.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _main(script, monkeypatch, *argv: str) -> int:
    """``script.main()`` with ``argv``, leaving torch's thread count as it was."""
    import torch
    monkeypatch.setattr(sys, "argv", ["calibrate_beta.py", *argv])
    threads = torch.get_num_threads()
    try:
        return script.main()
    finally:
        torch.set_num_threads(threads)


def test_calibrate_beta_reads_the_corpus_once_per_vocabulary(tmp_path, monkeypatch, capsys):
    """Checkpoints that share a vocabulary share one read of the corpus; one with another
    vocabulary gets its own, so every checkpoint is scored on its own token ids."""
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
    script = _calibrate_beta()
    assert _main(script, monkeypatch, *(str(tmp_path / n) for n in vocab)) == 0
    assert reads == [vocab["a"], vocab["c"]]
    out = capsys.readouterr().out
    for name in vocab:           # a folder is its own table
        assert f"### {tmp_path / name}\n" in out


# -- --cache: a synthetic study whose runs' checkpoints are tmp folders -----------------------
SEEDS = {"dial": (1, 2, 3), "attention-l0.0": (1, 2), "attention-l0.5": (1,)}


def _fake_value(name: str, beta: float, lam: float) -> tuple[float, float]:
    """(in-block mass, perplexity) the fake evaluation gives checkpoint ``name``: different for
    every seed, β and λ_f."""
    seed = int(name.rsplit("-s", 1)[1]) if "-s" in name else 1
    return 0.5 + lam / 4 + beta / 1000 + seed ** 2 / 100, 150.0 + 7 * seed ** 1.5 + lam + beta


def _study(tmp_path, missing: str | None = None) -> Path:
    """A cache holding ``SEEDS``' runs (seed 1 untagged, as the config's own seed), each with
    its checkpoint folder, plus ``dial-beta64`` and ``dial-beta64-s2`` (other evaluations of
    the dial checkpoints, not seeds) and ``attention-l1.0``. ``missing`` names a run whose
    result points to a folder that is not there (relative to the repository root)."""
    from sweep_examples import make_run, seeded

    from localist_core.experiments.cache import write_json_atomic
    cache, runs = tmp_path / "study", []
    for base, seeds in {**SEEDS, "attention-l1.0": (1,)}.items():
        proto, lam = ("dial", 0.0) if base == "dial" else ("attention", float(base[-3:]))
        for seed in seeds:
            run = seeded(make_run(proto, lam), seed, 100.0)
            run["run_id"] = base if seed == 1 else f"{base}-s{seed}"
            runs.append(run)
    for seed in (1, 2):              # --eval-beta 64: the dial's checkpoints evaluated again
        run = seeded(make_run("dial"), seed, 100.0)
        run["run_id"] = "dial-beta64" if seed == 1 else f"dial-beta64-s{seed}"
        runs.append(run)
    for run in runs:
        train_id = run["run_id"].replace("-beta64", "")
        folder = tmp_path / "runs" / f"{train_id}-0a1b2c3d"
        folder.mkdir(parents=True, exist_ok=True)
        run["checkpoint"] = str(folder)
        if run["run_id"] == missing:
            run["checkpoint"] = f"runs/{missing}-notthere"
        write_json_atomic(cache / f"{run['run_id']}.json", run)
    return cache


@pytest.fixture()
def fake_library(monkeypatch):
    """The library calls of calibrate_beta.py replaced by fakes; returns the checkpoint folder
    names that load_model was asked for."""
    from types import SimpleNamespace

    import torch

    import localist_core
    from localist_core.analysis import evaluate
    from localist_core.experiments import data, sweep
    loaded = []
    tok = SimpleNamespace(words=["<eos>", "<unk>", "the"])

    def load_model(run):
        loaded.append(Path(run).name)
        return SimpleNamespace(name=Path(run).name.rsplit("-", 1)[0]), tok

    def evaluate_stream(model_beta, stream, dial, max_tokens):
        (model, beta), lam = model_beta, dial.locality
        mass, ppl = _fake_value(model.name, beta, lam)
        return {"attention": {"in_block_mass": {"mean": mass}}, "perplexity": ppl,
                "tokens": max_tokens}
    monkeypatch.setattr(localist_core, "load_model", load_model)
    monkeypatch.setattr(data, "load_corpus", lambda data_dir, tokenizer: SimpleNamespace(
        tokenizer=tokenizer, valid=torch.zeros(4, dtype=torch.long), source="fake"))
    monkeypatch.setattr(sweep, "with_barrier_sharpness", lambda model, beta: (model, beta))
    monkeypatch.setattr(evaluate, "evaluate_stream", evaluate_stream)
    return loaded


def test_calibrate_beta_takes_each_run_and_its_seeds_from_the_cache(tmp_path, monkeypatch,
                                                                    fake_library, capsys):
    script = _calibrate_beta()
    cache = _study(tmp_path)
    assert _main(script, monkeypatch, "--cache", str(cache)) == 0
    assert fake_library == [f"{r}-0a1b2c3d" for r in ("dial", "dial-s2", "dial-s3",
                                                      "attention-l0.0", "attention-l0.0-s2")]
    out = capsys.readouterr().out
    assert "### dial\n" in out and "### attention-l0.0\n" in out
    assert "beta64" not in out and "attention-l1.0" not in out and "attention-l0.5" not in out
    assert f"seeds: 1 ({tmp_path}/runs/dial-0a1b2c3d), 2 (" in out


def test_calibrate_beta_stops_on_a_missing_checkpoint_before_any_evaluation(
        tmp_path, monkeypatch, fake_library, capsys):
    script = _calibrate_beta()
    cache = _study(tmp_path, missing="dial-s3")
    assert _main(script, monkeypatch, "--cache", str(cache)) == 2
    assert fake_library == []
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "dial-s3 (runs/dial-s3-notthere)" in lines[0] and "bash scripts/study.sh" in lines[0]
    # A run id the cache does not hold at all: the same one line.
    assert _main(script, monkeypatch, "--cache", str(cache), "--runs", "dial,weights-l1.0") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no run weights-l1.0" in err and "study.sh" in err
    assert fake_library == []


def _hand_cell(values: list[float], digits: int) -> str:
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return f"{mean:.{digits}f}"
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    return f"{mean:.{digits}f} ± {sd:.{digits}f} ({n})"


def test_calibrate_beta_tables_mean_and_sd_over_seeds(tmp_path, monkeypatch, fake_library,
                                                      capsys):
    script = _calibrate_beta()
    cache = _study(tmp_path)
    runs = ",".join(SEEDS)
    assert _main(script, monkeypatch, "--cache", str(cache), "--runs", runs) == 0
    tables = capsys.readouterr().out.split("### ")[1:]
    assert [t.split("\n", 1)[0] for t in tables] == list(SEEDS)
    header = [f"β={b:g}: {what}" for b in script.BETAS for what in ("in-block", "ppl")]
    for (base, seeds), text in zip(SEEDS.items(), tables, strict=True):
        rows = [r.strip("|").split(" | ") for r in text.splitlines() if r.startswith("| ")]
        assert [c.strip() for c in rows[0]] == ["λ_f", *header]
        assert len(rows) == 2 + len(script.LOCALITIES)
        for lam, row in zip(script.LOCALITIES, rows[2:], strict=True):
            assert row[0].strip() == f"{lam:g}"
            for i, beta in enumerate(script.BETAS):
                names = [base if s == 1 else f"{base}-s{s}" for s in seeds]
                figs = [_fake_value(n, beta, lam) for n in names]
                assert row[1 + 2 * i].strip() == _hand_cell([f[0] for f in figs], 3)
                assert row[2 + 2 * i].strip() == _hand_cell([f[1] for f in figs], 1)


def test_calibrate_beta_json_keeps_every_raw_figure(tmp_path, monkeypatch, fake_library):
    import json
    script = _calibrate_beta()
    cache, out = _study(tmp_path), tmp_path / "out" / "beta_calibration.json"
    assert _main(script, monkeypatch, "--cache", str(cache), "--json", str(out)) == 0
    data = json.loads(out.read_text())
    settings = data["settings"]
    assert settings["betas"] == list(script.BETAS)
    assert settings["localities"] == list(script.LOCALITIES)
    assert settings["max_tokens"] == script.MAX_TOKENS
    assert settings["runs"] == ["dial", "attention-l0.0"] and settings["data"] == ["fake"]
    assert "git_commit" in settings
    want = {(f"{b}-s{s}" if s > 1 else b, s, beta, lam)
            for b in ("dial", "attention-l0.0") for s in SEEDS[b]
            for beta in script.BETAS for lam in script.LOCALITIES}
    figures = data["figures"]
    assert {(f["run_id"], f["seed"], f["beta"], f["locality"]) for f in figures} == want
    assert len(figures) == len(want)
    for f in figures:
        assert (f["in_block_mass"], f["perplexity"]) == _fake_value(f["run_id"], f["beta"],
                                                                    f["locality"])
        assert f["tokens"] == script.MAX_TOKENS
        assert f["checkpoint"] == str(tmp_path / "runs" / f"{f['run_id']}-0a1b2c3d")
    assert {f["base"] for f in figures} == {"dial", "attention-l0.0"}


def test_calibrate_beta_on_a_real_tiny_checkpoint(tmp_path, monkeypatch, tiny_dial_root,
                                                  tiny_data_dir, capsys):
    """End to end on the trained tiny dial model, from a cache naming its folder: every figure
    is finite, and β acts only through b(λ_f) = β·log(1−λ_f): at λ_f = 0 (b = 0) and at
    λ_f = 1 (b = −∞, in-block mass 1) every β gives the same figures."""
    import json

    from sweep_examples import make_run

    from localist_core.experiments.cache import write_json_atomic
    run = make_run("dial")
    run["config"]["train"]["seed"] = 1234
    run["checkpoint"] = str(tiny_dial_root / "tiny-dial")
    write_json_atomic(tmp_path / "cache" / "dial.json", run)
    script, out = _calibrate_beta(), tmp_path / "beta.json"
    assert _main(script, monkeypatch, "--cache", str(tmp_path / "cache"), "--runs", "dial",
                 "--data-dir", str(tiny_data_dir), "--json", str(out)) == 0
    assert "### dial\n" in capsys.readouterr().out
    figures = json.loads(out.read_text())["figures"]
    assert len(figures) == len(script.BETAS) * len(script.LOCALITIES)
    for f in figures:
        assert f["seed"] == 1234 and f["tokens"] > 0
        assert 0 <= f["in_block_mass"] <= 1 + 1e-6 and 1 < f["perplexity"] < float("inf")
    for lam in (0.0, 1.0):
        at = [f for f in figures if f["locality"] == lam]
        assert max(f["perplexity"] for f in at) == pytest.approx(min(f["perplexity"] for f in at))
        assert max(f["in_block_mass"] for f in at) == pytest.approx(
            min(f["in_block_mass"] for f in at), abs=1e-6)
    assert all(f["in_block_mass"] == pytest.approx(1.0) for f in figures if f["locality"] == 1)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.sh")))
def test_every_shell_script_parses(script):
    out = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
