"""User-defined attention rules: "tokens matching X attend to tokens matching Y"
(docs/design.md, "Theory, rules and inspection").

A rule adds a bias to the attention score of every (query, key) pair where the query matches X
and the key matches Y, inside the causal mask, so a rule can never reveal a later token. X and Y
are each a word list or a regular expression over the tokens' words. A pair whose key lies in
another block also carries the cross-block barrier; ``rule_reach`` says which pairs do and
whether the barrier outweighs the rule there.

Rules come from users, so each is bounded and validated before it touches a model: word lists
and patterns have a length cap, an invalid pattern is refused with the reason, and a pattern
that backtracks catastrophically is refused quickly. Patterns run under the ``regex`` package,
whose matcher takes a timeout (Python's ``re`` has none) and can release the GIL while it
matches. Before anything is compiled, the pattern is parsed by ``regex``'s own parser and its
size after expanding counted repeats is bounded: compiling ``a{1000000}`` would take 260 MB.
Every pattern is then tried on adversarial probe strings, all under one deadline, and matched
against the text under another. A refusal comes in well under a second where Python's ``re``
would run for hours. Group calls and recursion (``(?1)``, ``(?R)``, ``(?&name)``, ``(?P>name)``)
are refused outright: a recursive pattern can pass every probe and then recurse on real words
until the timeout, about 200 MB a match. An accepted pattern is kept compiled, and a refusal,
whether from the checks or from a match that ran out of time, is remembered per pattern
(``REFUSALS_KEPT``), so a new text never repeats the work.
"""
from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import regex
import torch
from regex import _regex_core
from torch import Tensor

from ..model.attention import cross_block_barrier

MATCHER_KINDS = ("words", "regex")
MAX_PATTERN_CHARS = 200    # a word list too: 200 characters hold at most 100 words
MAX_WORD_CHARS = 64
# A compiled pattern costs about 265 bytes per unit of its expanded size (a{100000}: 26 MB), so
# these bound one pattern to ~0.1 MB and the MATCHERS_KEPT compiled ones to a few MB.
MAX_REPEAT_COUNT = 100      # the largest m or n in {m,n}, and in a fuzzy constraint {e<=n}
MAX_PATTERN_UNITS = 400     # parse-tree nodes once counted repeats are written out
MATCHERS_KEPT = 64
REFUSALS_KEPT = 256         # remembered refusals, one message each (< 1 KB): < 256 KB in all
RULE_STRENGTH_MAX = 10.0
PROBE_TIMEOUT_S = 0.05      # each probe string; a sound pattern needs microseconds
PROBE_BUDGET_S = 0.5        # all probe strings of one pattern together
MATCH_BUDGET_S = 0.25       # all the text's tokens together
PROBE_RUN = 48              # length of the repeated runs in a probe string


class RuleError(ValueError):
    """A rule is invalid, too large or too slow to match; the message says which and why."""


@dataclass(frozen=True)
class Matcher:
    """Which tokens a side of a rule selects: a word list (case-insensitive) or a regular
    expression that must match a token's whole word (``fullmatch``)."""

    kind: str
    spec: str

    def describe(self) -> str:
        return f"words {self.spec!r}" if self.kind == "words" else f"regex /{self.spec}/"


@dataclass(frozen=True)
class Rule:
    """Queries matching ``source`` get ``strength`` added to their scores on keys matching
    ``target`` (before the softmax and the temperature)."""

    source: Matcher
    target: Matcher
    strength: float

    def describe(self) -> str:
        return f"{self.source.describe()} → {self.target.describe()} (+{self.strength:g})"


def _words(spec: str) -> frozenset[str]:
    words = [w.strip().lower() for w in spec.replace("\n", ",").split(",")]
    words = [w for w in words if w]
    if not words:
        raise RuleError("the word list is empty; give words separated by commas")
    long = [w for w in words if len(w) > MAX_WORD_CHARS]
    if long:
        raise RuleError(f"the word {long[0][:20]!r}… is longer than {MAX_WORD_CHARS} characters")
    return frozenset(words)


