"""data.augment_on=device: each operation equals torchvision's, and a batch draws its parameters from
the same distributions as the host pipeline (cdseg.data.transforms.Augment)."""

from collections import Counter
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from cdseg.data.device_augment import DeviceAugment, batch_generator, color_op
from cdseg.data.transforms import Augment, build_transforms
from train import train


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation", "hue"])
def test_each_colour_operation_equals_torchvisions(op: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    factors = [0.1, -0.05, 0.02] if op == "hue" else [0.7, 1.0, 1.3]
    shape = (-1, 1, 1) if op == "hue" else (-1, 1, 1, 1)
    ours = color_op(op, x, torch.tensor(factors).view(*shape))
    for image, factor, got in zip(x, factors, ours, strict=True):
        expected = getattr(F, f"adjust_{op}")(image, factor)
        assert torch.allclose(got, expected, atol=1e-5), (op, factor)


def _outcomes(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> list[str]:
    """Which of the 8 rotations/flips of ``image`` each output A shows, and whether A and B were exchanged;
    checks that B and the mask underwent the same geometry."""
    views = {}
    for k in range(4):
        for flip in (False, True):
            v = torch.rot90(image.flip(-1) if flip else image, k, (-2, -1))
            views[f"r{k}{'f' if flip else ''}"] = v
    found = []
    for x, y, m in zip(a, b, mask, strict=True):
        swapped = bool((x[0] >= 100).all())  # B's values start at 100
        first, second = (y, x) if swapped else (x, y)
        name = next(n for n, v in views.items() if torch.equal(first[0], v))
        assert torch.equal(second[0], views[name] + 100) and torch.equal(m[0], (views[name] % 2).to(m.dtype))
        found.append(f"{name}{'s' if swapped else ''}")
    return found


def test_the_device_batch_draws_the_hosts_geometric_distribution() -> None:
    n, side = 4000, 4
    image = torch.arange(side * side, dtype=torch.uint8).view(1, side, side)  # no symmetry
    a, b, mask = image.expand(3, -1, -1), (image + 100).expand(3, -1, -1), image % 2
    augment = Augment(hflip=0.5, vflip=0.5, rot90=True, swap=0.5)
    host = build_transforms(augment, mean=None, std=None)
    torch.manual_seed(0)
    outs = [host({"A": tv_tensors.Image(a), "B": tv_tensors.Image(b), "mask": tv_tensors.Mask(mask)}) for _ in range(n)]
    host_found = _outcomes(
        torch.stack([(o["A"] * 255).round() for o in outs]),
        torch.stack([(o["B"] * 255).round() for o in outs]),
        torch.stack([o["mask"] for o in outs]),
        image[0].float(),
    )
    batch = {"A": a.expand(n, -1, -1, -1), "B": b.expand(n, -1, -1, -1), "mask": mask.expand(n, 1, -1, -1).float()}
    out = DeviceAugment(augment, None, None)(batch, batch_generator(torch.device("cpu"), 0, 0, ["x"]))
    device_found = _outcomes((out["A"] * 255).round(), (out["B"] * 255).round(), out["mask"], image[0].float())
    host_counts, device_counts = Counter(host_found), Counter(device_found)
    assert len(device_counts) == len(host_counts) == 16  # every rotation/flip, each with and without exchange
    for outcome, count in host_counts.items():
        p = count / n
        assert abs(device_counts[outcome] / n - p) < 5 * (p * (1 - p) / n) ** 0.5 * 2**0.5, outcome


@pytest.mark.parametrize("brightness", [0.3, [0.8, 1.25]])  # v2.ColorJitter takes a number or a range
def test_the_device_jitter_draws_the_hosts_factors_per_date(brightness) -> None:
    n = 3000
    x = torch.full((3, 8, 8), 100, dtype=torch.uint8)  # brightness x 0.7-1.3 never clips
    augment = Augment(hflip=0.0, color_jitter={"brightness": brightness})
    host = build_transforms(augment, mean=None, std=None)
    torch.manual_seed(0)
    host_ratios = torch.tensor(
        [float(host({"A": tv_tensors.Image(x), "B": tv_tensors.Image(x)})["A"].mean()) * 255 / 100 for _ in range(n)]
    )
    batch = {"A": x.expand(n, -1, -1, -1), "B": x.expand(n, -1, -1, -1)}
    out = DeviceAugment(augment, None, None)(batch, batch_generator(torch.device("cpu"), 0, 0, ["x"]))
    ratios = out["A"].mean((1, 2, 3)) * 255 / 100
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):  # both uniform on the same range
        assert abs(torch.quantile(ratios, q) - torch.quantile(host_ratios, q)) < 0.03, q
    assert not torch.allclose(out["A"], out["B"])  # each date its own factor


def test_training_with_device_augmentation_runs_and_repeats(make_cfg, tmp_path: Path) -> None:
    options = ("data.augment_on=device", "data.rot90=true", "data.swap=0.5", "data.color_jitter={hue:0.05}")
    first = train(make_cfg(*options, out=tmp_path / "a"))
    again = train(make_cfg(*options, out=tmp_path / "b"))
    assert first["val"] == again["val"] and 0 <= first["val"]["val/F1"] <= 1
