"""``experts``: model-level recruitment end to end (``experiments.experts`` has the design). It
reads WikiText-2's articles, computes the base checkpoint's hidden states once, and for every
(seed, bits per parameter) grows a pool of experts, trains the same-compute single adapter and
evaluates both on the held-out articles. Each run is written to ``--out`` as
``run-s<seed>-b<bits>.json`` with its adapters beside it (``.safetensors``), then
``summary.json``. A finished run is never computed again, so a rerun only adds what is missing;
``--out`` holding runs of other settings, or files this command did not write, is refused."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments.expert_files import (
    RUN_FILE,
    SUMMARY,
    ExpertsError,
    load_runs,
    run_stem,
    write_run,
    write_summary,
)
from ..experiments.experts import (
    BITS_PER_PARAM_RANGE,
    MAX_EXPERTS_RANGE,
    RANK_RANGE,
    ROUNDS_RANGE,
    STEPS_RANGE,
    RecruitConfig,
)
from ..model.files import own_temp_of, remove_own_temps
from .args import finite_float, float_list
from .errors import CannotAllocate, UsageError, bytes_text
from .guards import check_can_make_folder, memory_limit

MAX_RUNS_PER_COMMAND = 64       # seeds × bits-per-parameter values
MAX_DOCS = 10_000               # WikiText-2 has 629 training and 124 held-out articles
MAX_DOC_TOKENS = 1_000_000
DEFAULTS = RecruitConfig()
# --stream: the splits whose articles arrive in order, and the splits held out for evaluation.
STREAMS = {"train": (("train",), ("valid", "test")), "valid": (("valid",), ("test",))}
# On WikiText-2 with the λ = 0 base a child saves tens of bits, so an expert of 4,096 numbers is
# recruited only below about 0.1 bit a number (README "Model-level recruitment").
DEFAULT_BITS = (0.01, 0.1, 1.0, 16.0)


def int_in(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got "
                                             f"{text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {text!r}")
        return value
    parse.__name__ = "int_in"
    return parse


def add_parser(sub, seed_list) -> None:
    """The ``experts`` subcommand (``seed_list``: the CLI's ``--seeds`` type)."""
    x = sub.add_parser("experts", help="grow a pool of low-rank experts on WikiText-2 articles "
                                       "(model-level recruitment) and evaluate it")
    x.add_argument("--checkpoint", required=True, help="the shared base, e.g. "
                   "assets/checkpoints/attention-l0.0 (only read)")
    x.add_argument("--out", required=True, help="results folder: new, empty, or one this "
                   "command wrote (the app reads assets/experts)")
    x.add_argument("--seeds", type=seed_list, default=[DEFAULTS.seed],
                   help=f"comma-separated seeds of adapter initialisation and batch order "
                        f"(default {DEFAULTS.seed})")
    lo, hi = BITS_PER_PARAM_RANGE
    x.add_argument("--bits-per-param", type=float_list(lo, hi, lo_open=True),
                   default=list(DEFAULT_BITS),
                   help=f"comma-separated description costs per adapter number, each in "
                        f"({lo:g}, {hi:g}] (default {','.join(f'{b:g}' for b in DEFAULT_BITS)}):"
                        f" one run each")
    x.add_argument("--rank", type=int_in(*RANK_RANGE), default=DEFAULTS.rank)
    x.add_argument("--steps", type=int_in(*STEPS_RANGE), default=DEFAULTS.steps,
                   help=f"Adam steps per EM round of an attempt (default {DEFAULTS.steps})")
    x.add_argument("--rounds", type=int_in(*ROUNDS_RANGE), default=DEFAULTS.rounds)
    x.add_argument("--check-every", type=int_in(1, MAX_DOCS), default=DEFAULTS.check_every,
                   help=f"documents between recruitment checks (default {DEFAULTS.check_every})")
    x.add_argument("--min-docs", type=int_in(2, MAX_DOCS), default=DEFAULTS.min_docs,
                   help="documents an expert needs before it tries to recruit a child")
    x.add_argument("--max-experts", type=int_in(*MAX_EXPERTS_RANGE),
                   default=DEFAULTS.max_experts, help="largest pool, the base included")
    x.add_argument("--batch-tokens", type=int_in(1, 8192), default=DEFAULTS.batch_tokens)
    x.add_argument("--lr", type=finite_float(0.0, 1.0, lo_open=True), default=DEFAULTS.lr)
    x.add_argument("--stream", choices=STREAMS, default="train",
                   help="train: the stream is the training articles (which the base was "
                        "trained on) and the valid+test articles are held out; valid: the "
                        "stream is the validation articles and the test articles are held "
                        "out, so the base has seen neither (default train)")
    x.add_argument("--max-docs", type=int_in(2, MAX_DOCS), default=200,
                   help="stream length: its first N articles (default 200)")
    x.add_argument("--max-heldout", type=int_in(1, MAX_DOCS), default=MAX_DOCS,
                   help="the first N held-out articles (default: all)")
    x.add_argument("--max-doc-tokens", type=int_in(64, MAX_DOC_TOKENS), default=1024,
                   help="each article cut to its first N tokens (default 1024)")
    x.add_argument("--threads", type=int_in(1, 256), default=1,
                   help="torch threads (default 1: two runs share two cores better)")
    x.add_argument("--data-dir", default=None,
                   help="folder with train.txt/valid.txt/test.txt (default: "
                        "$LOCALIST_DATA_DIR, then ../shared/data/wikitext-2)")
    x.set_defaults(func=cmd_experts)


def check_out(out: Path) -> None:
    """``--out``: a new or empty folder, or one holding only what this command writes."""
    check_can_make_folder(out, "--out")
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name != SUMMARY
                     and not RUN_FILE.fullmatch(p.name) and own_temp_of(p.name) is None)
    if foreign:
        raise UsageError(f"--out {out} holds files this command did not write "
                         f"({', '.join(foreign[:3])}); give a new or empty folder")