def _probes(pattern: str) -> list[str]:
    """Strings that make a backtracking pattern explode: long runs of a character the pattern
    can match, then a character that makes the whole match fail at the very end."""
    chars = {c for c in pattern if c.isalnum()} | set("a0 .-_")
    out = []
    for c in sorted(chars):
        run = c * PROBE_RUN
        out += [run + "!", run + "\x00", (c + "b") * (PROBE_RUN // 2) + "!"]
    return out


def _parse(pattern: str):
    """The pattern's syntax tree from ``regex``'s own parser, the first step of
    ``regex.compile``, which builds nothing large (the expansion happens after it). Inline
    flags such as ``(?x)`` restart the parse as they do in ``regex.compile``."""
    flags = 0
    for _ in range(4):
        source = _regex_core.Source(pattern)
        info = _regex_core.Info(flags, source.char_type, {})
        info.guess_encoding = regex.UNICODE
        source.ignore_space = bool(info.flags & regex.VERBOSE)
        try:
            parsed = _regex_core._parse_pattern(source, info)
        except _regex_core._UnscopedFlagSet:
            flags = info.global_flags
            continue
        if not source.at_end():
            raise regex.error("unbalanced parenthesis", pattern, source.pos)
        return parsed
    raise regex.error("conflicting inline flags", pattern)


def _children(node) -> list:
    out = []
    for v in vars(node).values():
        if isinstance(v, _regex_core.RegexBase):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += [x for x in v if isinstance(x, _regex_core.RegexBase)]
    return out


class UnboundedPattern(RuleError):
    """A construct whose cost no check on the pattern alone can bound (recursion)."""


# The conditions that only recursion uses: (?(R)…), (?(R1)…), (?(R&name)…), (?(DEFINE)…).
_RECURSION_TEST = regex.compile(r"R\d*|R&\w+|DEFINE")


def _expanded_units(node) -> int:
    """Atoms in ``node`` once every counted repeat is written out."""
    if isinstance(node, _regex_core.GreedyRepeat):   # lazy and possessive repeats too
        counts = [c for c in (node.min_count, node.max_count) if c is not None]
        if max(counts, default=0) > MAX_REPEAT_COUNT:
            raise RuleError(f"a repeat count of {max(counts):,} is over the limit of "
                            f"{MAX_REPEAT_COUNT}")
        return 1 + max([1, *counts]) * _expanded_units(node.subpattern)
    if isinstance(node, _regex_core.Fuzzy):
        limits = [n for c in node.constraints.values() if isinstance(c, tuple)
                  for n in c if isinstance(n, int)]
        costs = node.constraints.get("cost", {})
        limits += [n for n in costs.values() if isinstance(n, int)]
        if max(limits, default=0) > MAX_REPEAT_COUNT:
            raise RuleError(f"a fuzzy-match limit of {max(limits):,} is over the limit of "
                            f"{MAX_REPEAT_COUNT}")
    if isinstance(node, _regex_core.CallGroup):
        # (?1), (?R), (?&name), (?P>name), (?+1): a call may recurse, and a recursion's depth
        # and memory depend on the text, not on the pattern, so no check here can bound it.
        raise UnboundedPattern("group calls and recursion such as (?1), (?R) or (?&name) "
                               "are not allowed; write the group out")
    if isinstance(node, _regex_core.Conditional) and _RECURSION_TEST.fullmatch(
            str(node.group)):
        raise UnboundedPattern("conditions on recursion such as (?(R)…) or (?(DEFINE)…) are "
                               "not allowed")
    size = 1 + len(getattr(node, "characters", ()))
    return size + sum(_expanded_units(c) for c in _children(node))


def pattern_units(pattern: str) -> int:
    """The size of ``pattern`` with its counted repeats written out, from its parse alone:
    ``(?:ab){3}c*`` is 13 (a sequence; a repeat of 3 × [a sequence, a, b]; c*). Raises
    RuleError for a repeat count or a fuzzy limit over MAX_REPEAT_COUNT, UnboundedPattern (a
    RuleError) for a group call or recursion, and regex.error for a pattern that does not
    parse."""
    try:
        return _expanded_units(_parse(pattern))
    except RecursionError:
        raise RuleError("the pattern is nested too deeply") from None


class _Refusals:
    """The last ``size`` refusals, matcher → message, shared by every session's thread."""

    def __init__(self, size: int):
        self.size, self._kept, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, m: Matcher) -> str | None:
        with self._lock:
            if m in self._kept:
                self._kept.move_to_end(m)
            return self._kept.get(m)

    def remember(self, m: Matcher, message: str) -> None:
        with self._lock:
            self._kept[m] = message
            self._kept.move_to_end(m)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def __len__(self) -> int:
        return len(self._kept)


_refusals = _Refusals(REFUSALS_KEPT)


def compile_matcher(m: Matcher):
    """Check a matcher and return a function ``word -> bool``, or raise RuleError. The verdict
    is kept per matcher: an accepted one compiled (``MATCHERS_KEPT``), a refusal as its message
    (``REFUSALS_KEPT``; lru_cache keeps no exceptions), so a refused pattern is parsed, probed
    and matched at most once. ``compile_matcher.cache_clear()`` forgets both."""
    refused = _refusals.get(m)
    if refused is not None:
        raise RuleError(refused)
    try:
        return _checked_matcher(m)
    except RuleError as e:
        _refusals.remember(m, str(e))
        raise


@functools.lru_cache(maxsize=MATCHERS_KEPT)
def _checked_matcher(m: Matcher):
    """``compile_matcher``'s checks and compilation, for a matcher not refused before."""
    if m.kind not in MATCHER_KINDS:
        raise RuleError(f"a rule side must be one of {MATCHER_KINDS}, got {m.kind!r}")
    if not isinstance(m.spec, str) or not m.spec.strip():
        raise RuleError("the rule side is empty")
    if len(m.spec) > MAX_PATTERN_CHARS:
        raise RuleError(f"the rule side has {len(m.spec)} characters; at most "
                        f"{MAX_PATTERN_CHARS} are allowed")
    if m.kind == "words":
        words = _words(m.spec)
        return lambda w, _t=None: w.lower() in words
    try:
        units = pattern_units(m.spec)
    except UnboundedPattern as e:
        raise RuleError(f"the regular expression /{m.spec}/ is refused: {e}") from None
    except RuleError as e:
        raise RuleError(f"the regular expression /{m.spec}/ is too large: {e}") from None
    except (regex.error, OverflowError, ValueError, KeyError, AttributeError) as e:
        # regex's parser raises regex.error for bad syntax; anything else means it could not
        # be checked, and an unchecked pattern is never compiled.
        raise RuleError(f"the regular expression /{m.spec}/ is not valid: {e}") from None
    if units > MAX_PATTERN_UNITS:
        raise RuleError(f"the regular expression /{m.spec}/ is too large: written out, its "
                        f"repeats make {units:,} parts (the limit is {MAX_PATTERN_UNITS})")
    try:   # not kept in regex's own cache of 500 patterns: lru_cache above bounds ours
        pat = regex.compile(m.spec, cache_pattern=False)
    except (regex.error, OverflowError, RecursionError, ValueError) as e:
        raise RuleError(f"the regular expression /{m.spec}/ is not valid: {e}") from None
    finally:
        # regex still notes every pattern it compiles (whether it uses a locale), a note that
        # grows without bound when nothing is cached; purge drops it. The project compiles
        # no other patterns through regex, so nothing else is recompiled.
        regex.purge()
    deadline = time.perf_counter() + PROBE_BUDGET_S
    for probe in _probes(m.spec):
        if time.perf_counter() > deadline:
            raise RuleError(f"the regular expression /{m.spec}/ is too slow to check (its probes "
                            f"took over {PROBE_BUDGET_S * 1000:.0f} ms); simplify it")
        try:
            # concurrent: the GIL is released while it matches, so other sessions run on
            pat.fullmatch(probe, timeout=PROBE_TIMEOUT_S, concurrent=True)
            pat.search(probe, timeout=PROBE_TIMEOUT_S, concurrent=True)
        except TimeoutError:
            raise RuleError(f"the regular expression /{m.spec}/ backtracks catastrophically "
                            f"(it ran past {PROBE_TIMEOUT_S * 1000:.0f} ms on a "
                            f"{len(probe)}-character word); simplify nested repeats such as "
                            f"(a+)+") from None
    return lambda w, t=PROBE_TIMEOUT_S: pat.fullmatch(w, timeout=t, concurrent=True) is not None


def _clear_verdicts() -> None:
    _checked_matcher.cache_clear()
    _refusals.clear()


compile_matcher.cache_clear = _clear_verdicts
compile_matcher.cache_info = _checked_matcher.cache_info


def make_rule(source_kind: str, source: str, target_kind: str, target: str,
              strength: float) -> Rule:
    """Build and validate a rule from plain values (what a form or a link gives)."""
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise RuleError(f"the rule strength {strength!r} is not a number") from None
    if not math.isfinite(strength) or not 0.0 <= strength <= RULE_STRENGTH_MAX:
        raise RuleError(f"the rule strength must be in [0, {RULE_STRENGTH_MAX:g}], got "
                        f"{strength!r}")
    rule = Rule(Matcher(source_kind, source), Matcher(target_kind, target), strength)
    compile_matcher(rule.source)
    compile_matcher(rule.target)
    return rule


def match_words(m: Matcher, words: list[str]) -> np.ndarray:
    """``[T]`` bool: which words the matcher selects. All words share one deadline; a matcher
    that runs out of time is refused from then on (``compile_matcher``), whatever the text."""
    fn = compile_matcher(m)
    deadline = time.perf_counter() + MATCH_BUDGET_S
    out = np.zeros(len(words), bool)
    for i, w in enumerate(words):
        left = deadline - time.perf_counter()
        slow = None
        if left <= 0:
            slow = "the text"
        else:
            try:
                out[i] = fn(w, left)
            except TimeoutError:
                slow = f"the word {w[:20]!r}"
        if slow is not None:
            message = (f"matching {m.describe()} against {slow} took longer than "
                       f"{MATCH_BUDGET_S * 1000:.0f} ms; simplify the pattern")
            _refusals.remember(m, message)
            raise RuleError(message)
    return out


def rule_pairs(rule: Rule, words: list[str]) -> np.ndarray:
    """``[query, key]`` bool: the query matches the source and the key matches the target and
    comes no later than the query (the causal mask; the model applies it too)."""
    src, tgt = match_words(rule.source, words), match_words(rule.target, words)
    return np.tril(np.outer(src, tgt))


def rule_bias(rule: Rule, words: list[str] | None = None,
              pairs: np.ndarray | None = None) -> Tensor:
    """``[1, T, T]`` float: the additive score bias a rule puts on each (query, key) pair
    (from ``pairs`` when they are already known, else matched against ``words``)."""
    if pairs is None:
        pairs = rule_pairs(rule, words)
    return torch.from_numpy(np.asarray(pairs)).float().unsqueeze(0) * rule.strength


def rule_fidelity(patterns: np.ndarray | Tensor, pairs: np.ndarray) -> float | None:
    """Mean attention mass that the rule's source queries put on its targets, over layers,
    heads and every source query that can see at least one target; None if there is none.

    ``patterns`` is ``[L, H, T, T]`` (query rows sum to 1)."""
    return _row_mass(patterns, pairs, pairs)


def _row_mass(patterns: np.ndarray | Tensor, pairs: np.ndarray,
              keys: np.ndarray) -> float | None:
    """Mean mass on the ``keys`` pairs (a subset of ``pairs``), over layers, heads and the
    queries that have at least one pair in ``pairs``; None if there is none."""
    p = torch.as_tensor(patterns, dtype=torch.float32)
    rows = torch.as_tensor(pairs, dtype=torch.bool).any(-1)   # queries the rule applies to
    if not bool(rows.any()):
        return None
    mass = (p * torch.as_tensor(keys, dtype=torch.bool)).sum(-1)   # [L, H, T]
    return float(mass[..., rows].mean())


@dataclass(frozen=True)
class RuleReach:
    """Where a rule's pairs lie against the blocks, and whether the cross-block barrier
    outweighs it. A rule adds ``strength`` to a pair's score; a pair whose key lies in another
    block also gets the barrier β·log(1−λ), so its net change against λ = 0 is
    ``strength + barrier``. When that is negative the rule cannot lift a cross-block target
    back to where it stood without the barrier: at β = 64, λ = 0.6 the barrier is −58.6 and
    the largest rule adds 10."""

    strength: float
    locality: float
    sharpness: float                  # β, the checkpoint's barrier_sharpness
    barrier: float                    # β·log(1−λ) on every cross-block score; −inf at λ = 1
    in_block_pairs: int               # (query, key) pairs whose key shares the query's block
    cross_block_pairs: int            # ... whose key lies in another block
    in_block_mass: float | None       # the rule's fidelity split by where its targets lie:
    cross_block_mass: float | None    # in + cross = rule_fidelity (None: no pair at all)

    @property
    def net_cross(self) -> float:
        """The rule's bias plus the barrier on a cross-block target's score."""
        return self.strength + self.barrier

    @property
    def barrier_outweighs(self) -> bool:
        """Some targets lie in other blocks and the barrier there is larger than the rule."""
        return self.cross_block_pairs > 0 and self.net_cross < 0


def rule_reach(patterns: np.ndarray | Tensor, pairs: np.ndarray, block_ids: np.ndarray,
               strength: float, locality: float, sharpness: float) -> RuleReach:
    """Split a rule's ``[query, key]`` ``pairs`` by whether the key shares the query's block
    (``block_ids`` ``[T]``), with the attention mass ``patterns`` ``[L, H, T, T]`` puts on each
    part, and weigh ``strength`` against the barrier β·log(1−λ) (β = ``sharpness``)."""
    pairs = np.asarray(pairs, dtype=bool)
    ids = np.asarray(block_ids)
    same = ids[:, None] == ids[None, :]
    inside, across = pairs & same, pairs & ~same
    return RuleReach(float(strength), float(locality), float(sharpness),
                     cross_block_barrier(locality, sharpness),
                     int(inside.sum()), int(across.sum()),
                     _row_mass(patterns, pairs, inside), _row_mass(patterns, pairs, across))
