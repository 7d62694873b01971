"""The loader reads local files through `datasets` and fails fast, with a message, otherwise."""
import time

import pytest
import torch

from localist_core.experiments import data as D


def test_loads_temporary_files_through_datasets(tiny_data_dir, tiny_corpus):
    lines = (tiny_data_dir / "train.txt").read_text().splitlines()
    assert len(tiny_corpus.train) == sum(len(line.split()) + 1 for line in lines)
    assert tiny_corpus.source == str(tiny_data_dir)
    assert tiny_corpus.tokenizer.decode(tiny_corpus.train[:3].tolist()) == " ".join(
        (lines[0].split() + ["<eos>"] + lines[1].split() + ["<eos>"])[:3])


def test_vocabulary_sorted_by_training_frequency(tiny_corpus):
    tok = tiny_corpus.tokenizer
    counts = torch.bincount(tiny_corpus.train, minlength=len(tok))
    assert (counts[:-1] >= counts[1:]).all()


def test_missing_files_in_given_folder_are_named(tmp_path):
    (tmp_path / "train.txt").write_text("a b\n")
    with pytest.raises(D.DataNotFound, match="valid.txt, test.txt"):
        D.load_corpus(tmp_path)


def test_no_folder_and_no_hub_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("LOCALIST_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(D, "DEV_DATA_DIR", tmp_path / "absent")
    start = time.perf_counter()
    with pytest.raises(D.DataNotFound, match="LOCALIST_DATA_DIR"):
        D.load_corpus()
    assert time.perf_counter() - start < 5


def test_env_variable_selects_the_folder(monkeypatch, tiny_data_dir):
    monkeypatch.setenv("LOCALIST_DATA_DIR", str(tiny_data_dir))
    assert D.resolve_data_dir() == tiny_data_dir


def test_random_windows_are_shifted_pairs():
    x, y = D.random_windows(torch.arange(500), 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and torch.equal(x[:, 1:], y[:, :-1])


@pytest.mark.skipif(not (D.DEV_DATA_DIR / "train.txt").is_file(),
                    reason=f"WikiText-2 is not at {D.DEV_DATA_DIR} on this machine")
def test_real_wikitext2_vocabulary_is_33278_words():
    corpus = D.load_corpus(D.DEV_DATA_DIR)
    assert len(corpus.tokenizer) == 33_278
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (2_088_628, 217_646, 245_569)
    assert int((corpus.valid == corpus.tokenizer.unk_id).sum()) == 11_718
