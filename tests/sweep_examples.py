"""Synthetic sweep results shaped like ``run_sweep``'s output, shared by the tests of the results,
the report, the Tradeoff page, its figures and the cache guards (``pytest.ini`` puts this folder
on the path: ``import sweep_examples``)."""
import copy

from localist_core.experiments.cache import SCHEMA_VERSION


def make_eval(lf: float, tau: float, lam: float = 0.0, attention: bool = True,
              positions: bool = False) -> dict:
    ent = 3.0 - 2.0 * lf - 0.5 * lam + (tau - 1.0)
    ev = {"dial": {"locality": lf, "attn_temperature": tau, "rule_strength": 0.0},
          "perplexity": 100.0 + 50.0 * lf + 20.0 * lam + abs(tau - 1.0), "accuracy": 0.2,
          "tokens": 1000, "nll": 4.6, "notices": [], "entropy_ceiling_bits": 4.0}
    if attention:
        vals = {"entropy_bits": ent, "normalised_entropy": ent / 4.0, "in_block_mass": 0.5 + lf / 2,
                "recent_b_mass": 0.6, "shifted_block_mass": 0.45, "uniform_in_block_mass": 0.11,
                "pointer_fidelity_mass": 0.4 + lf / 4, "uniform_pointer_fidelity": 0.8,
                "pointer_fidelity_lift": (0.4 + lf / 4) - (0.5 + lf / 2) * 0.8,
                "pointer_argmax_hit": 0.4,
                "mean_attention_distance": 6.0 - 4 * lf}
        ev["attention"] = {k: {"mean": v, "per_layer": [v], "per_head": [[v]]}
                           for k, v in vals.items()}
    if positions:
        ev["by_position_in_block"] = {str(p): {"tokens": 10, "perplexity": 2.0, "accuracy": 0.9}
                                      for p in range(5)}
    return ev


def make_run(protocol: str, lam: float = 0.0, lambdas=(0.0, 0.5, 1.0), taus=(0.5, 1.0),
             noncausal: bool = False, leak_passed: bool = True, run_id: str | None = None) -> dict:
    """A sweep result shaped like run_sweep's output (schema 1)."""
    dial_values = sorted(set(lambdas)) if protocol == "dial" else sorted({0.0, lam})
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id or ("dial" if protocol == "dial" else f"{protocol}-l{lam:.1f}"),
        "protocol": protocol, "penalty_form": "none" if protocol == "dial" else protocol,
        "locality": 0.0 if protocol == "dial" else lam,
        "config": {"model": {"n_ctx": 16, "block_size": 5, "noncausal_diagnostic": noncausal},
                   "train": {"protocol": "dial" if protocol == "dial" else "penalty",
                             "penalty_form": "none" if protocol == "dial" else protocol,
                             "locality": 0.0 if protocol == "dial" else lam}},
        "training": {"steps": 5, "tokens": 640, "stopped": "max_steps", "history": []},
        "metrics": {"valid": [make_eval(lf, t, lam) for lf in dial_values for t in taus],
                    "test": [make_eval(lf, 1.0, lam, attention=False, positions=True)
                             for lf in dial_values]},
        "leak_test": {"passed": leak_passed, "max_abs_diff": 0.0 if leak_passed else 0.3,
                      "checked": 4},
        "wall_time_s": {"train": 1.0, "eval": 1.0, "total": 2.0},
        "git_commit": "0123456789abcdef", "checkpoint": "runs/x"}


def synthetic_runs() -> list[dict]:
    return ([make_run("attention", lam) for lam in (0.0, 0.5, 1.0)]
            + [make_run("weights", lam) for lam in (0.0, 1.0)] + [make_run("dial")]
            + [make_run("attention", 0.6, noncausal=True,
                        run_id="attention-l0.6-noncausal_diagnostictrue")])


def seeded(run: dict, seed: int, ppl: float, entropy: float | None = None,
           partition: str = "fixed") -> dict:
    """``run`` trained with ``seed`` (id ``…-s<seed>``), with valid perplexity ``ppl`` (and
    entropy) at λ_f = 0, τ = 1."""
    out = copy.deepcopy(run)
    out["run_id"] = f"{run['run_id']}-s{seed}"
    out["config"]["train"]["seed"] = seed
    out["config"]["model"]["partition"] = partition
    for ev in out["metrics"]["valid"]:
        if ev["dial"]["locality"] == 0.0 and ev["dial"]["attn_temperature"] == 1.0:
            ev["perplexity"] = ppl
            if entropy is not None:
                ev["attention"]["entropy_bits"]["mean"] = entropy
    return out


