"""Checkpoint writes that survive SIGTERM and a full disk: a SIGTERM in the middle of a write
abandons it cleanly and the same command resumes to the weights of a run never stopped; a temp
file a killed safetensors writer left does not block the resume; a full disk (a small tmpfs, or
ENOSPC simulated on os.write) is one ``error:`` line for train, sweep and export, with the
previous checkpoint intact and no partial file left."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import localist_core.experiments.train as train_mod
from localist_core.cli import main
from localist_core.cli.errors import EXIT_TERMINATED, Terminated, sigterm_raises
from localist_core.experiments.train import LAST, TRAINER_META, TRAINER_STATE
from localist_core.model.checkpoint import WEIGHTS, check_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# Checkpoints at steps 2 and 4; one thread, so a run split over two processes sums alike.
TINY = ["--config", "tiny", "max_steps=4", "ckpt_interval=2", "eval_interval=4", "threads=1"]


def _train(out: Path, data: Path) -> list[str]:
    return ["train", "--out", str(out), "--data-dir", str(data), *TINY]


def _sweep(root: Path, data: Path) -> list[str]:
    return ["sweep", "--lambdas", "0", "--taus", "1", "--prompts", "", "--eval-tokens", "64",
            "--cache", str(root / "cache"), "--runs-dir", str(root / "runs"),
            "--data-dir", str(data), *TINY]


def _export(src: Path, dest: Path, data: Path) -> list[str]:
    return ["export", str(src), str(dest), "--precision", "fp16", "--tolerance", "1", "--force",
            "--data-dir", str(data)]


def _error_line(err: str) -> str:
    """The one line on stderr besides tqdm's progress bars; no traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, err
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    """Hidden entries anywhere under ``folder``: temp files and temp folders."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / WEIGHTS)), load_file(str(b / WEIGHTS))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _step(last: Path) -> int:
    return json.loads((last / TRAINER_META).read_text())["step"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data_dir) -> Path:
    """The same tiny run, never stopped."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(_train(out, tiny_data_dir)) == 0
    return out


# -- SIGTERM ------------------------------------------------------------------------------------

def test_sigterm_raises_terminated_inside_and_is_restored_after():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)            # the handler runs here at the latest
    assert signal.getsignal(signal.SIGTERM) == before


# The child process: the CLI with os.write slowed down on the second trainer-state write (the
# step-4 checkpoint): half its bytes are written, a marker file says so, then it waits for the
# test's SIGTERM. So the signal lands in the middle of a checkpoint write, every time.
CHILD = r"""
import os, sys, time
from pathlib import Path
marker, argv = Path(sys.argv[1]), sys.argv[2:]
real_write, seen = os.write, []

def write(fd, data):
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if ".trainer.safetensors." in name:
        seen.append(name)
        if len(seen) == 2:
            n = real_write(fd, data[: len(data) // 2])
            marker.write_text(name)
            time.sleep(300)
            return n
    return real_write(fd, data)

os.write = write
from localist_core.cli import main
sys.exit(main(argv))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc/self/fd "
                    "to see which file os.write writes")
def test_a_sigterm_in_the_middle_of_a_checkpoint_write_abandons_it_and_resumes(
        tmp_path, tiny_data_dir, reference, capsys):
    out, marker = tmp_path / "run", tmp_path / "writing"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker),
                             *_train(out, tiny_data_dir)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not marker.exists():
            proc.kill()
            pytest.fail("the run never wrote its step-4 trainer state through os.write: "
                        + proc.communicate()[1][-2000:])
        half = Path(marker.read_text())
        assert half.is_file() and half.parent == out / LAST   # half written, right now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_TERMINATED, err
    assert _error_line(err) == "terminated (SIGTERM); run the same command again to resume"
    assert _leftovers(out) == []                  # the temp file went with the abandoned write
    assert _step(out / LAST) == 2                 # the previous checkpoint, complete
    check_checkpoint(out / LAST)
    assert main(_train(out, tiny_data_dir)) == 0  # the same command resumes it
    assert _same_weights(out, reference) and _leftovers(out) == []


def test_a_killed_safetensors_writers_temp_file_does_not_block_the_resume(
        tmp_path, tiny_data_dir, reference, capsys):
    """safetensors' save_file writes through ``.tmpXXXXXX`` beside its target; a run killed
    inside it (by an earlier version of this project) left one. It is ours, so removed; a file
    of that name holding anything but the start of a safetensors file is someone else's."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    partial = (reference / LAST / TRAINER_STATE).read_bytes()[:4096]
    (out / LAST / ".tmpQfoQOE").write_bytes(partial)    # killed mid-write
    (out / ".tmpA1b2C3").write_bytes(b"")                # killed right after creating it
    assert main(_train(out, tiny_data_dir)) == 0
    assert _leftovers(out) == [] and _same_weights(out, reference)
    (out / ".tmpNotes").write_text("my notes")
    assert main(_train(out, tiny_data_dir)) == 2
    assert ".tmpNotes" in _error_line(capsys.readouterr().err)
    assert (out / ".tmpNotes").read_text() == "my notes"


