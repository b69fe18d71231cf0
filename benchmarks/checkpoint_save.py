"""Checkpoint save time: Lightning's TorchCheckpointIO vs cdseg's SafeCheckpointIO, same process.

    python benchmarks/checkpoint_save.py [--base 32] [--repeats 5] [--dir outputs/bench-ckpt]

Builds the Siamese U-Net at ``--base`` with AdamW state (as a training checkpoint holds), saves it
``--repeats`` times with each writer into ``--dir`` and prints the median time of each and their
ratio. SafeCheckpointIO adds an fsync (the file is on disk before it replaces the previous one).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from timing import median_seconds

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
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    checkpoint = training_checkpoint(args.base)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "last.ckpt"
        lightning = median_seconds(lambda: TorchCheckpointIO().save_checkpoint(checkpoint, path), args.repeats)
        safe = median_seconds(lambda: SafeCheckpointIO().save_checkpoint(checkpoint, path), args.repeats)
        size = path.stat().st_size / 2**20
    print(f"checkpoint: base {args.base}, {size:.1f} MiB, median of {args.repeats} saves")
    print(f"TorchCheckpointIO (Lightning): {lightning * 1000:.0f} ms")
    print(f"SafeCheckpointIO (atomic + fsync): {safe * 1000:.0f} ms  ({safe / lightning:.2f}x)")


if __name__ == "__main__":
    main()
