"""A checkpoint's weights must have the model's dtypes (issue 30, item 8): integer or bool weights
used to load silently (perplexity infinite); now the header is refused, naming the tensor,
before any weight is read. The fp16 and int8 exports still load."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from localist_core import save_checkpoint
from localist_core.experiments.train import make_model
from localist_core.model.checkpoint import CheckpointError, check_checkpoint, load_model
from localist_core.model.config import TrainConfig


@pytest.fixture()
def ckpt(tmp_path, tiny_model_cfg, tiny_corpus):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, make_model(tiny_model_cfg, tiny_corpus, seed=0), tiny_corpus.tokenizer,
                    TrainConfig(protocol="dial", penalty_form="none"))
    return folder


def _retype(folder, pick, dtype):
    tensors = load_file(str(folder / "model.safetensors"))
    name = next(n for n, t in tensors.items() if pick(n, t))
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, str(folder / "model.safetensors"))
    return name


@pytest.mark.parametrize("dtype,stored", [(torch.int32, "I32"), (torch.bool, "BOOL"),
                                          (torch.int64, "I64"), (torch.uint8, "U8")])
def test_integer_or_bool_weights_are_refused(ckpt, dtype, stored):
    name = _retype(ckpt, lambda n, t: t.is_floating_point() and t.dim() == 2, dtype)
    for check in (check_checkpoint, load_model):
        with pytest.raises(CheckpointError, match=f"{name}.*stored as {stored}"):
            check(ckpt)


def test_an_int8_weight_without_its_row_scale_is_refused(ckpt):
    _retype(ckpt, lambda n, t: t.is_floating_point() and t.dim() == 2, torch.int8)
    with pytest.raises(CheckpointError, match="stored as I8"):
        load_model(ckpt)


def test_a_non_float_buffer_stored_as_float_is_refused(ckpt):
    tensors = load_file(str(ckpt / "model.safetensors"))
    if not any(not t.is_floating_point() for t in tensors.values()):
        pytest.skip("this tiny config has no integer or bool buffer")
    _retype(ckpt, lambda n, t: not t.is_floating_point(), torch.float32)
    with pytest.raises(CheckpointError, match="stored as F32"):
        load_model(ckpt)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_the_compressed_exports_still_load(ckpt, tmp_path, precision):
    model, tok = load_model(ckpt)
    save_checkpoint(tmp_path / precision, model, tok, TrainConfig(protocol="dial",
                    penalty_form="none"), precision=precision)
    load_model(tmp_path / precision)