# -- a full disk --------------------------------------------------------------------------------

class Disk:
    """Where a test writes, and a way to fill it: a real tmpfs of a few MiB (filled with a
    ballast file), or any folder with ENOSPC simulated on os.write to a regular file, which is
    how this project writes safetensors files (files.bytes_writer)."""

    def __init__(self, root: Path, tmpfs: bool):
        self.root, self.tmpfs, self.room = root, tmpfs, None
        self.ballast = root / "ballast"

    def free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def fill(self, room: int = 4096) -> None:
        """Leave ``room`` bytes."""
        if self.tmpfs:
            with open(self.ballast, "ab") as f:
                f.write(b"\0" * (self.free() - room))
            assert self.free() == room
        else:
            self.room = room

    def free_up(self) -> None:
        self.ballast.unlink(missing_ok=True)
        self.room = None

    def contents(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if p != self.ballast)


def _mount_tmpfs(folder: Path) -> str | None:
    """Mount an 8 MiB tmpfs at ``folder``; None, or why not."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "mounting a tmpfs needs root on Linux"
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run mount: {e}"
    return None if r.returncode == 0 else f"mount -t tmpfs refused: {r.stderr.strip()}"


@pytest.fixture(params=["tmpfs", "simulated"])
def disk(request, tmp_path, monkeypatch):
    root = tmp_path / "disk"
    root.mkdir()
    if request.param == "tmpfs":
        why = _mount_tmpfs(root)
        if why:
            pytest.skip(why)
        try:
            yield Disk(root, tmpfs=True)
        finally:
            subprocess.run(["umount", "-l", str(root)], capture_output=True, timeout=30)
        return
    d = Disk(root, tmpfs=False)
    real = os.write

    def write(fd, data):
        if d.room is None or not stat.S_ISREG(os.fstat(fd).st_mode):
            return real(fd, data)
        if d.room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, memoryview(data)[: d.room])
        d.room -= n
        return n

    monkeypatch.setattr(os, "write", write)
    yield d


def _full_after_first_checkpoint(monkeypatch, disk: Disk) -> None:
    """The disk fills up right after the step-2 checkpoint."""
    real, saved = train_mod._save_trainer, []

    def save(*a, **k):
        real(*a, **k)
        saved.append(1)
        if len(saved) == 1:
            disk.fill()

    monkeypatch.setattr(train_mod, "_save_trainer", save)


def _no_space(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and "No space left on device" in line, line
    assert "nothing was replaced" in line
    return line


def test_train_on_a_full_disk_keeps_the_previous_checkpoint(disk, tiny_data_dir, reference,
                                                            capsys, monkeypatch):
    out = disk.root / "run"
    _full_after_first_checkpoint(monkeypatch, disk)
    line = _no_space(capsys, _train(out, tiny_data_dir))
    assert f"{out / LAST / TRAINER_STATE}: No space left" in line
    assert _leftovers(disk.root) == []
    assert _step(out / LAST) == 2
    check_checkpoint(out / LAST)
    disk.free_up()
    assert main(_train(out, tiny_data_dir)) == 0
    assert _same_weights(out, reference)


def test_sweep_on_a_full_disk_is_one_line_and_resumes(disk, tiny_data_dir, capsys, monkeypatch):
    _full_after_first_checkpoint(monkeypatch, disk)
    _no_space(capsys, _sweep(disk.root, tiny_data_dir))
    assert _leftovers(disk.root) == []
    assert not (disk.root / "cache" / "attention-l0.0.json").exists()
    disk.free_up()
    assert main(_sweep(disk.root, tiny_data_dir)) == 0
    assert (disk.root / "cache" / "attention-l0.0.json").is_file()


def test_export_on_a_full_disk_leaves_the_old_checkpoint(disk, tiny_data_dir, reference, capsys):
    dest = disk.root / "small"
    shutil.copytree(reference, dest, ignore=shutil.ignore_patterns(LAST))
    before = disk.contents(), _digests(dest)
    disk.fill()
    line = _no_space(capsys, _export(reference, dest, tiny_data_dir))
    assert WEIGHTS in line
    assert (disk.contents(), _digests(dest)) == before      # no temp folder, nothing replaced
    disk.free_up()
    assert main(_export(reference, dest, tiny_data_dir)) == 0
