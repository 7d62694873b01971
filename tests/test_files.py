"""Reading and writing files safely: sizes checked before reading, JSON depth bounded, a
safetensors header checked against its file, pickles refused unread, writes atomic."""
import errno
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

from localist_core.model.files import (
    MAX_JSON_DEPTH,
    MAX_PROMPTS_BYTES,
    UnsafeFileError,
    atomic_write,
    check_safetensors_file,
    checked_size,
    is_library_temp,
    json_depth,
    parse_json,
    read_json_file,
    read_prompts,
    remove_own_temps,
    safetensors_writer,
    short_repr,
)
from localist_core.paths import PROMPTS_FILE


class _Refused(ValueError):
    """A caller's own error class."""


def test_short_repr_cuts_a_long_value():
    assert len(short_repr("x" * 10**6)) < 100
    assert short_repr([1, 2]) == "[1, 2]"


@pytest.mark.parametrize("text, depth", [("1", 0), ("[]", 1), ('{"a": [[1], {}]}', 3),
                                         ('["[[[[", "]]"]', 1), (r'["\"[[["]', 1)])
def test_json_depth_counts_brackets_outside_strings(text, depth):
    assert json_depth(text.encode()) == depth


def test_parse_json_refuses_deep_nesting_and_bad_json_with_the_callers_error(tmp_path):
    where = tmp_path / "x.json"
    deep = ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)).encode()
    assert parse_json(deep[1:-1], where) is not None            # exactly at the limit
    with pytest.raises(_Refused, match=rf"x\.json: JSON nested {MAX_JSON_DEPTH + 1} levels"):
        parse_json(deep, where, _Refused)
    with pytest.raises(_Refused, match="x.json: JSON nested too deeply"):
        parse_json(b"[" * 100_000 + b"]" * 100_000, where, _Refused)
    with pytest.raises(UnsafeFileError, match="x.json: corrupt"):
        parse_json(b"{not json", where, invalid="corrupt")


def test_checked_size_refuses_missing_oversized_and_special_files_unread(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"12345")
    assert checked_size(path, 5) == 5
    with pytest.raises(_Refused, match="a.json: 5 bytes, over the 4-byte limit"):
        checked_size(path, 4, _Refused)
    with pytest.raises(UnsafeFileError, match="b.json: missing"):
        checked_size(tmp_path / "b.json", 5)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)     # opening it would block forever
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        read_json_file(fifo, 100)


def test_read_json_file_reads_a_small_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"a": [1, 2]}))
    assert read_json_file(path, 100) == {"a": [1, 2]}
    with pytest.raises(_Refused, match="over the 5-byte limit"):
        read_json_file(path, 5, _Refused)


def test_the_safetensors_check_refuses_what_checked_size_refuses_in_its_words(tmp_path):
    """A missing file and a FIFO (which would block a read forever) are refused unread, with
    the message every other file check gives."""
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    for path in (tmp_path / "gone.safetensors", fifo):
        with pytest.raises(_Refused) as by_size:
            checked_size(path, 10**9, _Refused)
        with pytest.raises(_Refused) as by_header:
            check_safetensors_file(path, _Refused)
        assert str(by_header.value) == str(by_size.value)


def test_read_prompts_reads_the_shipped_sample_texts():
    prompts = read_prompts(PROMPTS_FILE)
    assert prompts == json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))["prompts"]
    assert all(isinstance(p["name"], str) and isinstance(p["text"], str) for p in prompts)


