"""Command line: ``localist train|sweep|eval|export|report`` (or ``python -m localist_core …``).

Configs are named (``tiny``, ``cpu-ref``, ``paper``) and take ``key=value`` overrides checked
against ModelConfig and TrainConfig. Every failure a user can cause ends with one line on stderr,
``error: …``, and no traceback. Exit codes: 2 for bad input or a command that cannot succeed as
given (a config, a path, a diverged run, an allocation that cannot fit, a full disk), 1 for
missing data (no corpus) and for an export outside its tolerance, 130 when interrupted (^C), 143
when terminated (SIGTERM: the write in flight is abandoned cleanly, so the same command resumes).
An unexpected bug still shows its traceback.

Path defaults (``runs``, ``runs/sweep``, ``assets/prompts.json``, ``assets/sweep``) are relative to
the current folder, like every path given on the command line. No command deletes what it did
not write: ``export`` replaces only a checkpoint folder, and only with ``--force``; ``sweep``
writes the shipped ``assets/sweep`` only when ``--cache assets/sweep`` names it.

This module builds the parser and runs a command; ``args`` parses numbers and configs, ``guards``
checks paths and memory before anything slow, ``commands`` and ``export`` do the work, and
``errors`` turns a failure into its one line and exit code. ``experts`` (model-level recruitment)
builds its own subcommand in ``experts``.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..experiments.executors import DEFAULT_GPU_SHARE
from ..experiments.sweep import DEFAULT_LAMBDAS, DEFAULT_TAUS
from ..model.checkpoint import STORAGE_PRECISIONS
from ..model.config import (
    ANCHOR_STRENGTH_RANGE,
    COMPUTE_PRECISIONS,
    DEVICES,
    LOCALITY_RANGE,
    PARTITIONS,
    TEMPERATURE_RANGE,
    ConfigError,
)
from .ablate import add_parser as add_ablate_parser
from .args import finite_float, float_list, positive_int
from .commands import (
    DEFAULT_PROMPTS,
    DEFAULT_SWEEP_CACHE,
    SHIPPED_SWEEP_CACHE,
    cmd_eval,
    cmd_report,
    cmd_sweep,
    cmd_train,
)
from .errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    CannotAllocate,
    Terminated,
    allocation_message,
    diverged_message,
    fail,
    is_allocation_failure,
    os_error_message,
    sigterm_raises,
)
from .experts import add_parser as add_experts_parser
from .export import cmd_export

__all__ = ["build_parser", "main"]
PROG = "localist"       # the console script (pyproject.toml); __main__ passes its own name

MAX_SEED = 2**32 - 1


def seed_list(text: str) -> list[int]:
    """``--seeds 1,2,3``: distinct integers in [0, 2³²−1], in the order given."""
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not seeds or any(not 0 <= x <= MAX_SEED for x in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be integers in [0, {MAX_SEED}]: {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is repeated: {text!r}")
    return seeds


def _numbers(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _interval(bounds: tuple[float, float]) -> str:
    return f"in [{bounds[0]:g}, {bounds[1]:g}]"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of every command; ``prog`` is the name usage lines show."""
    ap = argparse.ArgumentParser(prog=prog,
                                 description=__doc__.splitlines()[0].replace("``", ""))
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--data-dir", default=None,
                       help="folder with train.txt/valid.txt/test.txt (default: "
                            "$LOCALIST_DATA_DIR, then ../shared/data/wikitext-2)")

    t = sub.add_parser("train", help="train one model")
    t.add_argument("--config", default="cpu-ref", help="tiny, cpu-ref or paper")
    t.add_argument("--out", required=True, help="checkpoint folder (resumes from OUT/last)")
    t.add_argument("--no-resume", action="store_true", help="start again even if OUT/last exists")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    common(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sweep", help="train and evaluate a λ grid into a sweep cache")
    s.add_argument("--config", default="cpu-ref")
    s.add_argument("--protocols", default="attention",
                   help="comma-separated: attention, weights, dial")
    s.add_argument("--lambdas", type=float_list(*LOCALITY_RANGE), default=list(DEFAULT_LAMBDAS),
                   help=f"comma-separated λ in [0, 1] (default: {_numbers(DEFAULT_LAMBDAS)})")
    # The dial's τ range, as for eval --tau: the dial would clamp a τ outside it, so two values
    # would give one evaluation stored under two keys.
    s.add_argument("--taus", type=float_list(*TEMPERATURE_RANGE), default=list(DEFAULT_TAUS),
                   help=f"comma-separated τ {_interval(TEMPERATURE_RANGE)} "
                        f"(default: {_numbers(DEFAULT_TAUS)})")
    s.add_argument("--cache", default=DEFAULT_SWEEP_CACHE,
                   help=f"sweep cache folder (default: {DEFAULT_SWEEP_CACHE}, relative to the "
                        f"current folder); the shipped cache is written only when named: "
                        f"--cache {SHIPPED_SWEEP_CACHE}. With --executor ray it is made absolute "
                        f"and every node of the cluster must reach it (a shared filesystem)")
    s.add_argument("--runs-dir", default="runs",
                   help="where the run checkpoints go (default: runs); with --executor ray, "
                        "made absolute, and every node must reach it, as for --cache")
    s.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local (default): the runs one after another in this process; ray: one "
                        "Ray task per run, as many at once as the cluster's CPUs (threads= per "
                        "run) and GPUs allow; needs pip install -e \".[cluster]\"")
    s.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="with --executor ray: an existing Ray cluster (auto, HOST:PORT) whose "
                        "nodes can import this project (installed, or this checkout at the same "
                        "path); without it a local Ray is started with this machine's CPUs and "
                        "stopped at the end")
    s.add_argument("--gpu-share", type=finite_float(0.0, 1.0, lo_open=True), default=None,
                   help=f"with --executor ray: the part of a GPU a run asks for when it computes "
                        f"on cuda (device=cuda, or auto on a cluster with GPUs), in (0, 1] "
                        f"(default {DEFAULT_GPU_SHARE:g}: {round(1 / DEFAULT_GPU_SHARE)} runs "
                        f"share a GPU)")
    s.add_argument("--prompts", default=DEFAULT_PROMPTS,
                   help="sample prompts whose attention maps are cached ('' for none)")
    s.add_argument("--eval-tokens", type=positive_int, default=None,
                   help="evaluate a prefix only")
    s.add_argument("--eval-beta", type=finite_float(0.0, lo_open=True), default=None,
                   help="evaluate with this dial sharpness β > 0 instead of the trained one "
                        "(stored as a separate run, <id>-beta<β>)")
    s.add_argument("--seeds", type=seed_list, default=None,
                   help="comma-separated training seeds, one run per (protocol, λ, seed); "
                        "every seed but the config's adds -s<seed> to the run id (default: "
                        "the config's seed alone)")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    common(s)
    s.set_defaults(func=cmd_sweep)

    e = sub.add_parser("eval", help="evaluate a checkpoint: every metric, baselines, leak test")
    e.add_argument("checkpoint")
    e.add_argument("--splits", nargs="+", default=["valid", "test"], choices=["valid", "test"])
    # The dial's own ranges (model.config): refused here, where the dial would clamp them.
    e.add_argument("--locality", type=finite_float(*LOCALITY_RANGE), default=0.0,
                   help=f"dial λ_f {_interval(LOCALITY_RANGE)}")
    e.add_argument("--tau", type=finite_float(*TEMPERATURE_RANGE), default=1.0,
                   help=f"attention temperature τ {_interval(TEMPERATURE_RANGE)}")
    e.add_argument("--rule-strength", type=finite_float(*ANCHOR_STRENGTH_RANGE), default=0.0,
                   help=f"anchor strength γ {_interval(ANCHOR_STRENGTH_RANGE)}")
    e.add_argument("--max-tokens", type=positive_int, default=None,
                   help="evaluate a prefix of this many tokens")
    e.add_argument("--precision", default=None, choices=list(COMPUTE_PRECISIONS),
                   help="compute precision (default auto: the decoder under bf16 autocast only "
                        "where this machine runs bf16 natively, else exact fp32; BENCHMARKS.md "
                        "measures bf16 at +0.00%% perplexity)")
    e.add_argument("--fp32", action="store_true",
                   help="the same as --precision fp32 (kept for old scripts)")
    e.add_argument("--device", default="auto", choices=list(DEVICES),
                   help="where to evaluate (default auto: cuda when torch sees a CUDA device, "
                        "else cpu); the report records what was chosen and why")
    e.add_argument("--partition", default=None, choices=list(PARTITIONS),
                   help="re-block the text at inference (default: as trained)")
    e.add_argument("--block-size", type=positive_int, default=None,
                   help="fixed-window size when re-blocking with --partition fixed")
    e.add_argument("--json", default=None,
                   help="also write the report here (its folder must exist)")
    common(e)
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="write a compressed copy of a checkpoint, checked on "
                                      "valid perplexity")
    x.add_argument("source")
    x.add_argument("dest", help="a new (or empty) folder; an existing checkpoint only with "
                                "--force; any other existing path is refused")
    x.add_argument("--precision", default="int8", choices=list(STORAGE_PRECISIONS),
                   help="how the copy stores its weights (default: int8)")
    x.add_argument("--barrier-sharpness", type=finite_float(0.0, lo_open=True), default=None,
                   help="ship with this dial sharpness β > 0 (an inference-time choice)")
    x.add_argument("--tolerance", type=finite_float(0.0), default=0.005,
                   help="largest allowed relative change of valid perplexity, ≥ 0 "
                        "(default 0.005 = 0.5%%)")
    x.add_argument("--force", action="store_true",
                   help="replace DEST when it is an existing checkpoint folder")
    common(x)
    x.set_defaults(func=cmd_export)

    r = sub.add_parser("report", help="print the reproduction tables from a sweep cache")
    r.add_argument("--cache", default=SHIPPED_SWEEP_CACHE,
                   help=f"sweep cache folder, only read (default: {SHIPPED_SWEEP_CACHE})")
    r.set_defaults(func=cmd_report)
    add_experts_parser(sub, seed_list)
    add_ablate_parser(sub)
    return ap


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command (``argv``, default ``sys.argv[1:]``) and return its exit code; a failure
    the user caused is one ``error: …`` line on stderr."""
    args = build_parser(prog).parse_args(argv)
    from ..experiments.cache import SweepCacheError
    from ..experiments.data import DataNotFound
    from ..experiments.train import TrainingDiverged
    from ..model.checkpoint import CheckpointError
    try:
        with sigterm_raises():
            return args.func(args)
    except TrainingDiverged as e:
        return fail(diverged_message(e, args))
    except (ConfigError, ValueError, CheckpointError, SweepCacheError) as e:
        return fail(str(e))
    except DataNotFound as e:
        return fail(str(e), EXIT_FAILURE)
    except BrokenPipeError:
        # The reader of stdout went away (`report | head`): nothing to say, and nowhere to say
        # it. Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:            # permission denied, disk full, not a directory, …
        return fail(os_error_message(e))
    except (CannotAllocate, MemoryError, OverflowError, RuntimeError, TypeError) as e:
        if not is_allocation_failure(e):
            raise                   # a bug: the developer needs the traceback
        return fail(allocation_message(e, args.command))
    except Terminated:
        print("terminated (SIGTERM); run the same command again to resume", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
