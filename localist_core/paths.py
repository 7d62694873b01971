"""Where the project's own files live: the repository, its shipped assets and the development
copy of WikiText-2 beside it. Every other module takes these paths from here."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
CHECKPOINT_DIR = ASSETS / "checkpoints"     # the shipped checkpoints
SHIPPED_SWEEP = ASSETS / "sweep"            # the shipped sweep cache; written only when named
STUDY_SWEEP = ASSETS / "study"              # the multi-seed study's cache (scripts/study.sh)
PROMPTS_FILE = ASSETS / "prompts.json"      # the sample texts
# The bigram partition's Kneser–Ney table of WikiText-2's training split, for the shipped
# vocabulary (scripts/bigram_table.py writes it): checkpoints that carry none use it.
BIGRAM_TABLE = ASSETS / "bigram_wikitext2.safetensors"
# scripts/calibrate_beta.py's raw figures (REPRODUCTION.md); outside every sweep cache folder,
# where load_cache would take it for a result.
BETA_CALIBRATION = ASSETS / "beta_calibration.json"
DEV_DATA_DIR = REPO.parent / "shared" / "data" / "wikitext-2"
