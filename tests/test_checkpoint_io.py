"""Checkpoints are written atomically and loaded without running code from them."""

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from cdseg import atomic_write
from cdseg.runs.checkpoint import CheckpointError, read_checkpoint
from cdseg.runs.checkpoint_io import SafeCheckpointIO
from tests.conftest import ROOT, compose_train, tiny_overrides
from train import train

WRITER = """
import sys, torch
from cdseg.runs.checkpoint_io import SafeCheckpointIO
for i in range(10**6):
    # 16 MB a save, so a kill lands while one is being written
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.full((4_000_000,), float(i))}}, sys.argv[1])
    print(i, flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13])
def test_a_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        proc.stdout.readline()  # the first save is complete
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    w = read_checkpoint(path)["state_dict"]["w"]
    assert torch.all(w == w[0]), "the checkpoint mixes two saves"
    SafeCheckpointIO().save_checkpoint({"state_dict": {}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "a killed save's temporary file was left"


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs."""


def test_training_saves_through_the_atomic_writer(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    overrides = (*tiny_overrides(tiny_data, tmp_path), "scheduler=none")
    train(compose_train(*overrides))
    before = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")

    real_fdopen = os.fdopen

    class DiesHalfway:
        """A file that writes half of what it is given, then the process 'dies'."""

        def __init__(self, *args, **kwargs) -> None:
            self.f = real_fdopen(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data) -> None:
            self.f.write(bytes(data)[: len(data) // 2])
            raise Killed

    monkeypatch.setattr(atomic_write.os, "fdopen", DiesHalfway)
    with pytest.raises(Killed):
        train(compose_train(*overrides, "trainer.max_epochs=2", f"ckpt_path={tmp_path}"))
    after = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert after["global_step"] == before["global_step"]
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/cdseg-pwned-by-resume"),))


def test_resuming_never_runs_code_from_the_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    marker = Path("/tmp/cdseg-pwned-by-resume")
    marker.unlink(missing_ok=True)
    train(compose_train(*tiny_overrides(tiny_data, tmp_path)))
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    torch.save({**ckpt, "payload": Exploit()}, tmp_path / "checkpoints" / "evil.ckpt")
    with pytest.raises(CheckpointError, match="evil.ckpt: refusing to load"):
        train(compose_train(*tiny_overrides(tiny_data, tmp_path), f"ckpt_path={tmp_path}/checkpoints/evil.ckpt"))
    # Lightning's own restore goes through the same reader.
    with pytest.raises(CheckpointError, match="evil.ckpt: refusing to load"):
        SafeCheckpointIO().load_checkpoint(tmp_path / "checkpoints" / "evil.ckpt")
    assert not marker.exists()


def test_a_peek_reads_the_counters_and_names_a_bad_file(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.ones(4)}, "global_step": 5}, tmp_path / "good.ckpt")
    assert read_checkpoint(tmp_path / "good.ckpt", peek=True)["global_step"] == 5
    (tmp_path / "bad.ckpt").write_bytes((tmp_path / "good.ckpt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="bad.ckpt: not a readable checkpoint"):
        read_checkpoint(tmp_path / "bad.ckpt", peek=True)


@pytest.mark.parametrize("text", ["hello", '{"a": 1}', "<html><body>Not Found</body></html>"])
def test_a_text_file_given_as_a_checkpoint_is_named_as_unreadable(tmp_path: Path, text: str) -> None:
    # Each fails inside torch's unpickler with a different error (KeyError, IndexError, UnpicklingError).
    (tmp_path / "text.ckpt").write_text(text)
    for peek in (False, True):
        with pytest.raises(CheckpointError, match="text.ckpt: not a readable checkpoint"):
            read_checkpoint(tmp_path / "text.ckpt", peek=peek)


def _flip_a_byte_of(file: Path, member_size: int) -> None:
    """Flip one byte inside the zip member of ``member_size`` bytes (a tensor's storage)."""
    with zipfile.ZipFile(file) as archive:
        member = next(m for m in archive.infolist() if m.file_size == member_size)
    data = bytearray(file.read_bytes())
    data[member.header_offset + 30 + len(member.filename) + len(member.extra) + 100] ^= 0xFF
    file.write_bytes(bytes(data))


def test_a_checkpoint_changed_after_it_was_saved_is_refused_not_loaded_with_a_wrong_weight(tmp_path: Path) -> None:
    # torch.load itself reads the flipped byte as a changed weight, without a word.
    torch.save({"state_dict": {"w": torch.arange(1000.0)}}, tmp_path / "flipped.ckpt")
    _flip_a_byte_of(tmp_path / "flipped.ckpt", 4000)
    assert not torch.equal(
        torch.load(tmp_path / "flipped.ckpt", weights_only=True)["state_dict"]["w"], torch.arange(1000.0)
    )
    with pytest.raises(CheckpointError, match=r"flipped.ckpt: damaged: \S+/data/0 does not match the checksum"):
        read_checkpoint(tmp_path / "flipped.ckpt")
    assert read_checkpoint(tmp_path / "flipped.ckpt", peek=True)  # a peek reads counters only, not every weight


def test_a_checkpoint_saved_without_checksums_still_loads(tmp_path: Path) -> None:
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"state_dict": {"w": torch.arange(1000.0)}}, tmp_path / "plain.ckpt")
    finally:
        torch.serialization.set_crc32_options(True)
    assert torch.equal(read_checkpoint(tmp_path / "plain.ckpt")["state_dict"]["w"], torch.arange(1000.0))
