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


@pytest.mark.slow
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


# -- shipped_sweep.py: a synthetic study whose seed-1234 runs name a real tiny checkpoint -----
PROMPTS = [{"name": "short", "text": "the cat sees the bridge ."},
           {"name": "long", "text": " ".join(["the old man finds a letter near the sea ."] * 5)}]
SETTINGS = {"dial": [(0.0, 0.5), (0.0, 1.0), (0.5, 0.5), (0.5, 1.0), (1.0, 0.5), (1.0, 1.0)],
            "attention-l0.5": [(0.0, 0.5), (0.0, 1.0), (0.5, 0.5), (0.5, 1.0)]}
SHIPPED = ("attention-l0.5", "dial", "dial-beta64")       # the runs trained with seed 1234


def _shipped_sweep():
    """scripts/shipped_sweep.py as a module (its ``main`` takes argv)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("shipped_sweep",
                                                  ROOT / "scripts" / "shipped_sweep.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture()
def tiny_checkpoint(tmp_path, tiny_model, tiny_corpus) -> Path:
    """The untrained tiny model (n_ctx 32, β = 4) saved as a checkpoint folder in tmp."""
    from localist_core import save_checkpoint
    from localist_core.model.config import TrainConfig
    return save_checkpoint(tmp_path / "runs" / "tiny-0a1b2c3d", tiny_model, tiny_corpus.tokenizer,
                           TrainConfig(protocol="dial", penalty_form="none"))


def _shipping_study(tmp_path, checkpoint: Path, missing: str | None = None) -> Path:
    """A study cache: ``SHIPPED`` trained with seed 1234 (``dial`` naming its checkpoint
    relative to the repository root, the others absolutely; ``dial-beta64`` evaluated at
    β = 64), ``dial-s2`` and ``attention-l0.5-s2`` with seed 2, an unseeded ``weights-l1.0``,
    baselines.json and progress.json. ``missing`` names a run whose checkpoint is not there."""
    from sweep_examples import make_run, seeded

    from localist_core.experiments.cache import SCHEMA_VERSION, write_json_atomic
    study = tmp_path / "study"
    runs = [seeded(make_run("dial"), 1234, 101.0), seeded(make_run("dial"), 2, 102.0),
            seeded(make_run("dial"), 1234, 103.0), seeded(make_run("attention", 0.5), 1234, 104.0),
            seeded(make_run("attention", 0.5), 2, 105.0), make_run("weights", 1.0)]
    for run, rid in zip(runs, ("dial", "dial-s2", "dial-beta64", "attention-l0.5",
                               "attention-l0.5-s2", "weights-l1.0"), strict=True):
        run["run_id"] = rid
        run["checkpoint"] = str(checkpoint)
        if rid == "dial":
            run["checkpoint"] = os.path.relpath(checkpoint, ROOT)
        if rid == "dial-beta64":
            run["config"]["eval"] = {"barrier_sharpness": 64.0}
        if rid == missing:
            run["checkpoint"] = str(tmp_path / "runs" / f"{rid}-notthere")
        write_json_atomic(study / f"{rid}.json", run)
    write_json_atomic(study / "baselines.json", {
        "schema_version": SCHEMA_VERSION, "valid": {"unigram_perplexity": 700.0},
        "test": {"unigram_perplexity": 710.0}})
    write_json_atomic(study / "progress.json", {"pid": 1, "runs_done": 6})
    return study


def _ship(tmp_path, checkpoint: Path, *extra: str, missing: str | None = None
          ) -> tuple[int, Path, Path]:
    """Run shipped_sweep.main on ``_shipping_study`` into tmp_path/out with ``PROMPTS``:
    (its return code, the study, the out folder)."""
    import json
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": PROMPTS}))
    study, out = _shipping_study(tmp_path, checkpoint, missing), tmp_path / "out"
    rc = _shipped_sweep().main(["--study", str(study), "--out", str(out),
                                "--prompts", str(prompts), *extra])
    return rc, study, out


def _maps(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def _expected_maps(checkpoint: Path, settings, beta: float | None = None) -> dict:
    """What attention_maps gives for ``checkpoint`` (at ``beta`` when given) on ``PROMPTS``."""
    from localist_core.experiments.sweep import attention_maps, with_barrier_sharpness
    from localist_core.model.checkpoint import load_model
    model, tok = load_model(checkpoint)
    if beta is not None:
        model = with_barrier_sharpness(model, beta)
    return attention_maps(model.eval(), tok, PROMPTS, settings)


def test_shipped_sweep_copies_the_seed_1234_results_unchanged(tmp_path, tiny_checkpoint, capsys):
    rc, study, out = _ship(tmp_path, tiny_checkpoint)
    assert rc == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {
        "baselines.json", *(f"{r}.json" for r in SHIPPED),
        *(f"{r}.maps.safetensors" for r in SHIPPED)}
    for name in ("baselines.json", *(f"{r}.json" for r in SHIPPED)):
        assert (out / name).read_bytes() == (study / name).read_bytes(), name
    printed = capsys.readouterr().out
    assert "dial: 6 settings × 2 prompts" in printed and "s2" not in printed


def test_shipped_sweep_maps_are_each_prompt_at_each_setting_of_its_checkpoint(
        tmp_path, tiny_checkpoint):
    import torch

    from localist_core.model.checkpoint import load_model
    rc, _, out = _ship(tmp_path, tiny_checkpoint)
    assert rc == 0
    model, tok = load_model(tiny_checkpoint)
    cfg = model.cfg
    lengths = {p["name"]: min(len(tok.encode(p["text"])), cfg.n_ctx) for p in PROMPTS}
    assert lengths["long"] == cfg.n_ctx > lengths["short"]          # one prompt is cut
    for rid in ("dial", "attention-l0.5"):
        maps = _maps(out / f"{rid}.maps.safetensors")
        assert set(maps) == {f"{p['name']}|{lam:g}|{tau:g}" for p in PROMPTS
                             for lam, tau in SETTINGS[rid]}
        for key, pattern in maps.items():
            t = lengths[key.split("|")[0]]
            assert pattern.dtype == torch.float16
            assert pattern.shape == (cfg.n_layers, cfg.n_heads, t, t)
            assert torch.allclose(pattern.float().sum(-1), torch.ones(pattern.shape[:-1]),
                                  atol=1e-2)
        want = _expected_maps(tiny_checkpoint, SETTINGS[rid])
        assert set(want) == set(maps)
        assert all(torch.equal(maps[k], want[k]) for k in want)


def test_shipped_sweep_maps_use_the_beta_the_result_was_evaluated_at(tmp_path, tiny_checkpoint):
    """dial-beta64 names the dial's checkpoint (trained at β = 4) evaluated at β = 64: its maps
    are the checkpoint's at β = 64, and β acts only through the barrier at 0 < λ_f < 1."""
    import torch
    rc, _, out = _ship(tmp_path, tiny_checkpoint)
    assert rc == 0
    at64, trained = (_maps(out / f"{r}.maps.safetensors") for r in ("dial-beta64", "dial"))
    want = _expected_maps(tiny_checkpoint, SETTINGS["dial"], beta=64.0)
    assert set(at64) == set(want) == set(trained)
    assert all(torch.equal(at64[k], want[k]) for k in want)
    for key in at64:
        same = torch.equal(at64[key], trained[key])
        assert same == (key.split("|")[1] != "0.5"), key


