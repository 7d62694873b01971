"""Checkpoints round-trip bit-exact; pickle, truncated, foreign and inconsistent files are
refused."""
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from localist_core import load_model, save_checkpoint
from localist_core.model.checkpoint import CONFIG, VOCAB, WEIGHTS, CheckpointError
from localist_core.model.dial import Dial


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture()
def saved(tmp_path, trained_tiny, tiny_corpus):
    return save_checkpoint(tmp_path / "ckpt", trained_tiny, tiny_corpus.tokenizer,
                           meta={"note": "test"})


def test_round_trip_is_bit_exact(saved, trained_tiny, tiny_corpus, tokens):
    model, tok = load_model(saved)
    assert model.cfg == trained_tiny.cfg and tok.words == tiny_corpus.tokenizer.words
    a, b = trained_tiny.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(model.run_with_cache(tokens, Dial(locality=0.5))[0],
                       trained_tiny.run_with_cache(tokens, Dial(locality=0.5))[0])
    assert model.meta["note"] == "test" and not model.training


@pytest.mark.parametrize("name", [WEIGHTS, "model.pt", "weights.bin"])
def test_pickle_is_refused_unread(tmp_path, saved, name):
    marker = tmp_path / "PWNED"
    target = saved / WEIGHTS
    payload = pickle.dumps(_Payload(marker))
    if name == WEIGHTS:
        target.write_bytes(payload)
        path = saved
    else:
        path = saved / name
        path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(path)
    assert not marker.exists()
    # The payload is real: unpickling it would have created the marker.
    pickle.loads(payload)
    assert marker.exists()


