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
                "pointer_fidelity_mass": 0.4 + lf / 4, "pointer_argmax_hit": 0.4,
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