@pytest.mark.parametrize("data, message", [
    ([], 'expected a JSON object with a "prompts" list'),
    ({"texts": []}, 'expected a JSON object with a "prompts" list'),
    ({"prompts": "castle"}, '"prompts" must be a list'),
    ({"prompts": [{"name": "castle"}]}, '"prompts" must be a list'),
    ({"prompts": [{"name": 1, "text": "x"}]}, '"prompts" must be a list'),
    ({"prompts": [["castle", "x"]]}, '"prompts" must be a list'),
])
def test_read_prompts_refuses_a_bad_entry_naming_the_file(tmp_path, data, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(_Refused, match="p.json: " + re.escape(message)):
        read_prompts(path, _Refused)


def test_read_prompts_is_bounded_by_size_before_content(tmp_path):
    """An oversized file is refused by its size, even when its content is fine."""
    path = tmp_path / "p.json"
    entry = {"name": "n", "text": "x" * 100}
    n = MAX_PROMPTS_BYTES // len(json.dumps(entry)) + 1
    path.write_text(json.dumps({"prompts": [entry] * n}))
    assert path.stat().st_size > MAX_PROMPTS_BYTES
    with pytest.raises(UnsafeFileError, match=f"over the {MAX_PROMPTS_BYTES:,}-byte limit"):
        read_prompts(path)
    path.write_text(json.dumps({"prompts": [entry] * (n // 2)}))
    assert len(read_prompts(path)) == n // 2


def test_a_header_length_that_looks_like_pickle_magic_is_still_read(tmp_path):
    """Pickle files start with 0x80; so does a safetensors file whose header length ends in
    0x80. Only the first is refused."""
    path = tmp_path / "w.safetensors"
    for k in range(400):
        save_file({"x": torch.zeros(3)}, str(path), metadata={"pad": "p" * k})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert "x" in check_safetensors_file(path)


def test_pickles_are_refused_unread_by_suffix_and_by_magic(tmp_path):
    by_suffix = tmp_path / "w.pt"
    by_suffix.write_bytes(b"anything")
    with pytest.raises(_Refused, match=r"w\.pt: \.pt files are pickle-based"):
        check_safetensors_file(by_suffix, _Refused)
    by_magic = tmp_path / "w.safetensors"
    by_magic.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(UnsafeFileError, match="this is a pickle"):
        check_safetensors_file(by_magic)


def test_a_truncated_or_inconsistent_safetensors_file_is_named(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(3)}, str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:-1])
    with pytest.raises(_Refused, match=r"w\.safetensors: truncated or padded"):
        check_safetensors_file(path, _Refused)
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    header["x"]["shape"] = [4]
    body = json.dumps(header).encode()
    path.write_bytes(len(body).to_bytes(8, "little") + body + b"\0" * 12)
    with pytest.raises(UnsafeFileError, match="shape \\[4\\] need 16 bytes, its offsets span 12"):
        check_safetensors_file(path)


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text('{"old": true}')

    def failing(path):
        Path(path).write_text('{"half": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert json.loads(target.read_text()) == {"old": True}
    assert list(tmp_path.iterdir()) == [target]
    atomic_write(target, lambda p: Path(p).write_text('{"new": true}'))
    assert json.loads(target.read_text()) == {"new": True}
    assert list(tmp_path.iterdir()) == [target]


def test_remove_own_temps_removes_only_a_killed_writers_temp_files(tmp_path):
    ours = [".r.json.x1y2_k9q.tmp", ".model.safetensors.abcdefgh.tmp"]
    theirs = [".r.json.tmp", ".notes.txt.abcdefgh.tmp", ".r.json.toolongname.tmp", "r.json"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    remove_own_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_safetensors_are_written_through_our_temp_file_only(tmp_path, monkeypatch):
    """The same bytes save_file would write, without save_file: it writes through a temp file
    of its own (``.tmpXXXXXX``) that a kill leaves behind and the folder checks would refuse."""
    tensors = {"b": torch.randn(3, 4), "a": torch.arange(5), "m": torch.tensor([True, False])}
    save_file(tensors, str(tmp_path / "want.safetensors"), metadata={"k": "v"})

    def refuse(*_a, **_k):
        raise AssertionError("safetensors' own file writer was called")

    monkeypatch.setattr(safetensors.torch, "serialize_file", refuse)
    target = tmp_path / "x.safetensors"
    atomic_write(target, safetensors_writer(tensors, metadata={"k": "v"}))
    assert target.read_bytes() == (tmp_path / "want.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["want.safetensors", "x.safetensors"]


def test_a_full_disk_keeps_the_old_file_and_names_the_new_one(tmp_path, monkeypatch):
    target = tmp_path / "w.safetensors"
    atomic_write(target, safetensors_writer({"x": torch.zeros(3)}))
    old = target.read_bytes()
    real = os.write

    def full(fd, data):   # room for 100 bytes, then ENOSPC
        if len(data) <= 100:
            return real(fd, data)
        real(fd, memoryview(data)[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as e:
        atomic_write(target, safetensors_writer({"x": torch.ones(1000)}))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert target.read_bytes() == old and list(tmp_path.iterdir()) == [target]


def test_a_killed_safetensors_writers_temp_file_is_recognised_and_only_it(tmp_path):
    save_file({"x": torch.zeros(8)}, str(tmp_path / "w.safetensors"))
    header = (tmp_path / "w.safetensors").read_bytes()[:20]   # a write cut short
    ours = {".tmpQfoQOE": header, ".tmpA1b2C3": b"", ".tmp000001": b"\x10\x00"}
    theirs = {".tmpNotes1": b"my notes, not a tensor", ".tmpQfoQOEx": header, ".tmp_a1b2c": b""}
    for name, data in {**ours, **theirs}.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / ".tmpLinked").symlink_to(tmp_path / ".tmpQfoQOE")
    os.mkfifo(tmp_path / ".tmpFifo01")             # never opened for a blocking read
    assert {p.name for p in tmp_path.iterdir() if is_library_temp(p)} == set(ours)
    remove_own_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*theirs, ".tmpLinked", ".tmpFifo01", "w.safetensors"])
