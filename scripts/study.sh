#!/usr/bin/env bash
# The multi-seed study behind REPRODUCTION.md's findings, step-bounded so the same command gives
# the same numbers on any machine (up to floating-point order):
#   - cpu-ref, exactly 1,500 steps, fp32 (bf16 is not native on every CPU of this class);
#   - seeds 1234, 2 and 3 for every setting;
#   - the attention penalty at λ = 0, 0.05, 0.1, 0.2, 0.6 and 1.0 (the fine grid tests
#     "nearly a switch");
#   - at λ = 0.6: fixed-5 (in the grid), punctuation, recruited, and fixed-7, the control
#     matched in visible in-block keys to punctuation (3.96 against 3.91; fixed-5 has 2.98 and
#     recruited 3.04: `python scripts/block_lengths.py`);
#   - the dial model, evaluated at its trained β and at β = 64;
#   - then two demonstrations, seed 1234 only: the papers' literal (weights) penalty at λ = 1,
#     and the non-causal diagnostic at λ = 0.6 (the leak behind the papers' perplexity);
#   - then seeds 4 and 5 (PRIMARY_SEEDS) for the settings of the pre-registered primary family
#     (REPRODUCTION.md): the penalty at λ = 0, 0.05, 0.2, 0.6 and 1, the dial at both β,
#     fixed-7 and punctuation at λ = 0.6;
#   - and, with all five seeds, the family's new arrangements at λ = 0.6: `random` (punctuation's
#     block lengths at random places, 3.95 visible in-block keys) and `bigram`, the partition
#     that reads the words (C = 3.75 bits: 3.92 keys, beside punctuation's 3.91 and fixed-7's
#     3.96), trained again with the table pruning that ignores word ids (its earlier runs are in
#     assets/superseded/; delete any runs/attention-l0.6-partitionbigram-* folder trained
#     before that change, or it resumes with the old table).
# Two lanes run side by side, one thread each (STUDY_LANES=1 runs them one after the other):
# on 2 cores that trains ~8% more tokens per second than one two-thread run, and a lane slowed
# by other work does not stall the other (BENCHMARKS.md). The thread count is not part of a
# run's identity (config.WHERE_FIELDS), so runs finished with another count still count.
# No attention maps are stored (--prompts ''): the study's cache holds figures only, so it stays
# small (the shipped checkpoints and sweep already use most of the assets budget).
# Safe to re-run: finished runs are skipped and an interrupted run resumes from its checkpoint.
#   mkdir -p logs && nohup bash scripts/study.sh > logs/study.log 2>&1 &
# then follow logs/study-a.log and logs/study-b.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_DATASETS_OFFLINE=1
CACHE=${STUDY_CACHE:-assets/study}
SEEDS=${STUDY_SEEDS:-1234,2,3}
PRIMARY_SEEDS=${STUDY_PRIMARY_SEEDS:-4,5}
LANES=${STUDY_LANES:-2}
BUDGET="max_steps=1500 time_budget_s=86400 lr_by_time=false precision=fp32"
THREADS=$(( LANES > 1 ? 1 : 2 ))
sweep() {
  $PY -m localist_core sweep --config cpu-ref --cache "$CACHE" --runs-dir runs \
    --seeds "$SEEDS" --taus 0.5,1,2 --prompts '' "$@" $BUDGET threads=$THREADS
}

lane_a() {
  sweep --protocols attention --lambdas 0,0.05,0.1,0.2,0.6,1.0
  # Demonstrations, one seed each: what they show is far outside the seed noise.
  sweep --protocols weights --lambdas 1.0 --seeds 1234
  sweep --protocols attention --lambdas 0.6 --seeds 1234 noncausal_diagnostic=true
}
lane_b() {
  for part in "partition=punctuation" "partition=recruited" "block_size=7"; do
    sweep --protocols attention --lambdas 0.6 "$part"
  done
  sweep --protocols dial --lambdas 0,0.2,0.4,0.6,0.8,1.0
  sweep --protocols dial --lambdas 0,0.2,0.4,0.6,0.8,1.0 --eval-beta 64
}

# The primary family's extra seeds, balanced over the lanes (a dial run evaluates 36 settings).
primary_a() {
  sweep --protocols attention --lambdas 0,0.05,0.2,0.6 --seeds "$PRIMARY_SEEDS"
  for part in "partition=random" "partition=bigram"; do
    sweep --protocols attention --lambdas 0.6 --seeds "$SEEDS" "$part"
  done
}
primary_b() {
  sweep --protocols attention --lambdas 1.0 --seeds "$PRIMARY_SEEDS"
  sweep --protocols dial --lambdas 0,0.2,0.4,0.6,0.8,1.0 --seeds "$PRIMARY_SEEDS"
  sweep --protocols dial --lambdas 0,0.2,0.4,0.6,0.8,1.0 --eval-beta 64 --seeds "$PRIMARY_SEEDS"
  for part in "block_size=7" "partition=punctuation" "partition=random" "partition=bigram"; do
    sweep --protocols attention --lambdas 0.6 --seeds "$PRIMARY_SEEDS" "$part"
  done
}

if [ "$LANES" -gt 1 ]; then
  LOGS=${STUDY_LOG_DIR:-logs}      # each lane's progress bars in its own file
  mkdir -p "$LOGS"
  echo "two lanes: $LOGS/study-a.log and $LOGS/study-b.log"
  { lane_a; primary_a; } >> "$LOGS/study-a.log" 2>&1 & a=$!
  { lane_b; primary_b; } >> "$LOGS/study-b.log" 2>&1 & b=$!
  wait $a
  wait $b
  echo "study finished"
else
  lane_a
  lane_b
  primary_a
  primary_b
fi
