"""Training-step time of the Siamese U-Net on the CPU: float32 vs bfloat16 autocast, same process.

    python benchmarks/cpu_autocast.py [--base 8] [--size 256] [--batch 4] [--repeats 3]

Prints the median forward+backward time of each and their ratio. This is the measurement behind
train.py's rule of falling back from 16-mixed to 32-true on CPUs without native bf16.
"""

from __future__ import annotations

import argparse

import torch
from timing import median_seconds

from cdseg.models import SiameseUNet
from cdseg.precision import cpu_has_native_bf16


def step_seconds(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, bf16: bool, repeats: int) -> float:
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(a, b)
        out.float().mean().backward()

    return median_seconds(step, repeats, warmup=1)  # the first step warms up and is not counted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = SiameseUNet(base=args.base)
    a, b = (torch.randn(args.batch, 3, args.size, args.size) for _ in range(2))
    fp32 = step_seconds(net, a, b, False, args.repeats)
    bf16 = step_seconds(net, a, b, True, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}")
    print(f"base {args.base}, batch {args.batch} x {args.size}^2, median of {args.repeats} forward+backward steps")
    print(f"float32 {fp32:.3f} s   bf16 autocast {bf16:.3f} s   ratio bf16/fp32 {bf16 / fp32:.1f}x")


if __name__ == "__main__":
    main()