def multi_seed_runs() -> list[dict]:
    """A study-like cache: the attention penalty at λ = 0, 0.5 and 1 and the dial model, each
    trained with seeds 1, 2 and 3 whose valid perplexity at λ_f = 0 (and penalty entropy)
    differ, beside ``synthetic_runs``' single-seed weights runs and its leak."""
    runs = []
    for lam, ppl in ((0.0, 100.0), (0.5, 120.0), (1.0, 150.0)):
        base = make_run("attention", lam)
        runs += [seeded(base, s, ppl + d * (1 + lam), 3.0 - 2 * lam + d / 10)
                 for s, d in ((1, 0.0), (2, 2.0), (3, 5.0))]
    runs += [seeded(make_run("dial"), s, 110.0 + s) for s in (1, 2, 3)]
    return runs + [r for r in synthetic_runs() if r["protocol"] == "weights"
                   or r["config"]["model"]["noncausal_diagnostic"]]


def with_partition(run: dict, partition: str, block_size: int = 5) -> dict:
    run["config"]["model"].update(partition=partition, block_size=block_size)
    if partition != "fixed":
        run["run_id"] += f"-partition{partition}"
    elif block_size != 5:
        run["run_id"] += f"-block_size{block_size}"
    return run


# Blocks against their context-matched control: what each arrangement's queries see.
KEYS = {("fixed", 5): 2.98, ("fixed", 7): 3.96, ("punctuation", 5): 3.91,
        ("recruited", 5): 3.04}
# Valid perplexity per seed 1, 2, 3 at λ = 0.6: punctuation sits a clear 10 above fixed-7 (and
# 11 below fixed-5) on every seed; recruited scatters too widely for any interval to exclude 0.
PPL = {("fixed", 5): (236.0, 238.0, 235.0), ("fixed", 7): (215.0, 217.0, 214.0),
       ("punctuation", 5): (225.0, 227.2, 224.1), ("recruited", 5): (226.0, 236.0, 216.0)}


def arrangement_run(partition: str, seed: int, ppl: float, keys: float, block_size: int = 5,
                    lam: float = 0.6) -> dict:
    """An attention-penalty run at λ with ``partition`` (fixed at ``block_size``), trained with
    ``seed``, its valid perplexity at λ_f = 0, τ = 1 and the in-block keys its queries see."""
    run = seeded(with_partition(make_run("attention", lam), partition, block_size), seed, ppl,
                 partition=partition)
    for ev in run["metrics"]["valid"]:
        ev["attention"]["visible_in_block_keys"] = {"mean": keys, "per_layer": [keys],
                                                    "per_head": [[keys]]}
    return run


def block_runs(seeds=(1, 2, 3)) -> list[dict]:
    """Fixed-5, fixed-7, punctuation and recruited at λ = 0.6 with ``seeds`` (recruited's keys
    differ a little by seed), beside what must stay out: a leaky punctuation run, a weights-
    penalty one and a fixed run with another shape change; λ = 0.2 has fixed-5 alone and λ = 1
    one seed of fixed-3 and of punctuation."""
    runs = [arrangement_run(part, s, PPL[(part, b)][s - 1],
                            KEYS[(part, b)] + (0.04 * (s - 2) if part == "recruited" else 0),
                            b) for (part, b) in PPL for s in seeds]
    leaky = arrangement_run("punctuation", 1, 3.3, 3.91)
    leaky["config"]["model"]["noncausal_diagnostic"] = True
    leaky["run_id"] = "attention-l0.6-partitionpunctuation-noncausal_diagnostictrue-s1"
    weights = arrangement_run("punctuation", 1, 300.0, 3.91)
    weights.update(protocol="weights", run_id="weights-l0.6-partitionpunctuation-s1")
    wider = arrangement_run("fixed", 1, 500.0, 2.98)
    wider["run_id"] = "attention-l0.6-d_model64-s1"
    wider["config"]["model"]["d_model"] = 64
    return runs + [leaky, weights, wider, arrangement_run("fixed", 1, 180.0, 2.98, lam=0.2),
                   arrangement_run("fixed", 1, 260.0, 1.99, 3, lam=1.0),
                   arrangement_run("punctuation", 1, 240.0, 3.91, lam=1.0)]
