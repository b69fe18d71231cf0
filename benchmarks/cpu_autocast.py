"""Training-step time of the Siamese U-Net on the CPU: float32 vs bfloat16 autocast, same process.

    python benchmarks/cpu_autocast.py [--base 8] [--size 256] [--batch 4] [--repeats 3] [--rounds 3] [--nchw]

The network in channels_last, as training builds it (``--nchw``: not); the two alternated over
``--rounds`` rounds. Prints each one's medians of forward+backward time and the ratio of their
overall medians. This is the measurement behind
train.py's rule of falling back from 16-mixed to 32-true on CPUs without native bf16.
"""

from __future__ import annotations

import argparse

import torch
from timing import alternated, report

from cdseg.models import SiameseUNet
from cdseg.precision import cpu_has_native_bf16


def step(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = net(a, b)
    out.float().mean().backward()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nchw", action="store_true", help="leave the weights in NCHW (training uses channels_last)")
    args = parser.parse_args()
    torch.manual_seed(0)
    net = SiameseUNet(base=args.base)
    if not args.nchw:
        net = net.to(memory_format=torch.channels_last)
    a, b = (torch.randn(args.batch, 3, args.size, args.size) for _ in range(2))
    times = alternated(
        {"float32": lambda: step(net, a, b, False), "bf16 autocast": lambda: step(net, a, b, True)},
        args.rounds,
        args.repeats,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}")
    layout = "NCHW" if args.nchw else "channels_last"
    print(f"base {args.base}, batch {args.batch} x {args.size}^2, {layout}, {args.rounds} alternated rounds")
    report(times, ("bf16 autocast", "float32"), unit="s")


if __name__ == "__main__":
    main()
