"""Configs refuse every wrong type and every size over MODEL_SIZE_LIMITS with a ConfigError that
names the field (never a TypeError or a plain ValueError from deep inside a comparison)."""
import dataclasses
import math

import pytest

from localist_core.model.config import (
    MODEL_SIZE_LIMITS,
    PRESETS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    preset,
)

# What each annotated type must refuse (a bool is not a number, 1.5 is not an integer, …).
WRONG = {
    "int": [None, "3", 1.5, True, [], {}, math.nan],
    "float": [None, "0.5", True, [], {}, math.nan, math.inf, 10**400],
    "bool": [None, "true", 1, 0, [], {}],
    "str": [None, 1, [], {}, True],
    "tuple[int, ...]": [None, "2000", 5, {}, [1.5], ["x"], [True], [[1]]],
    "tuple[float, ...]": [None, "0.5", 5, {}, [], ["x"], [True], [[1.0]], [math.nan], [-1.0]],
}
BASE = {ModelConfig: {"vocab_size": 100, "cutoffs": (10, 20)}, TrainConfig: {}}


@pytest.mark.parametrize("cls", [ModelConfig, TrainConfig])
def test_every_field_refuses_every_wrong_type_with_a_config_error(cls):
    for f in dataclasses.fields(cls):
        for value in WRONG[f.type]:
            with pytest.raises(ConfigError, match=f.name):
                cls(**{**BASE[cls], f.name: value})


@pytest.mark.parametrize("cls", [ModelConfig, TrainConfig])
def test_config_from_dict_refuses_what_is_not_an_object(cls):
    for value in ([], "x", None, 3):
        with pytest.raises(ConfigError, match="expected a JSON object"):
            config_from_dict(cls, value)


def test_the_size_limits_are_the_largest_sizes_accepted():
    sizes = {k: v for k, v in MODEL_SIZE_LIMITS.items() if k != "cutoffs"}
    cutoffs = tuple(range(1000, 1000 * (MODEL_SIZE_LIMITS["cutoffs"] + 1), 1000))
    ModelConfig(**sizes, cutoffs=cutoffs)                       # every size at its limit at once
    for name in sizes:
        with pytest.raises(ConfigError, match=f"{name}: .* over this server's limit"):
            ModelConfig(**{**sizes, name: sizes[name] + 1}, cutoffs=cutoffs)
    with pytest.raises(ConfigError, match="cutoffs: 17 is over"):
        ModelConfig(**sizes, cutoffs=cutoffs + (cutoffs[-1] + 1,))


def test_every_preset_is_within_the_limits():
    for name in PRESETS:
        cfg = ModelConfig(vocab_size=33_278, **preset(name).model)     # raises when over
        TrainConfig(**preset(name).train)
        for field, limit in MODEL_SIZE_LIMITS.items():
            value = len(cfg.cutoffs) if field == "cutoffs" else getattr(cfg, field)
            assert value <= limit, (name, field, value, limit)


def test_messages_stay_short_whatever_the_value():
    with pytest.raises(ConfigError) as err:
        ModelConfig(vocab_size=100, cutoffs=(10, 20), partition="x" * 100_000)
    assert len(str(err.value)) < 200


@pytest.mark.parametrize("raw", ["true", "False", " YES ", "no", "1", "0", "maybe", "", "2"])
def test_the_deprecated_bf16_override_reads_true_and_false_as_every_bool_does(raw):
    """``bf16=…`` (not a field) and a bool field (``lr_by_time``) accept the same spellings and
    refuse the same ones, with the same message."""
    def parsed(key):
        try:
            return apply_overrides({}, {}, [f"{key}={raw}"])[1][key]
        except ConfigError as e:
            return str(e).replace(key, "KEY")
    assert parsed("bf16") == parsed("lr_by_time")
    assert isinstance(parsed("bf16"), bool) or "is not a valid bool" in parsed("bf16")


@pytest.mark.parametrize("name,lo,hi", [("paper", 20e6, 30e6), ("scale", 90e6, 110e6)])
def test_the_large_presets_are_their_stated_size_and_step_bounded(name, lo, hi):
    """``paper`` is the papers' size (d 512, 8 heads, context 256: 20–30M parameters); ``scale``
    about 100M outside the embedding and head. Both end at max_steps with a step-based
    schedule: the time budget is only a safety stop, far beyond the steps."""
    import torch

    from localist_core.model.transformer import LocalistLM
    p = preset(name)
    mcfg, tcfg = ModelConfig(vocab_size=33_278, **p.model), TrainConfig(**p.train)
    with torch.device("meta"):
        model = LocalistLM(mcfg)
    counted = (sum(x.numel() for x in model.parameters()) if name == "paper" else
               sum(x.numel() for n, x in model.named_parameters()
                   if "emb" not in n and "head" not in n))
    assert lo <= counted <= hi
    assert "max_steps" in p.train and tcfg.max_steps < TrainConfig().max_steps
    assert tcfg.lr_by_time is False and tcfg.time_budget_s >= 24 * 3600


def test_the_bigram_partition_fields_are_checked_and_old_configs_keep_their_meaning():
    """partition=bigram needs a vocabulary whose word-pair codes fit int32; its C and table size
    are its own fields, so a stored config without them (every run before it) loads with the
    defaults and a recruited run keeps its C."""
    from localist_core.model.config import BIGRAM_MAX_VOCAB
    base = {"vocab_size": BIGRAM_MAX_VOCAB, "cutoffs": (10, 20), "partition": "bigram"}
    ModelConfig(**base)
    with pytest.raises(ConfigError, match="partition bigram needs vocab_size ≤ 46,340"):
        ModelConfig(**{**base, "vocab_size": BIGRAM_MAX_VOCAB + 1})
    ModelConfig(**{**base, "vocab_size": BIGRAM_MAX_VOCAB + 1, "partition": "recruited"})
    for name, value in (("bigram_boundary_bits", -0.5), ("bigram_pairs", 0)):
        with pytest.raises(ConfigError, match=name):
            ModelConfig(**{**base, name: value})
    old = {k: v for k, v in config_to_dict(ModelConfig(vocab_size=100, cutoffs=(10, 20),
                                                       partition="recruited")).items()
           if not k.startswith("bigram_")}
    cfg = config_from_dict(ModelConfig, old)
    assert cfg.boundary_bits == 2.5 and cfg == ModelConfig(**{**old, "cutoffs": (10, 20)})


def test_model_identity_leaves_out_only_later_fields_at_their_default():
    from localist_core.model.config import LATER_MODEL_FIELDS, model_identity
    cfg = config_to_dict(ModelConfig(vocab_size=100, cutoffs=(10, 20)))
    ident = model_identity(cfg)
    assert set(cfg) - set(ident) == set(LATER_MODEL_FIELDS)
    changed = dict(cfg, bigram_pairs=7)
    assert model_identity(changed)["bigram_pairs"] == 7
