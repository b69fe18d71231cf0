import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdseg.models import SiameseUNet


class SeedConvBNReLU(nn.Module):
    # The reference tutorial's model, transcribed to count its parameters.
    def __init__(self, i, o):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(i, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class SeedUp(nn.Module):
    def __init__(self, i, s, o):
        super().__init__()
        self.up = nn.ConvTranspose2d(i, o, kernel_size=2, stride=2)
        self.conv = nn.Sequential(SeedConvBNReLU(o + s, o), SeedConvBNReLU(o, o))


class SeedNet(nn.Module):
    def __init__(self, base=32):
        super().__init__()
        c = SeedConvBNReLU
        self.enc = nn.ModuleList(
            [
                nn.Sequential(c(i, o), c(o, o))
                for i, o in [(3, base), (base, base * 2), (base * 2, base * 4), (base * 4, base * 8)]
            ]
        )
        self.fuse4 = c(base * 8 * 3, base * 8)
        self.up3 = SeedUp(base * 8, base * 4 * 3, base * 4)
        self.up2 = SeedUp(base * 4, base * 2 * 3, base * 2)
        self.up1 = SeedUp(base * 2, base * 3, base)
        self.head = nn.Conv2d(base, 1, kernel_size=1)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("base", [8, 32])
def test_parameter_count_matches_the_seed_model(base: int) -> None:
    assert n_params(SiameseUNet(base=base)) == n_params(SeedNet(base))
    if base == 32:
        assert n_params(SiameseUNet()) == 4_084_065


@pytest.mark.parametrize("size", [(64, 64), (37, 45), (61, 100), (5, 7), (1, 1)])
@pytest.mark.parametrize("fusion", ["concat_diff", "concat", "diff"])
def test_output_is_one_logit_per_input_pixel(size, fusion) -> None:
    net = SiameseUNet(base=4, fusion=fusion).eval()
    a, b = torch.randn(2, 3, *size), torch.randn(2, 3, *size)
    assert net(a, b).shape == (2, 1, *size)


def test_padding_keeps_pixels_aligned() -> None:
    # A 37x45 input and the same input reflected out to 40x48 give the same logits on the
    # original pixels, so padding adds no shift.
    torch.manual_seed(0)
    net = SiameseUNet(base=4).eval()
    a, b = torch.randn(1, 3, 37, 45), torch.randn(1, 3, 37, 45)
    padded = [F.pad(x, (0, 3, 0, 3), mode="reflect") for x in (a, b)]
    assert torch.allclose(net(a, b), net(*padded)[..., :37, :45], atol=1e-5)


def test_encoder_is_shared_and_fusion_is_checked() -> None:
    net = SiameseUNet(base=4)
    assert sum(1 for n, _ in net.named_children() if "encoder" in n) == 1
    with pytest.raises(ValueError, match="model.fusion"):
        SiameseUNet(fusion="sum")
    with pytest.raises(ValueError, match="same shape"):
        net(torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 16))


def test_swapping_dates_changes_concat_but_not_diff_input() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    diff = SiameseUNet(base=4, fusion="diff").eval()
    assert torch.allclose(diff(a, b), diff(b, a), atol=1e-6)
    cat = SiameseUNet(base=4, fusion="concat").eval()
    assert not torch.allclose(cat(a, b), cat(b, a), atol=1e-6)