def test_shipped_sweep_stops_before_writing_when_a_checkpoint_or_the_seed_is_missing(
        tmp_path, tiny_checkpoint, capsys):
    rc, _, out = _ship(tmp_path, tiny_checkpoint, missing="attention-l0.5")
    assert rc == 2 and not out.exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "attention-l0.5" in lines[0] and "bash scripts/study.sh" in lines[0]
    assert "dial" not in lines[0]                          # only the run that lacks one
    # No run trained with the seed asked for: one line too, nothing written.
    rc, _, out = _ship(tmp_path, tiny_checkpoint, "--seed", "99")
    assert rc == 2 and not out.exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "seed 99" in lines[0]


def test_shipped_sweep_rerun_keeps_existing_maps_and_deletes_nothing(tmp_path, tiny_checkpoint):
    rc, study, out = _ship(tmp_path, tiny_checkpoint)
    assert rc == 0
    maps = sorted(out.glob("*.maps.safetensors"))
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in maps}
    (out / "notes.txt").write_text("kept")
    script = _shipped_sweep()
    assert script.main(["--study", str(study), "--out", str(out),
                        "--prompts", str(tmp_path / "prompts.json")]) == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in maps} == before
    assert (out / "notes.txt").read_text() == "kept"


def test_shipped_sweep_makes_maps_again_when_their_prompts_change(tmp_path, tiny_checkpoint):
    import json
    rc, study, out = _ship(tmp_path, tiny_checkpoint)
    assert rc == 0
    maps = sorted(out.glob("*.maps.safetensors"))
    before = {p: p.read_bytes() for p in maps}
    prompts = tmp_path / "prompts.json"
    data = json.loads(prompts.read_text())
    data["prompts"][0]["text"] += " and more words"           # same names, another text
    prompts.write_text(json.dumps(data))
    script = _shipped_sweep()
    assert script.main(["--study", str(study), "--out", str(out), "--prompts", str(prompts)]) == 0
    assert all(p.read_bytes() != before[p] for p in maps)