def base_identity(path: Path) -> dict:
    """What names the base: its folder name, run id and the SHA-256 of its weights (the app
    matches a checkpoint to these results by it)."""
    from ..model.checkpoint import check_checkpoint, weights_sha256
    cfg = check_checkpoint(path)
    return {"name": path.resolve().name, "run_id": (cfg.get("meta") or {}).get("run_id"),
            "sha256": weights_sha256(path), "d_model": cfg["model"]["d_model"]}


def cmd_experts(args: argparse.Namespace) -> int:
    """Check everything cheap first (paths, the checkpoint, the folder's runs), then compute
    only the runs that are missing."""
    # One run per file name (bits per parameter equal to 6 digits are one run).
    wanted = list({run_stem(s, b): (s, b) for s in args.seeds
                   for b in args.bits_per_param}.values())
    if len(wanted) > MAX_RUNS_PER_COMMAND:
        raise UsageError(f"{len(wanted)} runs (seeds × bits per parameter); at most "
                         f"{MAX_RUNS_PER_COMMAND} per command")
    out, ckpt = Path(args.out), Path(args.checkpoint)
    check_out(out)
    base = base_identity(ckpt)
    settings = {"rank": args.rank, "steps": args.steps, "rounds": args.rounds,
                "check_every": args.check_every, "min_docs": args.min_docs,
                "max_experts": args.max_experts, "batch_tokens": args.batch_tokens,
                "lr": args.lr, "stream": args.stream, "max_docs": args.max_docs,
                "max_heldout": args.max_heldout,
                "max_doc_tokens": args.max_doc_tokens, "d_model": base.pop("d_model"),
                "base": base}
    done, problems = load_runs(out) if out.is_dir() else ([], [])
    if problems:
        raise ExpertsError(problems[0])
    for run in done:
        if run["settings"] != settings:
            diff = sorted(k for k in settings if run["settings"].get(k) != settings[k])
            raise UsageError(f"--out {out} holds runs of other settings ({', '.join(diff)} "
                             f"differ in {run['file']}.json); give another folder")
    have = {r["file"] for r in done}
    todo = [(s, b) for s, b in wanted if run_stem(s, b) not in have]
    if todo:
        _compute(args, ckpt, out, settings, todo)
    runs = [r for r in load_runs(out)[0] if r["file"] in {run_stem(s, b) for s, b in wanted}]
    write_summary(out, runs, settings)
    for r in runs:
        h = r["heldout"]
        print(f"seed {r['seed']}, {r['bits_per_param']:g} bits/param: "
              f"{len(r['experts']) - 1} recruited in {len(r['attempts'])} attempts; held-out "
              f"bits/token base {h['base']['bits_per_token']:.4f}, single "
              f"{h['single']['bits_per_token']:.4f}, pool {h['pool']['bits_per_token']:.4f}")
    print(f"{'computed ' + str(len(todo)) if todo else 'nothing to compute'}; wrote "
          f"{out / SUMMARY}")
    return 0


def _compute(args, ckpt: Path, out: Path, settings: dict, todo: list[tuple[int, float]]) -> None:
    import torch

    from ..experiments.data import load_lines
    from ..experiments.documents import articles, document_states
    from ..experiments.expert_runs import run_recruitment
    from ..model.checkpoint import load_model
    torch.set_num_threads(args.threads)
    if out.is_dir():
        remove_own_temps(out)                       # what a killed run of ours left
    model, tok = load_model(ckpt)
    lines, _ = load_lines(args.data_dir)
    stream_splits, held_splits = STREAMS[args.stream]
    stream = [d for split in stream_splits
              for d in articles(lines[split], tok, max_tokens=args.max_doc_tokens)]
    held = [d for split in held_splits
            for d in articles(lines[split], tok, max_tokens=args.max_doc_tokens)]
    stream, held = stream[:args.max_docs], held[:args.max_heldout]
    if len(stream) < 2 or not held:
        raise UsageError(f"the corpus has {len(stream)} stream and {len(held)} held-out "
                         f"articles; recruitment needs at least 2 and 1")
    tokens = sum(len(d.tokens) for d in stream + held)
    need = tokens * settings["d_model"] * 2 * 2      # fp16 states, and as much again to work
    limit = memory_limit()
    if limit is not None and need > limit:
        raise CannotAllocate(f"{bytes_text(need)} for the hidden states of {tokens:,} tokens "
                             f"(this machine has {bytes_text(limit)}); lower --max-docs or "
                             f"--max-doc-tokens")
    s_cache = document_states(model, stream, tok.eos_id, progress=True, desc="stream states")
    h_cache = document_states(model, held, tok.eos_id, progress=True, desc="held-out states")
    keys = ("rank", "steps", "rounds", "check_every", "min_docs", "max_experts", "batch_tokens",
            "lr")
    # Runs of one seed share their work while their pools agree (experts.recruit's memo); the
    # base's held-out bits are shared by every run.
    memos: dict[int, dict] = {}
    shared: dict = {}
    for i, (seed, bpp) in enumerate(todo):
        memo = memos.setdefault(seed, dict(shared))
        cfg = RecruitConfig(**{k: settings[k] for k in keys}, bits_per_param=bpp, seed=seed)
        run, tensors = run_recruitment(model, tok.words, s_cache, h_cache, cfg, memo=memo,
                                       progress=True)
        write_run(out, {**run, "settings": settings}, tensors)
        shared.update({k: v for k, v in memo.items() if k[0] == "heldout-base"})
        if all(s != seed for s, _ in todo[i + 1:]):
            memos.pop(seed)                         # this seed's shared work is done
