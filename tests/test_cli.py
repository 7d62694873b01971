"""The CLI: train → checkpoint → eval end to end on `tiny`, and clear usage errors (exit 2):
one ``error:`` line, no traceback; no command deletes what it did not write."""
import argparse
import hashlib
import json
import os
from pathlib import Path

import pytest

from localist_core.analysis.metrics import METRIC_LABELS
from localist_core.cli import build_parser, main
from localist_core.cli.args import finite_float, float_list, positive_int
from localist_core.cli.export import EXPORT_TMP_SUFFIX
from localist_core.experiments.sweep import DEFAULT_LAMBDAS, DEFAULT_TAUS
from localist_core.model.config import TEMPERATURE_RANGE


def test_train_then_eval_end_to_end(tmp_path, tiny_data_dir, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("localist_core.cli.commands.keep_freed_memory", lambda: calls.append(1))
    out = tmp_path / "ckpt"
    assert main(["train", "--config", "tiny", "--out", str(out), "--data-dir", str(tiny_data_dir),
                 "max_steps=12", "eval_interval=6", "locality=0.6", "penalty_form=attention"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert calls == [1]                    # training keeps freed memory (memory.py)
    report = tmp_path / "report.json"
    assert main(["eval", str(out), "--data-dir", str(tiny_data_dir), "--json", str(report),
                 "--locality", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "perplexity" in text and "in_block_mass" in text and "leak test: PASS" in text
    data = json.loads(report.read_text())
    assert set(data["splits"]) == {"valid", "test"}
    assert data["splits"]["valid"]["dial"]["locality"] == 0.5
    assert data["leak_test"]["passed"]
    assert data["baselines"]["valid"]["bigram_kn_perplexity"] > 1


@pytest.mark.parametrize("argv,message", [
    (["train", "--config", "tiny", "--out", "x", "nonsense_key=3"], "unknown key 'nonsense_key'"),
    (["train", "--config", "tiny", "--out", "x", "lr=fast"], "bad value for TrainConfig.lr"),
    (["train", "--config", "tiny", "--out", "x", "locality=1.5"], "locality"),
    (["train", "--config", "tiny", "--out", "x", "d_model=30", "n_heads=4"], "divisible"),
    (["train", "--config", "huge", "--out", "x"], "unknown config 'huge'"),
    (["train", "--config", "tiny", "--out", "x", "max_steps"], "key=value"),
    (["sweep", "--config", "tiny", "--protocols", "magic"], "unknown protocol"),
    (["eval", "/nonexistent/ckpt"], "no such checkpoint"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, tiny_data_dir, capsys, argv, message):
    argv = argv + (["--data-dir", str(tiny_data_dir)] if argv[0] != "eval" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_argparse_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--lambdas", "a,b"])
    assert exc.value.code == 2
    assert "comma-separated numbers" in capsys.readouterr().err


def test_export_keeps_a_compressed_copy_only_within_tolerance(tmp_path, tiny_data_dir, capsys):
    out = tmp_path / "ckpt"
    assert main(["train", "--config", "tiny", "--out", str(out), "--data-dir", str(tiny_data_dir),
                 "max_steps=10", "eval_interval=10"]) == 0
    dest = tmp_path / "small"
    assert main(["export", str(out), str(dest), "--precision", "fp16",
                 "--data-dir", str(tiny_data_dir)]) == 0
    check = json.loads((dest / "config.json").read_text())["meta"]["compression_check"]
    assert abs(check["relative_change"]) <= 0.005 and check["precision"] == "fp16"
    assert main(["export", str(out), str(tmp_path / "never"), "--precision", "int8",
                 "--tolerance", "0", "--data-dir", str(tiny_data_dir)]) == 1
    assert not (tmp_path / "never").exists() and not (tmp_path / "never.tmp").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never.")]   # temp removed
    assert "not written" in capsys.readouterr().err


def test_train_with_an_adaptive_partition_and_eval_reblocked(tmp_path, tiny_data_dir, capsys):
    """partition=… trains an adaptive-block model; eval --partition re-blocks at inference."""
    out = tmp_path / "punct"
    assert main(["train", "--config", "tiny", "--out", str(out), "--data-dir", str(tiny_data_dir),
                 "max_steps=6", "eval_interval=6", "locality=0.6", "partition=punctuation"]) == 0
    assert json.loads((out / "config.json").read_text())["model"]["partition"] == "punctuation"
    reports = {}
    for part in ("punctuation", "recruited"):
        path = tmp_path / f"{part}.json"
        args = ["eval", str(out), "--data-dir", str(tiny_data_dir), "--json", str(path),
                "--splits", "valid"]
        assert main(args + (["--partition", part] if part != "punctuation" else [])) == 0
        reports[part] = json.loads(path.read_text())
    assert reports["punctuation"]["partition"] == "punctuation"
    assert reports["recruited"]["partition"] == "recruited"
    a, b = (reports[p]["splits"]["valid"] for p in ("punctuation", "recruited"))
    assert a["tokens"] == b["tokens"] and a["perplexity"] != b["perplexity"]


# --- never delete what it did not write; one line, never a traceback ------------------------

REPO = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: relative path → contents (None for a folder)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys, argv: list[str], code: int = 2) -> str:
    """Run the CLI; it must exit ``code`` with exactly one ``error:`` line on stderr (besides
    tqdm's progress bars, which a training run draws there before it fails)."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_data_dir) -> Path:
    out = tmp_path_factory.mktemp("cli-ckpt") / "ckpt"
    assert main(["train", "--config", "tiny", "--out", str(out), "--data-dir", str(tiny_data_dir),
                 "max_steps=4", "eval_interval=4"]) == 0
    return out


@pytest.fixture()
def no_evaluation(monkeypatch):
    """Fail the test if a command starts its (slow) evaluation: checks must come first."""
    def refuse(*_a, **_k):
        raise AssertionError("the evaluation ran before the command's checks")
    monkeypatch.setattr("localist_core.analysis.evaluate.evaluate_stream", refuse)


def _export(src: Path, dest: Path, data: Path, *extra: str) -> list[str]:
    return ["export", str(src), str(dest), "--precision", "fp16", "--data-dir", str(data),
            *extra]


@pytest.mark.parametrize("kind", ["foreign folder", "file", "foreign config.json"])
def test_export_refuses_a_dest_it_did_not_write(tmp_path, tiny_ckpt, tiny_data_dir, capsys,
                                                no_evaluation, kind):
    dest = tmp_path / "mine"
    if kind == "file":
        dest.write_text("my notes")
    else:
        (dest / "sub").mkdir(parents=True)
        (dest / "notes.txt").write_text("keep me")
        (dest / "sub" / "data.bin").write_bytes(b"\x00\x01")
        if kind == "foreign config.json":
            (dest / "config.json").write_text('{"format": "someone-else"}')
    (tmp_path / "mine.tmp").mkdir()                 # the old code's temp name: the user's
    (tmp_path / "mine.tmp" / "precious").write_text("x")
    before = _tree(tmp_path)
    line = _one_error_line(capsys, _export(tiny_ckpt, dest, tiny_data_dir, "--force"))
    assert "is a file" in line if kind == "file" else "not a checkpoint folder" in line
    assert _tree(tmp_path) == before                # every file intact, nothing left behind


def test_export_replaces_a_checkpoint_only_with_force(tmp_path, tiny_ckpt, tiny_data_dir,
                                                      capsys):
    dest = tmp_path / "small"
    (tmp_path / "small.tmp").mkdir()
    (tmp_path / "small.tmp" / "precious").write_text("x")
    assert main(_export(tiny_ckpt, dest, tiny_data_dir)) == 0
    assert json.loads((dest / "config.json").read_text())["precision"] == "fp16"
    before = _tree(tmp_path)
    line = _one_error_line(capsys, _export(tiny_ckpt, dest, tiny_data_dir, "--precision", "fp32"))
    assert "existing checkpoint" in line and "--force" in line
    assert _tree(tmp_path) == before
    assert main(_export(tiny_ckpt, dest, tiny_data_dir, "--precision", "fp32", "--force")) == 0
    assert json.loads((dest / "config.json").read_text())["precision"] == "fp32"
    assert "replaced" in capsys.readouterr().out
    # Only the new checkpoint and the user's folder: no temp or set-aside folder is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small", "small.tmp"]
    assert (tmp_path / "small.tmp" / "precious").read_text() == "x"
    # --force replaces checkpoint files only, never a file of the user's inside the folder.
    (dest / "mine.txt").write_text("keep me")
    before = _tree(tmp_path)
    line = _one_error_line(capsys, _export(tiny_ckpt, dest, tiny_data_dir, "--force"))
    assert "mine.txt" in line
    assert _tree(tmp_path) == before


def test_export_writes_the_weights_once_and_keeps_the_ones_it_evaluated(
        tmp_path, tiny_ckpt, tiny_data_dir, monkeypatch):
    """The compressed copy is written once, read back and evaluated, and kept as it was read:
    only its config.json gains the compression check."""
    import torch

    from localist_core.analysis import evaluate
    from localist_core.model import checkpoint
    saves, evaluated = [], []
    real_save, real_eval = checkpoint.save_checkpoint, evaluate.evaluate_stream

    def save(*args, **kwargs):
        saves.append(args[0])
        return real_save(*args, **kwargs)

    def evaluate_stream(model, *args, **kwargs):
        evaluated.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_eval(model, *args, **kwargs)
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    monkeypatch.setattr(evaluate, "evaluate_stream", evaluate_stream)
    dest = tmp_path / "small"
    assert main(["export", str(tiny_ckpt), str(dest), "--precision", "int8", "--tolerance", "1",
                 "--data-dir", str(tiny_data_dir)]) == 0
    assert len(saves) == 1 and len(evaluated) == 2            # the full model, then the copy
    kept, _ = checkpoint.load_model(dest)
    assert kept.meta["compression_check"]["precision"] == "int8"
    stored = kept.state_dict()
    assert stored.keys() == evaluated[1].keys()
    assert all(torch.equal(stored[k], evaluated[1][k]) for k in stored)
    config = json.loads((dest / "config.json").read_text())
    assert config["precision"] == "int8" and config["model"] == checkpoint.read_config(
        tiny_ckpt)["model"]


def test_export_failing_at_the_final_move_keeps_the_old_checkpoint(
        tmp_path, tiny_ckpt, tiny_data_dir, capsys, monkeypatch):
    dest = tmp_path / "small"
    assert main(_export(tiny_ckpt, dest, tiny_data_dir)) == 0
    before = _tree(tmp_path)
    rename = os.rename

    def failing_rename(src, dst):
        if str(src).endswith(EXPORT_TMP_SUFFIX):      # the new copy's move into place
            raise PermissionError(13, "Permission denied", str(src), None, str(dst))
        rename(src, dst)
    monkeypatch.setattr(os, "rename", failing_rename)
    line = _one_error_line(capsys, _export(tiny_ckpt, dest, tiny_data_dir, "--force"))
    assert line.startswith("error: cannot move") and "Permission denied" in line
    assert _tree(tmp_path) == before                # the old checkpoint back, no temp folders


def test_sweep_default_cache_is_under_runs_not_the_shipped_one(tmp_path, tiny_data_dir,
                                                               monkeypatch, capsys):
    assert build_parser().parse_args(["sweep"]).cache == "runs/sweep"
    assert build_parser().parse_args(["report"]).cache == "assets/sweep"   # read-only
    shipped = _digests(REPO / "assets" / "sweep")
    monkeypatch.chdir(tmp_path)        # defaults are relative to the current folder
    assert main(["sweep", "--config", "tiny", "--lambdas", "0", "--taus", "1", "--prompts", "",
                 "--eval-tokens", "64", "--data-dir", str(tiny_data_dir),
                 "max_steps=2", "eval_interval=2"]) == 0
    assert (tmp_path / "runs" / "sweep" / "attention-l0.0.json").is_file()
    assert not (tmp_path / "assets").exists()
    assert _digests(REPO / "assets" / "sweep") == shipped


def test_report_on_the_shipped_cache_still_prints(capsys):
    assert main(["report", "--cache", str(REPO / "assets" / "sweep")]) == 0
    assert "## Leak test" in capsys.readouterr().out


@pytest.mark.parametrize("case,message", [
    ("missing folder", "no sweep cache folder"),
    ("a file", "no sweep cache folder"),
    ("a folder of notes", "not a sweep cache"),
    ("corrupt JSON", "r1.json"),
    ("malformed run", "r1"),
])
def test_report_on_a_bad_cache_is_one_line(tmp_path, capsys, case, message):
    cache = tmp_path / "cache"
    if case == "a file":
        cache.write_text("x")
    elif case == "a folder of notes":
        cache.mkdir()
        (cache / "notes.txt").write_text("x")
    elif case != "missing folder":
        cache.mkdir()
        run = {"schema_version": 1, "run_id": "r1", "protocol": "attention", "locality": 0.2,
               "config": {"model": {}, "train": {}}, "metrics": {"valid": [{"perplexity": 3}]}}
        text = "{not json" if case == "corrupt JSON" else json.dumps(run)
        (cache / "r1.json").write_text(text)
    line = _one_error_line(capsys, ["report", "--cache", str(cache)])
    assert message in line


def test_train_errors_are_one_line(tmp_path, tiny_data_dir, capsys):
    data = ["--data-dir", str(tiny_data_dir)]
    line = _one_error_line(capsys, ["train", "--config", "tiny", "--out", str(tmp_path / "a"),
                                    "lr=1e12", "warmup_steps=0", "max_steps=5", *data])
    assert "training diverged" in line and "lr=1e+11" in line
    (tmp_path / "file").write_text("mine")
    line = _one_error_line(capsys, ["train", "--config", "tiny", "--out", str(tmp_path / "file"),
                                    "max_steps=2", *data])
    assert "is a file" in line and (tmp_path / "file").read_text() == "mine"
    # A folder of someone else's files: training would write (and clear temp files) there.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    (mine / ".draft.tmp").write_text("keep")
    before = _tree(mine)
    line = _one_error_line(capsys, ["train", "--config", "tiny", "--out", str(mine),
                                    "max_steps=2", *data])
    assert "notes.txt" in line and _tree(mine) == before
    # Its own folder is fine: a finished run is trained again into the same --out (resumes).
    ours = ["train", "--config", "tiny", "--out", str(tmp_path / "run"), "max_steps=2", *data]
    assert main(ours) == 0 and main(ours) == 0
    # 10^15 windows of 32 tokens: refused from a parameter count on the meta device, before
    # torch allocates anything (Linux would overcommit, then kill the process without a word).
    line = _one_error_line(capsys, ["train", "--config", "tiny", "--out", str(tmp_path / "b"),
                                    "batch_size=1000000000000000", *data])
    assert line.startswith("error: cannot allocate") and "reduce batch_size" in line


@pytest.mark.parametrize("exc,message", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 8000000000000 bytes. Error code 12"),
     "cannot allocate 7.3 TiB"),
    (MemoryError(), "cannot allocate"),
    (OverflowError("Python int too large to convert to C long"), "a size is out of range"),
    (TypeError('randint(): argument \'size\' failed to unpack the object at pos 1 with error '
               '"Overflow when unpacking long long\nException raised from THPUtils_unpackLong'),
     "a size is out of range"),
    (OSError(28, "No space left on device", "/x/model.safetensors"),
     "/x/model.safetensors: No space left on device"),
    (PermissionError(13, "Permission denied", "/x/last"), "/x/last: Permission denied"),
])
def test_allocation_and_os_failures_are_one_line(tmp_path, tiny_data_dir, capsys, monkeypatch,
                                                 exc, message):
    def fail(*_a, **_k):
        raise exc
    monkeypatch.setattr("localist_core.experiments.train.train", fail)
    line = _one_error_line(capsys, ["train", "--config", "tiny", "--out", str(tmp_path / "o"),
                                    "--data-dir", str(tiny_data_dir)])
    assert message in line
    if "allocate" in message or "range" in message:
        assert "reduce batch_size" in line


def test_an_unexpected_bug_keeps_its_traceback(tmp_path, tiny_data_dir, monkeypatch):
    def bug(*_a, **_k):
        raise RuntimeError("index mix-up in the trainer")
    monkeypatch.setattr("localist_core.experiments.train.train", bug)
    with pytest.raises(RuntimeError, match="index mix-up"):
        main(["train", "--config", "tiny", "--out", str(tmp_path / "o"),
              "--data-dir", str(tiny_data_dir)])


def test_eval_json_target_is_checked_before_the_evaluation(tmp_path, tiny_ckpt, tiny_data_dir,
                                                           capsys, no_evaluation):
    base = ["eval", str(tiny_ckpt), "--data-dir", str(tiny_data_dir), "--json"]
    assert "is a folder" in _one_error_line(capsys, base + [str(tmp_path)])
    line = _one_error_line(capsys, base + [str(tmp_path / "no-such-folder" / "r.json")])
    assert "does not exist" in line
    assert list(tmp_path.iterdir()) == []


def test_sweep_path_errors_are_one_line(tmp_path, tiny_data_dir, capsys):
    data = ["--data-dir", str(tiny_data_dir)]
    line = _one_error_line(capsys, ["sweep", "--config", "tiny", "--cache", str(tmp_path / "c"),
                                    "--prompts", str(tmp_path / "nope.json"), *data])
    assert line.startswith("error: --prompts ") and "nope.json: missing" in line
    assert not (tmp_path / "c").exists()
    # A folder of someone else's files is not a sweep cache: results are never mixed into it.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.json").write_text("{}")
    before = _tree(tmp_path)
    line = _one_error_line(capsys, ["sweep", "--config", "tiny", "--cache", str(tmp_path / "docs"),
                                    "--prompts", "", *data])
    assert "not a sweep cache" in line and _tree(tmp_path) == before


@pytest.mark.parametrize("content, message", [
    ('{"prompts": [{"name": "castle"}]}', '"prompts" must be a list'),
    ('["castle"]', 'expected a JSON object with a "prompts" list'),
    ("{not json", "not valid JSON"),
    ('{"prompts": []}' + " " * 2**20, "-byte limit"),
])
def test_sweep_refuses_a_bad_prompts_file_in_one_line_before_anything_runs(
        tmp_path, tiny_data_dir, capsys, content, message):
    prompts = tmp_path / "p.json"
    prompts.write_text(content)
    line = _one_error_line(capsys, ["sweep", "--config", "tiny", "--cache", str(tmp_path / "c"),
                                    "--prompts", str(prompts), "--data-dir", str(tiny_data_dir)])
    assert line.startswith(f"error: --prompts {prompts}: ") and message in line
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv,option", [
    (["eval", "c", "--max-tokens", "-5"], "--max-tokens"),
    (["eval", "c", "--max-tokens", "0"], "--max-tokens"),
    (["eval", "c", "--block-size", "0"], "--block-size"),
    (["eval", "c", "--locality", "nan"], "--locality"),
    (["eval", "c", "--locality", "1.5"], "--locality"),
    (["eval", "c", "--tau", "inf"], "--tau"),
    (["eval", "c", "--tau", "0"], "--tau"),
    (["eval", "c", "--rule-strength", "nan"], "--rule-strength"),
    (["export", "a", "b", "--tolerance", "nan"], "--tolerance"),
    (["export", "a", "b", "--tolerance", "inf"], "--tolerance"),
    (["export", "a", "b", "--tolerance", "-0.1"], "--tolerance"),
    (["export", "a", "b", "--barrier-sharpness", "0"], "--barrier-sharpness"),
    (["export", "a", "b", "--barrier-sharpness", "nan"], "--barrier-sharpness"),
    (["sweep", "--eval-beta", "nan"], "--eval-beta"),
    (["sweep", "--eval-beta", "-1"], "--eval-beta"),
    (["sweep", "--eval-tokens", "0"], "--eval-tokens"),
    (["sweep", "--lambdas", "0,1.5"], "--lambdas"),
    (["sweep", "--taus", ""], "--taus"),
    (["sweep", "--seeds", "1,x"], "--seeds"),
    (["sweep", "--seeds", "1,1"], "--seeds"),
    (["sweep", "--seeds", "-1"], "--seeds"),
    (["sweep", "--seeds", ""], "--seeds"),
])
def test_bad_numbers_are_refused_by_argparse(capsys, argv, option):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "Traceback" not in err


def test_argparse_number_types():
    assert positive_int("3") == 3
    assert finite_float(0.0, 1.0)("1") == 1.0
    assert finite_float(0.0, lo_open=True)("1e-9") == 1e-9
    assert float_list(0.0, 1.0)("0, 0.5,1") == [0.0, 0.5, 1.0]
    for parse, text in [(positive_int, "1.5"), (finite_float(), "-inf"),
                        (finite_float(0.0, lo_open=True), "0"), (float_list(), "1,x")]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_sweep_taus_take_the_dials_range_like_eval_tau(capsys):
    """A τ the dial would clamp is refused, not silently merged with the range's end: two such
    values would be one evaluation stored under two keys."""
    lo, hi = TEMPERATURE_RANGE
    ends = build_parser().parse_args(["sweep", "--taus", f"{lo!r},{hi!r}"]).taus
    assert ends == [lo, hi]
    for outside in (lo / 2, hi * 2):
        for argv, option in ([["sweep", "--taus", f"1,{outside!r}"], "--taus"],
                             [["eval", "c", "--tau", repr(outside)], "--tau"]):
            with pytest.raises(SystemExit) as exc:
                build_parser().parse_args(argv)
            assert exc.value.code == 2
            assert f"argument {option}:" in capsys.readouterr().err


def test_sweep_grid_defaults_are_the_sweep_modules():
    """One home for the default grid: experiments.sweep, which the parser reads."""
    args = build_parser().parse_args(["sweep"])
    assert args.lambdas == list(DEFAULT_LAMBDAS) and args.taus == list(DEFAULT_TAUS)


def test_usage_names_the_program_it_was_called_as(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: localist ")
    with pytest.raises(SystemExit):
        main(["--help"], prog="python -m localist_core")
    assert capsys.readouterr().out.startswith("usage: python -m localist_core ")


@pytest.mark.parametrize("flags,expected", [([], None), (["--precision", "fp32"], "fp32"),
                                            (["--fp32"], "fp32"),
                                            (["--precision", "bf16"], "bf16")])
def test_eval_records_the_precision_it_chose(tmp_path, tiny_ckpt, tiny_data_dir, capsys, flags,
                                             expected):
    from localist_core.model.precision import resolve_precision
    report = tmp_path / "report.json"
    assert main(["eval", str(tiny_ckpt), "--data-dir", str(tiny_data_dir), "--splits", "valid",
                 "--max-tokens", "256", "--json", str(report), *flags]) == 0
    data = json.loads(report.read_text())
    want = expected or resolve_precision("auto", "cpu")[0]        # auto: this machine's answer
    assert data["precision"] == want and data["precision_reason"]
    assert f"precision: {want}" in capsys.readouterr().out


def test_eval_refuses_fp32_with_another_precision(tiny_ckpt, tiny_data_dir, capsys):
    assert main(["eval", str(tiny_ckpt), "--data-dir", str(tiny_data_dir), "--fp32",
                 "--precision", "bf16"]) == 2
    assert "--fp32 contradicts" in capsys.readouterr().err


def test_train_takes_a_precision_override_and_says_what_it_used(tmp_path, tiny_data_dir, capsys):
    out = tmp_path / "ckpt"
    assert main(["train", "--config", "tiny", "--out", str(out), "--data-dir",
                 str(tiny_data_dir), "max_steps=2", "eval_interval=2", "precision=auto"]) == 0
    assert "precision: " in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["precision"] == "auto" and "bf16" not in cfg["train"]
    assert cfg["meta"]["compute_precision"] in ("fp32", "bf16")


def test_sweep_seeds_default_to_the_config_seed():
    assert build_parser().parse_args(["sweep"]).seeds is None       # plan_runs: config's seed
    assert build_parser().parse_args(["sweep", "--seeds", "1,2,3"]).seeds == [1, 2, 3]
    assert build_parser().parse_args(["sweep", "--seeds", "7"]).seeds == [7]


def test_sweep_seeds_reach_the_plan(tmp_path, tiny_data_dir, monkeypatch, capsys):
    from localist_core.experiments import sweep as sweep_mod
    planned = []

    def fake_run_sweep(runs, *args, **kwargs):
        planned.extend(runs)
        return []

    monkeypatch.setattr(sweep_mod, "run_sweep", fake_run_sweep)
    assert main(["sweep", "--config", "tiny", "--lambdas", "0.6", "--taus", "1", "--prompts", "",
                 "--seeds", "1,2", "--cache", str(tmp_path / "c"), "--runs-dir",
                 str(tmp_path / "r"), "--data-dir", str(tiny_data_dir)]) == 0
    assert [(r.run_id, r.train.seed) for r in planned] == [("attention-l0.6-s1", 1),
                                                           ("attention-l0.6-s2", 2)]


def test_the_folder_checks_count_as_temp_files_what_training_removes(tmp_path):
    """One temp-file rule (files.OWN_TEMP): every file the --out check lets through as a temp
    file of ours is one that training's clean-up removes; a temp-looking name of another shape,
    or the temp of a file that is not ours, is someone else's and refuses the folder."""
    from localist_core.cli.guards import foreign_entries
    from localist_core.model.files import remove_own_temps
    ours = {"config.json", "model.safetensors"}
    names = [".config.json.ab12_x9z.tmp", ".model.safetensors.k9q_1x2y.tmp",   # ours
             ".config.json.tmp", ".config.json.draft.tmp", ".notes.json.ab12_x9z.tmp",
             ".notes.tmp", ".x.txt.abcdefgh.tmp", "notes.txt"]                 # someone else's
    for name in names:
        (tmp_path / name).write_text("x")
    foreign = foreign_entries(tmp_path, ours)
    assert foreign == sorted(names[2:])
    remove_own_temps(tmp_path)
    assert not set(names[:2]) & {p.name for p in tmp_path.iterdir()}


def test_report_prints_a_run_without_what_the_cache_check_lets_be_absent(tmp_path, capsys,
                                                                         monkeypatch):
    """A run that passes cache.read_result is reported, from one read of each file: no
    protocol, no stored attention, a null model config and leak test are shown as "—" or
    left out, not refused."""
    from localist_core.experiments import cache as cache_module
    from localist_core.experiments.cache import SCHEMA_VERSION
    cache = tmp_path / "cache"
    cache.mkdir()
    ev = {"dial": {"locality": 0.0, "attn_temperature": 1.0}, "perplexity": 3.0}
    run = {"schema_version": SCHEMA_VERSION, "run_id": "r1", "locality": 0.5,
           "config": {"model": None, "train": {}}, "leak_test": None,
           "metrics": {"valid": [ev, {**ev, "dial": {"locality": 0.5, "attn_temperature": 1.0}}],
                       "test": [{**ev, "by_position_in_block": {"0": {"tokens": 4}}}]}}
    (cache / "r1.json").write_text(json.dumps(run))
    reads = []
    real = cache_module.read_result
    monkeypatch.setattr(cache_module, "read_result", lambda p: reads.append(p) or real(p))
    assert main(["report", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert reads == [cache / "r1.json"]
    row = next(line for line in out.splitlines() if line.startswith("| r1 | 0.5 | 0 | 3.0 |"))
    assert row.count("—") >= len(METRIC_LABELS)           # every attention metric missing
    assert "| r1 | — | — |" in out                          # no leak test recorded


def test_export_stores_the_storage_precisions_only(capsys):
    """``export --precision`` offers checkpoint.STORAGE_PRECISIONS, not the compute ones."""
    from localist_core.model.checkpoint import STORAGE_PRECISIONS
    from localist_core.model.config import COMPUTE_PRECISIONS
    for p in STORAGE_PRECISIONS:
        assert build_parser().parse_args(["export", "a", "b", "--precision", p]).precision == p
    for p in set(COMPUTE_PRECISIONS) - set(STORAGE_PRECISIONS):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["export", "a", "b", "--precision", p])
        assert "argument --precision:" in capsys.readouterr().err


@pytest.mark.parametrize("config", ["tiny", "cpu-ref"])
def test_overrides_are_checked_with_a_vocabulary_every_partition_accepts(config):
    """Before the corpus is read, overrides are checked with a placeholder vocabulary: a valid
    partition=bigram must pass there (WikiText-2's 33,278 words fit its int32 pair codes),
    and a real fault is still refused."""
    from localist_core.cli.args import PLACEHOLDER_VOCAB, check_overrides
    from localist_core.model.config import BIGRAM_MAX_VOCAB, ConfigError
    assert 33_278 <= PLACEHOLDER_VOCAB <= BIGRAM_MAX_VOCAB
    check_overrides(config, ["partition=bigram", "locality=0.6"])
    with pytest.raises(ConfigError):
        check_overrides(config, ["partition=bigram", "bigram_boundary_bits=-1"])
