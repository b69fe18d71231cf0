"""Checkpoint save time: Lightning's TorchCheckpointIO vs cdseg's SafeCheckpointIO, same process.

    python benchmarks/checkpoint_save.py [--base 32] [--repeats 5] [--rounds 3] [--dir outputs]

Builds the Siamese U-Net at ``--base`` with AdamW state (as a training checkpoint holds), saves it
with each writer into a temporary folder under ``--dir`` (default outputs/, where runs write: a
system temporary folder may be in memory, where an fsync costs nothing), alternating the writers
over ``--rounds`` rounds of ``--repeats`` saves, and prints each writer's medians and the ratio of
their overall medians. SafeCheckpointIO adds an fsync (the file is on disk before it replaces the
previous one).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from timing import alternated, report

from cdseg.models import SiameseUNet
from cdseg.runs.checkpoint_io import SafeCheckpointIO


def training_checkpoint(base: int) -> dict:
    net = SiameseUNet(base=base)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)).mean().backward()
    opt.step()  # fills the exp_avg / exp_avg_sq buffers
    return {"state_dict": net.state_dict(), "optimizer_states": [opt.state_dict()], "epoch": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=str(Path(__file__).resolve().parents[1] / "outputs"))
    args = parser.parse_args()
    checkpoint = training_checkpoint(args.base)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "last.ckpt"
        writers = {
            "TorchCheckpointIO (Lightning)": lambda: TorchCheckpointIO().save_checkpoint(checkpoint, path),
            "SafeCheckpointIO (atomic + fsync)": lambda: SafeCheckpointIO().save_checkpoint(checkpoint, path),
        }
        times = alternated(writers, args.rounds, args.repeats)
        size = path.stat().st_size / 2**20
    print(
        f"checkpoint: base {args.base}, {size:.1f} MiB, in {args.dir}; {args.rounds} alternated rounds of {args.repeats} saves"
    )
    report(times, ("SafeCheckpointIO (atomic + fsync)", "TorchCheckpointIO (Lightning)"))


if __name__ == "__main__":
    main()
