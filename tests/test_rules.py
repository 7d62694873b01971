"""Rules: bad or catastrophic patterns are refused quickly with a reason; a rule only biases
the pairs it names, inside the causal mask; raising its strength raises fidelity to its
targets on a fixed model; the anchor bias γ does the same for the anchors; a rule's pairs split
by block, and the barrier outweighs a rule exactly when it is larger than the strength."""
import math
import types

import numpy as np
import pytest
import regex
import torch

from localist_core.analysis import rules
from localist_core.analysis.evaluate import leak_test
from localist_core.analysis.inspection import analyze
from localist_core.analysis.rules import (
    MATCH_BUDGET_S,
    MATCHERS_KEPT,
    MAX_PATTERN_CHARS,
    MAX_PATTERN_UNITS,
    PROBE_BUDGET_S,
    PROBE_TIMEOUT_S,
    Matcher,
    RuleError,
    compile_matcher,
    make_rule,
    match_words,
    pattern_units,
    rule_bias,
    rule_fidelity,
    rule_pairs,
    rule_reach,
)
from localist_core.model.dial import Dial

WORDS = ["The", "cat", "sees", "the", "bridge", "in", "1990", ".", "A", "dog", "follows", "the",
         "castle", "."]


class _Clock:
    """A stand-in for ``rules.time``: the time moves only when a watched match says so."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Watched:
    """A compiled pattern whose every match is logged. A match without a timeout (it could run
    for hours) or that keeps the GIL (it would freeze every other session) fails the test
    instead of running. With a clock, a match costs ``cost_s`` of it and finds nothing."""

    def __init__(self, pattern, log: list, clock: _Clock | None, cost_s: float):
        self.pattern, self.log, self.clock, self.cost_s = pattern, log, clock, cost_s

    def _match(self, how: str, word: str, timeout=None, concurrent=None):
        self.log.append((how, word, timeout))
        if timeout is None or concurrent is not True:
            raise AssertionError(f"{how} on {word[:20]!r}: timeout={timeout}, "
                                 f"concurrent={concurrent}")
        if self.clock is not None:
            self.clock.now += self.cost_s
            return None
        return getattr(self.pattern, how)(word, timeout=timeout, concurrent=concurrent)

    def fullmatch(self, word, **kwargs):
        return self._match("fullmatch", word, **kwargs)

    def search(self, word, **kwargs):
        return self._match("search", word, **kwargs)


@pytest.fixture()
def watch(monkeypatch):
    """``watch(cost_s=None)``: from now on every pattern rules.py compiles is logged with its
    units (``log["compiled"]``) and every match it makes (``log["matches"]``) goes through
    ``_Watched``; with ``cost_s`` the clock is fake and each match costs that much of it."""
    compile_matcher.cache_clear()

    def start(cost_s: float | None = None) -> dict:
        log = {"compiled": [], "matches": []}
        clock = None if cost_s is None else _Clock()

        def compile_(pattern, *args, **kwargs):
            try:
                units = pattern_units(pattern)
            except RuleError:
                units = math.inf
            log["compiled"].append((pattern, units))
            return _Watched(regex.compile(pattern, *args, **kwargs), log["matches"], clock,
                            cost_s or 0.0)
        monkeypatch.setattr(rules, "regex", types.SimpleNamespace(**{**vars(regex),
                                                                      "compile": compile_}))
        if clock is not None:
            monkeypatch.setattr(rules, "time", clock)
        return log
    yield start
    compile_matcher.cache_clear()


@pytest.mark.parametrize("pattern", ["(a|aa)+b", "(x|xx)+y$", r"([a-z]|[a-c])+\d"])
def test_catastrophic_patterns_are_refused_at_their_first_timed_out_probe(pattern, watch):
    """Every probe runs under PROBE_TIMEOUT_S (Python's re needs hours for these on a
    49-character word), and the first probe that runs past it ends the check."""
    log = watch()
    with pytest.raises(RuleError, match="catastrophically"):
        make_rule("words", "cat", "regex", pattern, 2.0)
    assert {timeout for _, _, timeout in log["matches"]} == {PROBE_TIMEOUT_S}
    probes = rules._probes(pattern)
    _, last, _ = log["matches"][-1]
    assert last in probes and len(log["matches"]) < 2 * len(probes)


def test_probing_one_pattern_has_one_deadline(watch):
    """Many distinct characters mean many probe strings; together they stop at one budget,
    PROBE_BUDGET_S, even when no single probe runs past its own timeout."""
    pattern = ("(?:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxy12345678)?"
               "(?:.|..){14}[^a-z0-9 .\\-_!b]")
    cost = PROBE_TIMEOUT_S * 0.8                # each match just under its own timeout
    log = watch(cost_s=cost)
    with pytest.raises(RuleError, match="too slow"):
        make_rule("words", "cat", "regex", pattern, 1.0)
    within_budget = math.ceil(PROBE_BUDGET_S / cost) + 2     # the check comes between probes
    assert len(log["matches"]) <= within_budget < 2 * len(rules._probes(pattern))


@pytest.mark.parametrize("kind,spec,match", [
    ("regex", "(unclosed", "not valid"),
    ("regex", "a{99999999999}", "not valid"),
    ("regex", "x" * (MAX_PATTERN_CHARS + 1), f"at most {MAX_PATTERN_CHARS}"),
    ("words", " , , ", "empty"),
    # The character limit bounds a word list too: one more word than fits is refused by it.
    ("words", ",".join("w" * (MAX_PATTERN_CHARS // 2 + 1)), f"at most {MAX_PATTERN_CHARS}"),
    ("glob", "*", "one of"),
    ("regex", "", "empty"),
])
def test_invalid_rule_sides_are_refused_with_the_reason(kind, spec, match):
    with pytest.raises(RuleError, match=match):
        make_rule("words", "cat", kind, spec, 1.0)


@pytest.mark.parametrize("strength", [-1.0, float("nan"), float("inf"), 11.0, "strong"])
def test_rule_strength_is_bounded(strength):
    with pytest.raises(RuleError, match="strength"):
        make_rule("words", "cat", "words", "dog", strength)


def test_matching_a_slow_pattern_against_text_stops_at_the_deadline(monkeypatch, watch):
    """A pattern that passes the probes but is slow on the user's own words stops with a
    notice, not a hang (hours with Python's re): every word is matched under what is left of
    MATCH_BUDGET_S."""
    monkeypatch.setattr(rules, "_probes", lambda pattern: [])      # let it past the probes
    log = watch()
    with pytest.raises(RuleError, match="took longer"):
        match_words(Matcher("regex", "(a|aa)+b"), ["a" * 60 + "!"] * 4)
    assert log["matches"] and all(0 < t <= MATCH_BUDGET_S for _, _, t in log["matches"])


def test_all_the_words_of_a_text_share_one_deadline(monkeypatch, watch):
    """No word runs past its timeout, yet the text as a whole stops at MATCH_BUDGET_S."""
    monkeypatch.setattr(rules, "_probes", lambda pattern: [])
    cost = MATCH_BUDGET_S / 4
    log = watch(cost_s=cost)
    with pytest.raises(RuleError, match="took longer"):
        match_words(Matcher("regex", "a+"), ["aaa"] * 100)
    assert len(log["matches"]) <= MATCH_BUDGET_S / cost + 1


def test_word_lists_ignore_case_and_regexes_match_whole_words():
    assert match_words(Matcher("words", "the, DOG"), WORDS).tolist() == [
        w.lower() in ("the", "dog") for w in WORDS]
    got = match_words(Matcher("regex", r"[A-Z]\w*"), WORDS)
    assert got.tolist() == [w[0].isupper() for w in WORDS]
    assert not match_words(Matcher("regex", "he"), WORDS).any()     # fullmatch, not search
    assert compile_matcher(Matcher("regex", r"\d+"))("1990")


def test_rule_pairs_are_the_matching_queries_and_targets_never_later_keys():
    rule = make_rule("words", "follows, sees", "regex", "the|The", 2.0)
    pairs = rule_pairs(rule, WORDS)
    src = np.array([w in ("follows", "sees") for w in WORDS])
    tgt = np.array([w in ("the", "The") for w in WORDS])
    q, k = np.nonzero(pairs)
    assert src[q].all() and tgt[k].all() and (k <= q).all()
    assert len(q) == sum(tgt[: i + 1].sum() for i in np.nonzero(src)[0])
    bias = rule_bias(rule, WORDS)
    assert bias.shape == (1, len(WORDS), len(WORDS))
    assert set(bias.unique().tolist()) <= {0.0, 2.0}


@pytest.fixture()
def text(tiny_corpus):
    return " ".join(tiny_corpus.tokenizer.labels(tiny_corpus.valid[:60].tolist()))


def test_raising_a_rule_raises_fidelity_to_its_targets(trained_tiny, tiny_corpus, text):
    tok = tiny_corpus.tokenizer
    fidelity = []
    for strength in (0.0, 1.0, 3.0, 8.0):
        rule = make_rule("regex", "sees|follows|builds|finds|loves|visits", "words", "the, a",
                         strength)
        a = analyze(trained_tiny, tok, text, Dial(), rule=rule)
        assert a.rule_pairs.any() and np.isfinite(a.perplexity)
        fidelity.append(a.rule_fidelity)
    assert all(b > a for a, b in zip(fidelity, fidelity[1:])), fidelity
    assert fidelity[-1] > 0.9


def test_a_rule_only_moves_the_rows_it_names(trained_tiny, tiny_corpus, text):
    tok = tiny_corpus.tokenizer
    rule = make_rule("regex", "sees|follows|builds|finds|loves|visits", "words", "the, a", 5.0)
    a = analyze(trained_tiny, tok, text, rule=rule)
    b = analyze(trained_tiny, tok, text)
    rows = a.rule_pairs.any(-1)
    assert rows.any() and not rows.all()
    first = int(np.argmax(rows))
    # Layer 0's rows without a rule pair, and every row before the first rule query, are as
    # they were (layer 1 mixes in the changed rows of layer 0 afterwards).
    np.testing.assert_allclose(a.patterns[0][:, ~rows], b.patterns[0][:, ~rows], atol=1e-3)
    np.testing.assert_allclose(a.patterns[:, :, :first], b.patterns[:, :, :first], atol=1e-3)
    assert np.abs(a.patterns[0][:, rows] - b.patterns[0][:, rows]).max() > 0.01


def test_the_anchor_bias_raises_pointer_fidelity(trained_tiny, tiny_corpus, text):
    tok = tiny_corpus.tokenizer
    fid = [analyze(trained_tiny, tok, text, Dial(1.0, 1.0, g))
           .metrics["pointer_fidelity_mass"]["mean"] for g in (0.0, 2.0, 5.0)]
    assert fid[0] < fid[1] < fid[2], fid


# -- where a rule's pairs lie against the blocks, and the barrier ------------------------------

# Two blocks of two tokens; the rule pairs (1, 0) and (3, 2) share a block, (3, 0) and (3, 1)
# cross one. One layer, two heads; rows 0 and 2 have no pair, so their weights never count.
REACH_BLOCKS = np.array([0, 0, 1, 1])
REACH_PAIRS = np.zeros((4, 4), bool)
REACH_PAIRS[1, 0] = REACH_PAIRS[3, 2] = REACH_PAIRS[3, 0] = REACH_PAIRS[3, 1] = True
REACH_PATTERNS = np.array([[[[1, 0, 0, 0], [0.4, 0.6, 0, 0], [0.9, 0.05, 0.05, 0],
                             [0.1, 0.2, 0.3, 0.4]],
                            [[1, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0],
                             [0, 0, 0.5, 0.5]]]])        # [layer, head, query, key]


def test_rule_reach_splits_the_pairs_and_their_mass_by_block():
    r = rule_reach(REACH_PATTERNS, REACH_PAIRS, REACH_BLOCKS, 3.0, 0.6, 64.0)
    assert (r.in_block_pairs, r.cross_block_pairs) == (2, 2)
    # By hand: in-block targets get 0.4 and 0.3 (head 0), 1.0 and 0.5 (head 1); cross-block
    # ones 0 and 0.1 + 0.2 (head 0), 0 and 0 (head 1); each is the mean of four rows.
    assert r.in_block_mass == pytest.approx((0.4 + 0.3 + 1.0 + 0.5) / 4)
    assert r.cross_block_mass == pytest.approx(0.3 / 4)
    assert r.in_block_mass + r.cross_block_mass == pytest.approx(
        rule_fidelity(REACH_PATTERNS, REACH_PAIRS))


@pytest.mark.parametrize("strength,locality,pairs,barrier,outweighs", [
    (3.0, 0.6, REACH_PAIRS, 64 * math.log(0.4), True),         # −58.6 against +3
    (3.0, 0.03, REACH_PAIRS, 64 * math.log(0.97), False),      # −1.95 against +3
    (10.0, 0.2, REACH_PAIRS, 64 * math.log(0.8), True),        # −14.3: the largest rule loses
    (3.0, 1.0, REACH_PAIRS, -math.inf, True),                  # masked outright
    (0.0, 0.0, REACH_PAIRS, 0.0, False),                       # no barrier, no bias
    (3.0, 0.6, REACH_PAIRS & (REACH_BLOCKS[:, None] == REACH_BLOCKS), 64 * math.log(0.4),
     False),                                                   # every target in-block
])
def test_the_barrier_outweighs_a_rule_when_it_is_larger_than_the_strength(
        strength, locality, pairs, barrier, outweighs):
    r = rule_reach(REACH_PATTERNS, pairs, REACH_BLOCKS, strength, locality, 64.0)
    assert r.barrier == pytest.approx(barrier)
    assert r.net_cross == pytest.approx(strength + barrier)
    assert r.barrier_outweighs is outweighs


def test_rule_reach_without_pairs_has_no_mass():
    r = rule_reach(REACH_PATTERNS, np.zeros((4, 4), bool), REACH_BLOCKS, 3.0, 0.6, 64.0)
    assert (r.in_block_pairs, r.cross_block_pairs) == (0, 0)
    assert r.in_block_mass is None and r.cross_block_mass is None and not r.barrier_outweighs


def test_rule_reach_of_a_live_analysis_adds_up_to_its_fidelity(trained_tiny, tiny_corpus, text):
    """On a real model the split covers every pair, and at λ = 1 a rule puts no attention on
    targets in other blocks, however strong."""
    rule = make_rule("regex", "[a-z]{4,}", "words", "the, a", 8.0)
    for lam in (0.0, 0.5, 1.0):
        a = analyze(trained_tiny, tiny_corpus.tokenizer, text, Dial(lam), rule=rule)
        r = rule_reach(a.patterns, a.rule_pairs, a.block_ids, 8.0, lam,
                       trained_tiny.cfg.barrier_sharpness)
        assert r.in_block_pairs > 0 and r.cross_block_pairs > 0
        assert r.in_block_pairs + r.cross_block_pairs == a.rule_pairs.sum()
        assert r.in_block_mass + r.cross_block_mass == pytest.approx(a.rule_fidelity, abs=1e-3)
    assert r.cross_block_mass == 0.0 and r.barrier_outweighs


def test_a_rule_bias_keeps_the_model_causal(trained_tiny, tiny_corpus, tokens):
    """The bias sits inside the causal mask: with large random biases on every pair, future
    keys included, the leak test still passes, though the biases change the outputs."""
    n = tokens.shape[1]
    everything = torch.randn(1, n, n, generator=torch.Generator().manual_seed(0)) * 5
    biased = trained_tiny.run_with_cache(tokens, score_bias=everything)[0]
    assert (biased - trained_tiny.run_with_cache(tokens)[0]).abs().max() > 0.1

    class Biased(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.m, self.cfg = model, model.cfg

        def check_tokens(self, t):
            return self.m.check_tokens(t)

        def run_with_cache(self, t, dial, **kw):
            return self.m.run_with_cache(t, dial, score_bias=everything, **kw)

    res = leak_test(Biased(trained_tiny), tokens, [Dial()])
    assert res["passed"], res


# -- the rule bomb: memory and other sessions ----------------------------------------------------

BOMB_SHAPES = ["a{%d}", "(?:ab){%d}", "[a-z]{%d,}", "a{2,%d}?", "a{%d}+", "(?:a{10}){%d}",
               "\\d{%d}x", "(?x) a{%s}", "(?:cat){e<=%d}", "(a)(?1){%d}", "(?i)ß{%d}"]
BOMB_COUNTS = [10**3, 10**5, 10**6, 10**8]
BOMB_SCRIPT = """
import gc, json, os, resource, sys
from localist_core.analysis.rules import RuleError, make_rule
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def vm():
    return int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
# A hard ceiling: compiling today's a{100000000} would need gigabytes and dies here.
resource.setrlimit(resource.RLIMIT_AS, (vm() + 256 * 2**20,) * 2)
out = []
for pattern in json.loads(sys.argv[1]):
    gc.collect()
    before = rss()
    for side in ("source", "target"):
        args = ["regex", pattern, "words", "the"] if side == "source" else \\
               ["words", "the", "regex", pattern]
        try:
            make_rule(args[0], args[1], args[2], args[3], 3.0)
            verdict = "accepted"
        except RuleError as e:
            verdict = "refused"
        except MemoryError:
            verdict = "MemoryError"
    gc.collect()
    out.append([pattern, verdict, rss() - before])
print(json.dumps(out))
"""


def _spaced(n: int) -> str:
    return " ".join(str(n))          # verbose mode reads "1 0 0 0" as 1000


@pytest.mark.slow
def test_a_rule_bomb_is_refused_before_it_costs_memory():
    """Every large repeat, in any spelling, is refused before regex compiles it; none raises
    the process's memory by more than a few MB, under a hard address-space ceiling."""
    import json
    import subprocess
    import sys

    patterns = [shape % (_spaced(n) if "%s" in shape else n)
                for shape in BOMB_SHAPES for n in BOMB_COUNTS]
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, json.dumps(patterns)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for pattern, verdict, grew in json.loads(done.stdout.splitlines()[-1]):
        assert verdict == "refused", (pattern, verdict)
        assert grew < 4 * 2**20, (pattern, grew)


def test_the_refusal_names_the_limit():
    with pytest.raises(RuleError, match="repeat count of 1,000,000 is over the limit of 100"):
        make_rule("regex", "a{1000000}", "words", "the", 1.0)
    with pytest.raises(RuleError, match="too large"):
        make_rule("words", "the", "regex", "(?:(?:a{10}){10}){10}", 1.0)


@pytest.mark.parametrize("shape", ["(?:ab){%d}c*", "x[a-z]{%d}", "(?x) (?: a b ){%s}"])
def test_pattern_units_grow_with_the_written_out_repeats(shape):
    """Doubling a count adds one copy of what it repeats; nesting multiplies."""
    def units(n):
        return pattern_units(shape % (" ".join(str(n)) if "%s" in shape else n))
    step = units(4) - units(2)
    assert step > 0 and units(8) - units(4) == 2 * step
    assert pattern_units("(?:(?:ab){4}){4}") > 4 * pattern_units("(?:ab){4}") - 4


def test_the_largest_allowed_patterns_together_cost_a_few_mb():
    """Every matcher the cache keeps at the largest size the limits allow: a few MB in all."""
    import gc
    import os

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    specs = [f"(?:[a-z]{{19}}){{17}}x{{{i % 20}}}y{{{i // 20}}}" for i in range(MATCHERS_KEPT)]
    assert max(pattern_units(s) for s in specs) <= MAX_PATTERN_UNITS
    compile_matcher.cache_clear()
    gc.collect()
    before = rss()
    for spec in specs:
        compile_matcher(Matcher("regex", spec))
    gc.collect()
    assert rss() - before < 8 * 2**20
    compile_matcher.cache_clear()


def test_every_match_a_rule_makes_is_timed_and_lets_other_threads_run(monkeypatch, watch):
    """Probes and the text's words alike are matched with a timeout and ``concurrent=True``:
    the matcher releases the GIL, so a backtracking match does not freeze other sessions
    (``_Watched`` fails the test on any other match)."""
    log = watch()
    with pytest.raises(RuleError, match="catastrophically"):
        compile_matcher(Matcher("regex", "(a|aa)+b"))
    rule = make_rule("regex", "[a-z]+", "words", "the", 1.0)
    rule_pairs(rule, WORDS)
    probed = {w for how, w, _ in log["matches"]}
    assert probed >= set(WORDS) - {"the"} and probed & set(rules._probes("(a|aa)+b"))


PIECES = ["a", "b", ".", "\\d", "\\w", "[a-z]", "[^x]", "\\p{Lu}", "(?:", "(", ")", "|", "*", "+",
          "?", "{", "}", ",", "(?i)", "(?x) ", "(?1)", "(?R)", "{e<=", "\\", "^", "$", "ß", "9",
          "(?<n>", "(?P=n)", "[[:alpha:]]", "(?=", "(?<!", "\\L<x>", "\\N{DIGIT ONE}", " "]


@pytest.mark.parametrize("seed", range(4))
def test_any_typed_pattern_is_accepted_or_refused_with_a_notice(seed, watch):
    """Random strings of regex syntax with random repeat counts: make_rule returns a rule or
    raises RuleError, never anything else; a pattern over the size limit is refused before it
    is compiled, and every probe is timed (how long each takes: ``python -m bench.checks``)."""
    import random

    log = watch()
    rng = random.Random(seed)
    oversized = 0
    for _ in range(150):
        spec = "".join(rng.choice(PIECES) if rng.random() < 0.8 else rng.choice(
            ["{}", "{{{}}}", "{{{},}}"]).format(rng.choice([0, 1, 7, 99, 100, 101, 10**4, 10**9]))
            for _ in range(rng.randint(1, 14)))
        try:
            make_rule("regex", spec, "words", "the", 1.0)
        except RuleError as e:
            oversized += "too large" in str(e)
        compile_matcher.cache_clear()
    # Some were over a size limit, and none of those reached the compiler; every match was
    # timed (_Watched).
    compiled = [units for _, units in log["compiled"]]
    assert oversized and compiled and max(compiled) <= MAX_PATTERN_UNITS


# -- recursion and remembered refusals ---------------------------------------------------------

RECURSIVE = [r"(?=\w*ac)(((?1)))", r"(?R)?a", r"a(?0)?", r"(?<n>a(?&n)?)", r"(?P<n>a(?P>n)?)",
             r"(a)(?+1)?(b)", r"(a(?-1)?)", r"(?(R)a|b)", r"(?(DEFINE)(?<x>a))(?&x)",
             r"(?i)(?x) ( a (?1)? )"]


@pytest.mark.parametrize("pattern", RECURSIVE)
def test_recursion_is_refused_before_it_compiles(pattern, monkeypatch):
    """``(?=\\w*ac)(((?1)))`` passed every probe, then recursed on real words until the match
    timeout, ~200 MB a match. Group calls and recursion are refused from the parse alone: in
    well under 50 ms, with nothing compiled and no more than a little memory."""
    import time
    import tracemalloc

    compile_matcher.cache_clear()
    monkeypatch.setattr(rules, "regex", types.SimpleNamespace(**{
        **vars(regex), "compile": lambda *a, **k: pytest.fail(f"{pattern} was compiled")}))
    tracemalloc.start()
    t0 = time.perf_counter()
    for side in (("regex", pattern, "words", "the"), ("words", "the", "regex", pattern)):
        with pytest.raises(RuleError, match="recursion"):
            make_rule(*side, 1.0)
    took = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 0.05 and peak < 2**20, (took, peak)
    compile_matcher.cache_clear()


def test_a_refusal_is_remembered_per_pattern(monkeypatch):
    """A refused pattern is parsed once: the same pattern again, on any text, is refused from
    the remembered message without being parsed, compiled or matched."""
    compile_matcher.cache_clear()
    parses = []
    parse = rules._parse
    monkeypatch.setattr(rules, "_parse", lambda p: parses.append(p) or parse(p))
    pattern = RECURSIVE[0]
    messages = set()
    for _ in range(5):
        with pytest.raises(RuleError) as e:
            make_rule("regex", pattern, "words", "the", 1.0)
        messages.add(str(e.value))
    assert parses == [pattern] and len(messages) == 1
    compile_matcher.cache_clear()


def test_a_match_that_ran_out_of_time_is_refused_from_then_on(monkeypatch):
    """A pattern that passed its checks but ran past the match budget on a text is refused
    for every later text without matching again."""
    compile_matcher.cache_clear()
    m = Matcher("regex", "[a-z]+")
    monkeypatch.setattr(rules, "MATCH_BUDGET_S", 0.0)
    with pytest.raises(RuleError, match="took longer"):
        match_words(m, WORDS)
    monkeypatch.setattr(rules, "MATCH_BUDGET_S", MATCH_BUDGET_S)
    monkeypatch.setattr(rules, "_checked_matcher",
                        lambda m: pytest.fail("a remembered refusal was checked again"))
    for text in (WORDS, ["other", "words"]):
        with pytest.raises(RuleError, match="took longer"):
            match_words(m, text)
    monkeypatch.undo()
    compile_matcher.cache_clear()


def test_remembered_refusals_are_bounded():
    compile_matcher.cache_clear()
    for i in range(rules.REFUSALS_KEPT + 40):
        with pytest.raises(RuleError):
            compile_matcher(Matcher("regex", f"(a{i})(?1)"))
    assert len(rules._refusals) == rules.REFUSALS_KEPT
    compile_matcher.cache_clear()
    assert len(rules._refusals) == 0
