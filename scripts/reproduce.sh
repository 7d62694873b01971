#!/usr/bin/env bash
# Every cpu-ref run of the reproduction (issue 3), in priority order: shipped models first.
# Safe to re-run: finished runs are skipped and an interrupted run resumes from its checkpoint.
#   mkdir -p logs && nohup bash scripts/reproduce.sh > logs/reproduce.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_DATASETS_OFFLINE=1
GRID=0,0.2,0.4,0.6,0.8,1.0
sweep() { $PY -m localist_core sweep --config cpu-ref --cache assets/sweep --runs-dir runs "$@"; }

sweep --protocols attention --lambdas 0,1.0        # shipped: penalty λ=0 and λ=1
sweep --protocols dial --lambdas $GRID             # shipped: the dial model
sweep --protocols dial --lambdas $GRID --eval-beta 64   # the shipped dial's β (REPRODUCTION.md)
sweep --protocols attention --lambdas 0.6 noncausal_diagnostic=true   # the leak, flagged
sweep --protocols weights --lambdas 0.6,1.0        # the papers' literal penalty
sweep --protocols attention --lambdas $GRID        # the rest of the attention-form sweep
sweep --protocols attention --lambdas 0.6 block_size=3
sweep --protocols attention --lambdas 0.6 block_size=10
# Issue 7: where blocks fall. Step-bounded (1,500 steps, about the fixed runs' count) so a busy
# CPU changes the wall time but not the result.
STEPS="max_steps=1500 time_budget_s=3600 lr_by_time=false"
for part in punctuation recruited; do
  sweep --protocols attention --lambdas 0.6 partition=$part $STEPS
done
for part in punctuation recruited; do
  sweep --protocols attention --lambdas 0.2,1.0 partition=$part $STEPS
done
