"""localist_core: locality-dial language models, their analysis, and the experiments on them.

Three layers, each importing only from those below it (docs/design.md, "Layers"):
``model`` (config, dial, blocks, attention, transformer, tokenizer, checkpoint) ←
``analysis`` (metrics, evaluation, theory, rules, inspection) ← ``experiments`` (data, training
alone or under torchrun, sweeps here or on Ray, results, statistics, comparisons, report) ←
``cli``. Nothing here imports streamlit or plotly.

The names below are the model layer's public face: ``load_model``, ``Dial``,
``LocalistLM.run_with_cache`` and ``Tokenizer.encode/decode``; the metrics are
``localist_core.analysis.metrics``.
"""
from .model.checkpoint import CheckpointError, load_model, save_checkpoint
from .model.config import ModelConfig, TrainConfig, preset
from .model.dial import Dial
from .model.tokenizer import Tokenizer
from .model.transformer import LocalistLM

__all__ = ["CheckpointError", "Dial", "LocalistLM", "ModelConfig", "Tokenizer", "TrainConfig",
           "load_model", "preset", "save_checkpoint"]
