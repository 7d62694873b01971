"""Hardware-aware precision: ``auto`` is bf16 only where the hardware runs it natively; the
choice is recorded in the run; configs written with the old ``bf16`` key still load."""
import json

import pytest
import torch

from localist_core import load_model
from localist_core.experiments.train import train
from localist_core.model import precision as prec
from localist_core.model.config import (
    PRESETS,
    WHERE_FIELDS,
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    preset,
)
from localist_core.paths import REPO

AVX2_ONLY = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "avx512_bf16": False,
             "amx_bf16": False, "amx_tile": False}


def fake_cpu(monkeypatch, capability: str, flags: dict | None, cpuinfo: str | None = None,
             tmp_path=None):
    """A CPU with this dispatch ISA, these torch flags (None: torch cannot tell) and this
    /proc/cpuinfo text (None: unreadable)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(prec, "_torch_cpu_flags", lambda: None if flags is None else dict(flags))
    path = tmp_path / "cpuinfo" if tmp_path is not None else prec.CPUINFO
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    elif tmp_path is not None:
        path = tmp_path / "no-such-cpuinfo"
    monkeypatch.setattr(prec, "CPUINFO", path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_fp32_on_an_avx2_cpu(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, "AVX2", AVX2_ONLY, tmp_path=tmp_path)
    choice, reason = prec.resolve_precision("auto", "cpu")
    assert choice == "fp32" and "AVX2" in reason and "auto" in reason


def test_auto_is_fp32_on_avx512_without_bf16(monkeypatch, tmp_path):
    # The capability string says "AVX512" with or without the BF16 extension: not enough alone.
    fake_cpu(monkeypatch, "AVX512", {**AVX2_ONLY, "avx512_f": True}, tmp_path=tmp_path)
    assert prec.resolve_precision("auto", "cpu")[0] == "fp32"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_bf16_where_the_cpu_has_it_natively(monkeypatch, tmp_path, flag):
    fake_cpu(monkeypatch, "AVX512", {**AVX2_ONLY, "avx512_f": True, flag: True},
             tmp_path=tmp_path)
    choice, reason = prec.resolve_precision("auto", "cpu")
    assert choice == "bf16" and flag in reason


@pytest.mark.parametrize("flags,expected", [("fpu avx2 avx512f avx512_bf16", "bf16"),
                                            ("fpu avx2 amx_tile amx_bf16", "bf16"),
                                            ("fpu avx2 avx512f", "fp32")])
def test_without_torch_flags_cpuinfo_decides(monkeypatch, tmp_path, flags, expected):
    text = f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    fake_cpu(monkeypatch, "AVX512", None, cpuinfo=text, tmp_path=tmp_path)
    choice, reason = prec.resolve_precision("auto", "cpu")
    assert choice == expected and "cpuinfo" in reason


def test_no_source_of_flags_means_fp32(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, "AVX512", None, cpuinfo=None, tmp_path=tmp_path)
    assert prec.resolve_precision("auto", "cpu")[0] == "fp32"


def test_explicit_choices_are_kept_and_bad_ones_refused(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, "AVX2", AVX2_ONLY, tmp_path=tmp_path)
    assert prec.resolve_precision("fp32", "cpu")[0] == "fp32"
    choice, reason = prec.resolve_precision("bf16", "cpu")
    assert choice == "bf16" and "slow" in reason
    with pytest.raises(ValueError, match="precision"):
        prec.resolve_precision("fp16", "cpu")


def test_cuda_auto_follows_its_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.resolve_precision("auto", "cuda") == ("bf16", "auto: CUDA bf16 supported")
    assert prec.resolve_precision("auto", "cuda:0")[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert prec.resolve_precision("auto", "cuda")[0] == "fp32"


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert prec.resolve_device("auto")[0] == "cpu"
    assert prec.resolve_device("cpu")[0] == "cpu"
    with pytest.raises(ValueError, match="no CUDA"):
        prec.resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        prec.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert prec.resolve_device("auto")[0] == "cuda"


def test_this_machine_answers_without_error():
    choice, reason = prec.resolve_precision("auto", "cpu")
    assert choice in ("fp32", "bf16") and prec.cpu_capability() in reason


# --- the run records its choice -------------------------------------------------------------

@pytest.mark.parametrize("native,expected", [(False, "fp32"), (True, "bf16")])
def test_training_records_what_auto_chose(monkeypatch, tmp_path, tiny_model_cfg, tiny_corpus,
                                          native, expected):
    flags = {**AVX2_ONLY, "avx512_f": True, "avx512_bf16": native}
    fake_cpu(monkeypatch, "AVX512" if native else "AVX2", flags, tmp_path=tmp_path)
    cfg = TrainConfig(**{**preset("tiny").train, "precision": "auto", "max_steps": 3,
                         "eval_interval": 3, "ckpt_interval": 3})
    res = train(tiny_model_cfg, cfg, tiny_corpus, tmp_path / "run", progress=False)
    assert res.precision == expected and res.precision_reason.startswith("auto:")
    model, _ = load_model(tmp_path / "run")
    assert model.meta["compute_precision"] == expected
    assert model.meta["compute_precision_reason"] == res.precision_reason
    assert model.train_config["precision"] == "auto"     # what was asked, beside what was used
    state = json.loads((tmp_path / "run" / "last" / "trainer.json").read_text())
    assert state["precision"] == expected


def test_a_resumed_auto_run_keeps_its_first_choice(monkeypatch, tmp_path, tiny_model_cfg,
                                                   tiny_corpus):
    cfg = TrainConfig(**{**preset("tiny").train, "precision": "auto", "max_steps": 4,
                         "eval_interval": 4, "ckpt_interval": 2})
    fake_cpu(monkeypatch, "AVX2", AVX2_ONLY, tmp_path=tmp_path)
    train(tiny_model_cfg, cfg, tiny_corpus, tmp_path / "run", progress=False, stop_after=2)
    fake_cpu(monkeypatch, "AVX512", {**AVX2_ONLY, "avx512_bf16": True}, tmp_path=tmp_path)
    res = train(tiny_model_cfg, cfg, tiny_corpus, tmp_path / "run", progress=False)
    assert res.precision == "fp32" and "kept on resume" in res.precision_reason


def test_training_records_its_device_and_cuda_without_one_is_refused(
        monkeypatch, tmp_path, tiny_model_cfg, tiny_corpus):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = TrainConfig(**{**preset("tiny").train, "max_steps": 2, "eval_interval": 2,
                         "ckpt_interval": 2})
    res = train(tiny_model_cfg, cfg, tiny_corpus, tmp_path / "run", progress=False)
    assert (res.device, res.device_reason) == ("cpu", "auto: no CUDA device")
    assert load_model(tmp_path / "run")[0].meta["device"] == "cpu"
    assert json.loads((tmp_path / "run" / "last" / "trainer.json").read_text())["device"] == "cpu"
    with pytest.raises(ValueError, match="no CUDA"):
        train(tiny_model_cfg, TrainConfig(**{**config_to_dict(cfg), "device": "cuda"}),
              tiny_corpus, tmp_path / "other", progress=False)
    with pytest.raises(ConfigError, match="device must be one of"):
        TrainConfig(device="tpu")


@pytest.mark.parametrize("field,value", [("device", "cpu"), ("threads", 1)])
def test_where_a_run_is_computed_never_renames_or_invalidates_it(monkeypatch, tmp_path, field,
                                                                 value, tiny_model_cfg,
                                                                 tiny_corpus):
    """A run started on one device (or with one thread count) resumes (same folder, same
    trainer state) and counts as finished on another: those fields are where, not what."""
    from localist_core.experiments.sweep import RunSpec, normalized_config, run_dir_for
    assert field in WHERE_FIELDS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = TrainConfig(**{**preset("tiny").train, "max_steps": 4, "eval_interval": 4,
                          "ckpt_interval": 2, "threads": 2})
    moved = TrainConfig(**{**config_to_dict(base), field: value})
    specs = [RunSpec("attention-l0", "attention", tiny_model_cfg, t, ((0.0, 1.0),))
             for t in (base, moved)]
    assert run_dir_for(specs[0]) == run_dir_for(specs[1])
    assert normalized_config(specs[0].stored_config()) == normalized_config(
        specs[1].stored_config())
    # Another seed is another run.
    seeded = TrainConfig(**{**config_to_dict(base), "seed": 7})
    assert run_dir_for(RunSpec("attention-l0", "attention", tiny_model_cfg, seeded,
                               ((0.0, 1.0),))) != run_dir_for(specs[0])
    train(tiny_model_cfg, base, tiny_corpus, tmp_path / "run", progress=False, stop_after=2)
    res = train(tiny_model_cfg, moved, tiny_corpus, tmp_path / "run", progress=False)
    whole = train(tiny_model_cfg, base, tiny_corpus, tmp_path / "whole", progress=False)
    assert res.steps == 4
    for (name, a), b in zip(res.model.state_dict().items(), whole.model.state_dict().values()):
        # the same sums, perhaps in another order on another thread count
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


# --- old configs --------------------------------------------------------------------------

@pytest.mark.parametrize("flag,expected", [(True, "bf16"), (False, "fp32")])
def test_old_json_with_bf16_loads_as_precision(flag, expected):
    old = {**config_to_dict(TrainConfig()), "bf16": flag}
    del old["precision"]
    cfg = config_from_dict(TrainConfig, old)
    assert cfg.precision == expected
    assert "bf16" not in config_to_dict(cfg) and config_to_dict(cfg)["precision"] == expected
    assert TrainConfig(bf16=flag).precision == expected


def test_bf16_and_a_contradicting_precision_are_refused():
    with pytest.raises(ConfigError, match="contradicts"):
        TrainConfig(precision="fp32", bf16=True)
    with pytest.raises(ConfigError, match="bf16"):
        TrainConfig(bf16="yes")
    assert TrainConfig(precision="bf16", bf16=True).precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp16")


def test_overrides_take_precision_and_the_old_bf16_key():
    _, t = apply_overrides({}, preset("tiny").train, ["precision=auto"])
    assert TrainConfig(**t).precision == "auto"
    _, t = apply_overrides({}, preset("tiny").train, ["bf16=true"])   # tiny says fp32
    assert TrainConfig(**t).precision == "bf16"
    _, t = apply_overrides({}, {}, ["bf16=false"])
    assert t["bf16"] is False and TrainConfig(**t).precision == "fp32"
    _, t = apply_overrides({}, {}, ["bf16=true", "precision=fp32"])   # the later one wins
    assert TrainConfig(**t).precision == "fp32"
    with pytest.raises(ConfigError, match="bf16"):
        apply_overrides({}, {}, ["bf16=maybe"])


def test_shipped_checkpoint_configs_read_their_precision_or_bf16_key():
    folders = sorted((REPO / "assets" / "checkpoints").glob("*/config.json"))
    assert folders
    for path in folders:
        train_cfg = json.loads(path.read_text())["train"]
        # Written since issue 15: "precision"; before it: the bf16 key (true by default).
        want = train_cfg.get("precision") or ("bf16" if train_cfg.get("bf16", True) else "fp32")
        assert config_from_dict(TrainConfig, train_cfg).precision == want


def test_no_preset_pins_bf16_and_all_default_to_auto_but_tiny():
    for name, p in PRESETS.items():
        cfg = TrainConfig(**p.train)
        assert cfg.precision == ("fp32" if name == "tiny" else "auto"), name