def test_the_shipped_sweep_is_the_studys_seed_1234_results_with_their_maps():
    """assets/sweep as shipped_sweep.py writes it: each result the study's own file of a seed-1234
    run, the study's baselines, and each result's maps at exactly its prompts × settings (read
    from the safetensors header only). Holds for whatever runs are there."""
    import json

    from safetensors import safe_open

    from localist_core.experiments.cache import BASELINES_FILE, PROGRESS_FILE
    from localist_core.experiments.results import seed_of
    from localist_core.model.files import read_prompts
    from localist_core.paths import PROMPTS_FILE, SHIPPED_SWEEP, STUDY_SWEEP
    names = [p["name"] for p in read_prompts(PROMPTS_FILE)]
    assert (SHIPPED_SWEEP / BASELINES_FILE).read_bytes() == (
        STUDY_SWEEP / BASELINES_FILE).read_bytes()
    results = sorted(p for p in SHIPPED_SWEEP.glob("*.json")
                     if p.name not in (BASELINES_FILE, PROGRESS_FILE))
    assert results
    for path in results:
        assert path.read_bytes() == (STUDY_SWEEP / path.name).read_bytes(), path.name
        run = json.loads(path.read_text())
        assert seed_of(run) == 1234 and run["run_id"] == path.stem
        settings = {(v["dial"]["locality"], v["dial"]["attn_temperature"])
                    for v in run["metrics"]["valid"]}
        with safe_open(str(SHIPPED_SWEEP / f"{path.stem}.maps.safetensors"), "pt") as f:
            keys = set(f.keys())
        assert keys == {f"{n}|{lam:g}|{tau:g}" for n in names for lam, tau in settings}, path.name


def test_reprint_tables_replaces_changed_rows_and_leaves_the_rest():
    """scripts/reprint_tables.py: a marked table whose figures moved is re-printed row by row
    from the report (matched by its leading cells), a table still printed is left alone, a row
    the report no longer prints is dropped and named, and the prose is untouched."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("reprint_tables",
                                                  ROOT / "scripts" / "reprint_tables.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    report = ("## A\n| series | λ | n | mean |\n| --- | --- | --- | --- |\n"
              "| x | 0 | 4 | 1.5 |\n| x | 1 | 3 | 2.0 |\n\n"
              "## B\n| run | ppl |\n| --- | --- |\n| r1 | 10 |\n")
    doc = ("Prose quoting 1.4.\n<!-- report: c -->\n| series | λ | n | mean |\n"
           "| --- | --- | --- | --- |\n| x | 0 | 3 | 1.4 |\n| y | 0 | 3 | 9.9 |\n\n"
           "<!-- report: c -->\n| run | ppl |\n| --- | --- |\n| r1 | 10 |\nmore prose\n")
    text, dropped = script.reprint_document(doc, lambda cache: report)
    assert text.splitlines()[:7] == [
        "Prose quoting 1.4.", "<!-- report: c -->", "| series | λ | n | mean |",
        "| --- | --- | --- | --- |", "| x | 0 | 4 | 1.5 |", "",
        "<!-- report: c -->"]
    assert dropped == ["| y | 0 | 3 | 9.9 |"]
    assert text.endswith("| run | ppl |\n| --- | --- |\n| r1 | 10 |\nmore prose\n")
    again, none = script.reprint_document(text, lambda cache: report)
    assert again == text and none == []                       # idempotent
