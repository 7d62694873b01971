"""Word-level tokenizer that follows WikiText tokenisation.

Raw text is split the way WikiText was: punctuation apart, ``@-@`` for a hyphen inside a word,
``@,@`` and ``@.@`` inside numbers, clitics (``'s``, ``n't``) apart. Words outside the vocabulary
become ``<unk>``, which stays visible. Ids are sorted by training frequency (the adaptive softmax
needs that), most frequent first.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable

EOS, UNK = "<eos>", "<unk>"

_INNER = [
    (re.compile(r"(?<=\d),(?=\d)"), " @,@ "),
    (re.compile(r"(?<=\d)\.(?=\d)"), " @.@ "),
    (re.compile(r"(?<=\w)-(?=\w)"), " @-@ "),
]
_CLITIC = re.compile(r"(?i)(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
# Punctuation that WikiText writes as its own token. '@' is left alone so "@-@" survives.
_PUNCT = re.compile(r"([.,;:!?()\[\]{}\"“”‘’«»—–…/*=+<>|\\])")
_MARKER = re.compile(r"@ ([-.,]) @")


_ASCII_CONTROLS = {c: None for c in (*range(32), 127) if chr(c) not in "\n\t"}
_DROPPED = ("Cc", "Cf", "Cs", "Co")   # control, format (zero-width, bidi), surrogate, private
# Blank letters and marks outside those categories that render as nothing (or a blank) and are
# used to hide text: combining grapheme joiner, the Hangul fillers, Khmer inherent vowels,
# the blank Braille pattern. WikiText-2 holds none of them.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")


def _dropped(ch: str) -> bool:
    return ch in _INVISIBLE or unicodedata.category(ch) in _DROPPED


def normalize_text(text: str) -> str:
    """NFC-normalise, drop control and zero-width (format) characters; keep newlines and tabs."""
    if text.isascii():   # the common case, done in C: ASCII has no format characters
        return text.translate(_ASCII_CONTROLS)
    text = unicodedata.normalize("NFC", text)
    return "".join(ch for ch in text if ch in "\n\t" or not _dropped(ch))


def dropped_characters(text: str) -> int:
    r"""How many characters ``normalize_text`` drops, not counting carriage returns (harmless).

    >>> dropped_characters("a\u200bb\x07c\r\n"), dropped_characters("\u3164\u2800\u115f\u034f")
    (2, 4)
    """
    return sum(1 for ch in text if ch not in "\n\t\r" and _dropped(ch))


def split_words(line: str) -> list[str]:
    """Split one line of raw (or already tokenised) text into WikiText-style words."""
    for pat, rep in _INNER:
        line = pat.sub(rep, line)
    line = _CLITIC.sub(r" \1", line)
    # Keep <unk>/<eos> whole while spacing out the other angle brackets.
    line = line.replace("<unk>", "\x00U").replace("<eos>", "\x00E")
    line = _PUNCT.sub(r" \1 ", line)
    line = line.replace("\x00U", " <unk> ").replace("\x00E", " <eos> ")
    line = _MARKER.sub(r"@\1@", line)  # "@ - @" produced by the punctuation pass → "@-@"
    return line.split()


class Tokenizer:
    """Maps text to ids and back over a fixed, frequency-sorted vocabulary."""

    def __init__(self, words: list[str]):
        if len(set(words)) != len(words):
            raise ValueError("vocabulary has duplicate words")
        for special in (EOS, UNK):
            if special not in words:
                raise ValueError(f"vocabulary lacks {special}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.eos_id, self.unk_id = self.index[EOS], self.index[UNK]

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def from_counts(cls, counts: Counter) -> "Tokenizer":
        """Most frequent first; ties by the word itself, so the order is reproducible."""
        counts = Counter(counts)
        counts.setdefault(EOS, 0)
        counts.setdefault(UNK, 0)
        return cls([w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))])

    def tokenize(self, text: str) -> list[str]:
        """Words of ``text``; a line break becomes ``<eos>`` (not added after the last line)."""
        lines = normalize_text(text).split("\n")
        out: list[str] = []
        for i, line in enumerate(lines):
            out.extend(split_words(line))
            if i < len(lines) - 1:
                out.append(EOS)
        return out

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; words outside the vocabulary become ``<unk>``."""
        return [self.index.get(w, self.unk_id) for w in self.tokenize(text)]

    def encode_words(self, words: Iterable[str]) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in words]

    def decode(self, ids: Iterable[int]) -> str:
        """Space-joined words; ``encode(decode(ids)) == ids`` for ids without ``<eos>``."""
        return " ".join(self.words[int(i)] for i in ids)

    def labels(self, ids: Iterable[int]) -> list[str]:
        """One display label per id (``<unk>`` kept visible)."""
        return [self.words[int(i)] for i in ids]

    def save(self, path: str | Path) -> None:
        text = json.dumps({"words": self.words}, ensure_ascii=False)
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("words"), list):
            raise ValueError(f"{path}: not a vocabulary file (expected {{'words': [...]}})")
        return cls(data["words"])
