"""localist_core: locality-dial language models, their metrics, data and checkpoints.

Importable without streamlit. The public API (DESIGN §2): ``load_model``,
``LocalistLM.run_with_cache``, ``Tokenizer.encode/decode`` and ``localist_core.metrics``.
"""
from .checkpoint import CheckpointError, load_model, save_checkpoint
from .config import ModelConfig, TrainConfig, preset
from .model import LocalistLM
from .tokenizer import Tokenizer

__all__ = ["CheckpointError", "LocalistLM", "ModelConfig", "Tokenizer", "TrainConfig",
           "load_model", "preset", "save_checkpoint"]
