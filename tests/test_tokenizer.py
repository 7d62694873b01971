"""The tokenizer follows WikiText tokenisation and keeps <unk> visible."""
from collections import Counter

import pytest

from localist_core.model.tokenizer import EOS, UNK, Tokenizer, split_words


@pytest.mark.parametrize("text,words", [
    ("A well-known game", ["A", "well", "@-@", "known", "game"]),
    ("It cost 1,000.5 yen.", ["It", "cost", "1", "@,@", "000", "@.@", "5", "yen", "."]),
    ("They don't know it's Sega's (maybe).",
     ["They", "do", "n't", "know", "it", "'s", "Sega", "'s", "(", "maybe", ")", "."]),
    ('He said "no", then left!', ["He", "said", '"', "no", '"', ",", "then", "left", "!"]),
    ("already @-@ tokenised <unk> text", ["already", "@-@", "tokenised", "<unk>", "text"]),
    ("", []),
    ("   \t ", []),
])
def test_split_words_follows_wikitext(text, words):
    assert split_words(text) == words


def _tok():
    return Tokenizer.from_counts(Counter({"the": 9, "cat": 5, "sat": 5, ".": 7, "@-@": 2}))


def test_ids_sorted_by_frequency_with_specials():
    tok = _tok()
    assert tok.words[:2] == ["the", "."] and tok.words[2:4] == ["cat", "sat"]
    assert EOS in tok.words and UNK in tok.words


def test_unknown_words_become_visible_unk():
    tok = _tok()
    ids = tok.encode("the zebra sat")
    assert ids[1] == tok.unk_id and tok.labels(ids) == ["the", UNK, "sat"]


def test_round_trip_and_line_breaks():
    tok = _tok()
    ids = tok.encode("the cat sat .\nthe cat")
    assert tok.labels(ids) == ["the", "cat", "sat", ".", EOS, "the", "cat"]
    assert tok.encode(tok.decode(ids)) == ids


def test_control_and_zero_width_characters_are_dropped():
    tok = _tok()
    assert tok.encode("the\u200b cat\x07 sat") == tok.encode("the cat sat")


def test_vocabulary_must_hold_specials_and_no_duplicates():
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer(["a", "a", EOS, UNK])
    with pytest.raises(ValueError, match="lacks"):
        Tokenizer(["a", EOS])


def test_the_ascii_fast_path_equals_the_unicode_path():
    import random
    import unicodedata

    from localist_core.model.tokenizer import normalize_text

    rng = random.Random(0)
    for _ in range(200):
        text = "".join(chr(rng.randrange(0, 128)) for _ in range(rng.randrange(0, 40)))
        slow = "".join(ch for ch in unicodedata.normalize("NFC", text) if ch in "\n\t"
                       or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co"))
        assert normalize_text(text) == slow
