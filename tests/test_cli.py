"""The CLI: train → checkpoint → eval end to end on `tiny`, and clear usage errors (exit 2)."""
import json

import pytest

from localist_core.cli import main


def test_train_then_eval_end_to_end(tmp_path, tiny_data_dir, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("localist_core.cli.keep_freed_memory", lambda: calls.append(1))
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