def test_truncated_weights_are_reported(saved):
    data = (saved / WEIGHTS).read_bytes()
    (saved / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        load_model(saved)


def test_foreign_file_is_reported(saved):
    (saved / WEIGHTS).write_bytes(b"GIF89a" + bytes(200))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(saved)


@pytest.mark.parametrize("change,match", [
    (lambda c: c["model"].pop("d_model"), None),
    (lambda c: c["model"].update(surprise=1), "unknown keys"),
    (lambda c: c.update(format_version=99), "format_version"),
    (lambda c: c["model"].update(vocab_size=7), "vocab_size"),
])
def test_bad_config_is_refused_with_file_name(saved, change, match):
    cfg = json.loads((saved / CONFIG).read_text())
    change(cfg)
    (saved / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match or "config"):
        load_model(saved)


def test_missing_required_key_is_named(saved):
    cfg = json.loads((saved / CONFIG).read_text())
    cfg["model"].pop("vocab_size")
    (saved / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing keys.*vocab_size"):
        load_model(saved)


def test_vocabulary_that_does_not_match_weights(saved, tmp_path):
    words = json.loads((saved / VOCAB).read_text())["words"]
    (saved / VOCAB).write_text(json.dumps({"words": words + ["extra"]}))
    with pytest.raises(CheckpointError, match="vocab.json"):
        load_model(saved)


def test_weights_of_another_shape_are_refused(saved, tmp_path, tiny_model):
    other = tmp_path / "other"
    shutil.copytree(saved, other)
    cfg = json.loads((other / CONFIG).read_text())
    cfg["model"]["d_ff"] = 48
    (other / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(other)


def test_missing_folder_and_files(tmp_path, saved):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nowhere")
    (saved / VOCAB).unlink()
    with pytest.raises(CheckpointError, match="vocab.json: missing"):
        load_model(saved)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_compressed_copies_load_close_to_full_precision(tmp_path, trained_tiny, tiny_corpus,
                                                        tokens, precision):
    path = save_checkpoint(tmp_path / precision, trained_tiny, tiny_corpus.tokenizer,
                           precision=precision)
    model, _ = load_model(path)
    assert model.precision == precision
    a = trained_tiny.run_with_cache(tokens)[0].exp()
    b = model.run_with_cache(tokens)[0].exp()
    assert (a - b).abs().max() < 0.05
    assert torch.equal(model.local_entropy, trained_tiny.local_entropy)


@pytest.mark.parametrize("partition", ["punctuation", "recruited"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_adaptive_partitions_survive_a_round_trip(tmp_path, tiny_model_cfg, tiny_corpus, tokens,
                                                  partition, precision):
    import dataclasses

    from localist_core.experiments.train import make_model
    model = make_model(dataclasses.replace(tiny_model_cfg, partition=partition), tiny_corpus)
    path = save_checkpoint(tmp_path / partition, model.eval(), tiny_corpus.tokenizer,
                           precision=precision)
    loaded, _ = load_model(path)
    assert loaded.cfg.partition == partition
    want = model.partition_info(tokens).block_ids
    got = loaded.partition_info(tokens).block_ids
    assert torch.equal(want, got)
    assert int(got.max()) > 0    # a real partition, not one block (or an all-False mask)
    if partition == "punctuation":
        assert model.boundary_token.any()       # the full stop and comma ids are marked
        assert loaded.boundary_token.dtype == torch.bool
        assert torch.equal(loaded.boundary_token, model.boundary_token)


# -- checked cheaply before anything is read ----------------------------------------------------

@pytest.mark.parametrize("partition", ["fixed", "punctuation", "recruited"])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_expected_shapes_match_the_full_model(tiny_model_cfg, partition, n_layers):
    """The one-layer shortcut gives every tensor name and shape of the full (meta) model."""
    import dataclasses

    from localist_core.model.checkpoint import expected_shapes
    from localist_core.model.transformer import LocalistLM
    cfg = dataclasses.replace(tiny_model_cfg, partition=partition, n_layers=n_layers)
    with torch.device("meta"):
        full = {k: tuple(v.shape) for k, v in LocalistLM(cfg).state_dict().items()}
    assert expected_shapes(cfg) == full


def _counting_builds(monkeypatch) -> list[int]:
    """Record the n_layers of every model checkpoint.py builds (on the meta device)."""
    from localist_core.model import checkpoint
    built = []
    real = checkpoint.LocalistLM

    def build(cfg, *args, **kwargs):
        built.append(cfg.n_layers)
        return real(cfg, *args, **kwargs)
    monkeypatch.setattr(checkpoint, "LocalistLM", build)
    checkpoint.expected_shapes.cache_clear()
    return built


def test_the_largest_allowed_config_is_checked_from_one_layer(monkeypatch):
    """The shapes of the largest model MODEL_SIZE_LIMITS allows come from one layer built once
    (a few ms; the full 64-layer meta build costs ~120 ms: ``python -m bench.checks``)."""
    from localist_core.model.checkpoint import expected_shapes
    from localist_core.model.config import MODEL_SIZE_LIMITS, ModelConfig
    sizes = {k: v for k, v in MODEL_SIZE_LIMITS.items() if k != "cutoffs"}
    cfg = ModelConfig(**sizes, cutoffs=tuple(range(1000, 17000, 1000)), partition="recruited",
                      div_value=1.0)   # every tail as wide as d_model: none is empty
    built = _counting_builds(monkeypatch)
    shapes = expected_shapes(cfg)
    assert built == [1]
    assert sum(name.endswith("mlp.fc.weight") for name in shapes) == MODEL_SIZE_LIMITS["n_layers"]
    expected_shapes(cfg)
    assert built == [1]                      # kept per config


def test_an_int8_row_scale_of_the_wrong_shape_is_refused(tmp_path, trained_tiny, tiny_corpus):
    from safetensors.torch import load_file, save_file

    from localist_core.model.checkpoint import SCALE_SUFFIX, check_checkpoint
    path = save_checkpoint(tmp_path / "int8", trained_tiny, tiny_corpus.tokenizer,
                           precision="int8")
    check_checkpoint(path)
    tensors = load_file(str(path / WEIGHTS))
    name = "tok_emb.weight" + SCALE_SUFFIX
    tensors[name] = torch.ones(tensors[name].shape[0], 2)
    save_file(tensors, str(path / WEIGHTS))
    with pytest.raises(CheckpointError, match="row scale"):
        check_checkpoint(path)


def test_the_shipped_checkpoints_pass_every_check_reading_no_weight(monkeypatch):
    """Every check of a shipped checkpoint reads the safetensors header and not one byte of a
    weight, and builds one layer at most (~10 ms each, most of it parsing vocab.json:
    ``python -m bench.checks``)."""
    import builtins

    from localist_core.model import checkpoint, files
    from localist_core.paths import CHECKPOINT_DIR
    read: dict[str, int] = {}

    class Counted:
        """A file object that adds every byte read to ``read[name]``."""

        def __init__(self, f, name):
            self.f, self.name = f, name

        def read(self, n=-1):
            data = self.f.read(n)
            read[self.name] = read.get(self.name, 0) + len(data)
            return data

        def __getattr__(self, attr):
            return getattr(self.f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(files, "open", lambda path, *a, **k: Counted(
        builtins.open(path, *a, **k), Path(path).name), raising=False)
    monkeypatch.setattr(checkpoint, "load_file", None)      # reading weights would fail
    built = _counting_builds(monkeypatch)
    shipped = [f for f in sorted(CHECKPOINT_DIR.iterdir()) if f.is_dir()]
    assert shipped
    for folder in shipped:
        read.clear()
        checkpoint.check_checkpoint(folder)
        weights = folder / WEIGHTS
        with builtins.open(weights, "rb") as f:
            header = int.from_bytes(f.read(8), "little")
        assert 0 < read[WEIGHTS] <= 8 + header + 1 < weights.stat().st_size
    assert set(built) == {1}
