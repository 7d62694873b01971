"""What the checks of untrusted input cost: a checkpoint's shapes from one layer against the full
meta build, a whole check of each shipped checkpoint, and the verdict on a user's rule pattern
(catastrophic, over the size limit, or typed at random). The tests assert the work these checks
do (layers built, bytes read, probes run); this measures the time it takes.

    python -m bench.checks            # the tables recorded in BENCHMARKS.md
    python -m bench.checks --quick    # smoke run: a few iterations, numbers meaningless
"""
from __future__ import annotations

import random

import torch

from bench.common import machine, parser, print_table, run, summary, time_calls
from localist_core.analysis.rules import RuleError, compile_matcher, make_rule
from localist_core.model.checkpoint import check_checkpoint, expected_shapes
from localist_core.model.config import MODEL_SIZE_LIMITS, ModelConfig
from localist_core.model.transformer import LocalistLM
from localist_core.paths import CHECKPOINT_DIR

CATASTROPHIC = ["(a|aa)+b", "(x|xx)+y$", r"([a-z]|[a-c])+\d"]
TOO_LARGE = ["a{1000000}", "(?:(?:a{10}){10}){10}", "(?x) a { 1 0 0 0 0 0 }"]
PIECES = ["a", "b", ".", "\\d", "\\w", "[a-z]", "(?:", "(", ")", "|", "*", "+", "?", "{", "}",
          ",", "(?i)", "(?x) ", "\\", "^", "$", "9", "(?=", "(?<!", " "]


def largest_config() -> ModelConfig:
    """The largest model MODEL_SIZE_LIMITS allows, every adaptive tail as wide as d_model."""
    sizes = {k: v for k, v in MODEL_SIZE_LIMITS.items() if k != "cutoffs"}
    return ModelConfig(**sizes, cutoffs=tuple(range(1000, 17000, 1000)), partition="recruited",
                       div_value=1.0)


def _full_meta_shapes(cfg: ModelConfig) -> None:
    with torch.device("meta"):
        LocalistLM(cfg).state_dict()


def _uncached_shapes(cfg: ModelConfig) -> None:
    expected_shapes.cache_clear()
    expected_shapes(cfg)


def bench_checkpoints(repeat: int) -> list[list]:
    cfg = largest_config()
    rows = []
    for what, fn in (("shapes from one layer (expected_shapes, uncached)",
                      lambda: _uncached_shapes(cfg)),
                     (f"full meta build, {cfg.n_layers} layers", lambda: _full_meta_shapes(cfg))):
        s = summary(time_calls(fn, repeat))
        rows.append([what, s["p50"], s["p95"]])
    for folder in sorted(f for f in CHECKPOINT_DIR.iterdir() if f.is_dir()):
        s = summary(time_calls(lambda f=folder: check_checkpoint(f), repeat))
        rows.append([f"check_checkpoint {folder.name}", s["p50"], s["p95"]])
    return rows


def _verdict(spec: str) -> None:
    compile_matcher.cache_clear()     # a verdict is kept per pattern; time the first one
    try:
        make_rule("regex", spec, "words", "the", 1.0)
    except RuleError:
        pass


def _typed_specs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) if rng.random() < 0.8 else str(rng.choice(
        [0, 1, 7, 99, 100, 101, 10**4, 10**9])) for _ in range(rng.randint(1, 14)))
        for _ in range(n)]


def bench_rules(repeat: int, n_typed: int) -> list[list]:
    rows = []
    for kind, specs in (("catastrophic", CATASTROPHIC), ("over the size limit", TOO_LARGE)):
        for spec in specs:
            times = time_calls(lambda sp=spec: _verdict(sp), repeat, warmup=1)
            s = summary(times)
            shown = spec.replace("|", "\\|")            # a Markdown cell
            rows.append([kind, f"`{shown}`", s["p50"], s["p95"], max(times)])
    times = [t for spec in _typed_specs(n_typed)
             for t in time_calls(lambda sp=spec: _verdict(sp), 1, warmup=0)]
    s = summary(times)
    rows.append(["typed at random", f"{len(times)} patterns", s["p50"], s["p95"], max(times)])
    return rows


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(args.threads)
    repeat = 3 if args.quick else 30
    print(f"machine: {machine()}")
    print_table("Checkpoint checks (ms)", ["what", "p50", "p95"], bench_checkpoints(repeat))
    print_table("Rule pattern verdicts (ms)", ["pattern", "spec", "p50", "p95", "max"],
                bench_rules(repeat, 20 if args.quick else 600))


if __name__ == "__main__":
    run(main)
