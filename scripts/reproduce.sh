#!/usr/bin/env bash
# Every number in REPRODUCTION.md, from a fresh clone, in this order:
#   1. the multi-seed study into assets/study (scripts/study.sh: about 9 hours on a 2-core
#      CPU; resumable);
#   2. the dial's β calibration from the study's dial and λ = 0 runs, into
#      assets/beta_calibration.json;
#   3. the visible in-block keys of each partition (the control of the block comparisons);
#   4. the shipped sweep (assets/sweep): seed 1234 of the study's results, with the sample
#      prompts' attention maps for the Compare page. Nothing is trained or evaluated again;
#   5. the shipped checkpoints: int8 copies of seed 1234's λ = 0, λ = 1 and dial runs, each
#      checked against fp32 on the validation split before it is kept;
#   6. model-level recruitment (issue 18) on the shipped λ = 0 checkpoint, into assets/experts,
#      and its contrast on the training stream into runs/experts-train;
#   7. every table: `python -m localist_core report --cache assets/study`.
# Safe to re-run: finished runs are skipped and an interrupted run resumes from its checkpoint.
#   mkdir -p logs && nohup bash scripts/reproduce.sh > logs/reproduce.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_DATASETS_OFFLINE=1

PYTHON="$PY" bash scripts/study.sh

$PY scripts/calibrate_beta.py --cache assets/study --json assets/beta_calibration.json
$PY scripts/block_lengths.py
$PY scripts/shipped_sweep.py --study assets/study --out assets/sweep

# A run's checkpoint folder, as its study result records it.
checkpoint() {
  $PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["checkpoint"])' \
    "assets/study/$1.json"
}
$PY -m localist_core export "$(checkpoint attention-l0.0)" assets/checkpoints/attention-l0.0 \
  --precision int8 --force
$PY -m localist_core export "$(checkpoint attention-l1.0)" assets/checkpoints/attention-l1.0 \
  --precision int8 --force
$PY -m localist_core export "$(checkpoint dial)" assets/checkpoints/dial \
  --precision int8 --barrier-sharpness 64 --force

$PY -m localist_core experts --checkpoint assets/checkpoints/attention-l0.0 --out assets/experts \
  --stream valid --seeds 1234,2,3 --check-every 10
# The contrast REPRODUCTION.md gives: the default stream, training articles the base has seen.
$PY -m localist_core experts --checkpoint assets/checkpoints/attention-l0.0 \
  --out runs/experts-train --seeds 1234 --bits-per-param 0.01 --check-every 10

$PY -m localist_core report --cache assets/study
