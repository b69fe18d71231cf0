import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from cdseg.data.color import ColorJitter
from cdseg.data.preprocess import EvalTransform
from cdseg.data.transforms import Augment, PerDate, build_transforms
from cdseg.errors import ConfigError
from tests.conftest import ROOT


def coded_sample(h: int = 40, w: int = 56) -> dict:
    """A and B encode each pixel's (row, col); the mask is a function of them, so alignment is checkable."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    a = torch.stack([yy, xx, torch.full_like(yy, 10)]).to(torch.uint8)
    b = torch.stack([yy, xx, torch.full_like(yy, 200)]).to(torch.uint8)
    mask = ((yy + 2 * xx) % 5 == 0).to(torch.uint8)[None]
    return {"A": tv_tensors.Image(a), "B": tv_tensors.Image(b), "mask": tv_tensors.Mask(mask)}


def check_aligned(out: dict, a_code: int = 10, b_code: int = 200) -> None:
    a, b, m = (out[k].as_subclass(torch.Tensor) for k in ("A", "B", "mask"))
    scale = 255.0 if a.is_floating_point() else 1.0
    a, b = (a * scale).round().long(), (b * scale).round().long()
    assert torch.equal(a[:2], b[:2]), "A and B were transformed differently"
    assert (a[2] == a_code).all() and (b[2] == b_code).all()
    expected = ((a[0] + 2 * a[1]) % 5 == 0).to(m.dtype)
    assert torch.equal(m[0], expected), "mask moved differently from the images"


@pytest.mark.parametrize("seed", range(12))
def test_random_geometry_keeps_a_b_and_mask_aligned(seed: int) -> None:
    torch.manual_seed(seed)
    t = build_transforms(Augment(crop_size=24, hflip=0.5, vflip=0.5, rot90=True), mean=None, std=None)
    out = t(coded_sample())
    assert out["A"].shape[-2:] == (24, 24) and out["mask"].shape[-2:] == (24, 24)
    check_aligned(out)


@pytest.mark.parametrize("seed", range(8))
def test_rot90_keeps_non_square_shapes(seed: int) -> None:
    torch.manual_seed(seed)
    out = build_transforms(Augment(hflip=0, rot90=True), mean=None, std=None)(coded_sample(40, 56))
    assert out["A"].shape[-2:] == (40, 56)
    check_aligned(out)


def test_geometry_is_actually_random() -> None:
    t = build_transforms(Augment(crop_size=24, hflip=0.5, vflip=0.5, rot90=True), mean=None, std=None)
    corners = set()
    for seed in range(20):
        torch.manual_seed(seed)
        a = t(coded_sample())["A"]
        corners.add((int(a[0, 0, 0] * 255), int(a[1, 0, 0] * 255)))
    assert len(corners) > 5


def test_swap_exchanges_dates_only() -> None:
    out = build_transforms(Augment(hflip=0, swap=1.0), mean=None, std=None)(coded_sample())
    check_aligned(out, a_code=200, b_code=10)


def test_colour_jitter_is_drawn_per_date_and_leaves_geometry() -> None:
    torch.manual_seed(0)
    t = build_transforms(Augment(hflip=1.0, color_jitter={"brightness": 0.5}), mean=None, std=None)
    sample = coded_sample()
    ratios = []
    out = t(sample)
    for key in ("A", "B"):
        ratios.append(float(out[key][2].mean() * 255 / sample[key][2].float().mean()))
    assert abs(ratios[0] - ratios[1]) > 1e-3, "A and B got the same jitter"
    assert torch.equal(out["mask"], sample["mask"].flip(-1))


def test_resize_uses_nearest_for_the_mask() -> None:
    out = build_transforms(None, resize=[17, 23])(coded_sample())
    assert out["A"].shape == (3, 17, 23) and out["mask"].shape == (1, 17, 23)
    assert set(out["mask"].unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("host", [True, False])
def test_a_resized_mask_takes_the_label_under_each_pixels_centre(host: bool) -> None:
    torch.manual_seed(0)
    mask = (torch.rand(1, 36, 24) > 0.5).to(torch.uint8)
    image = tv_tensors.Image(torch.zeros(3, 36, 24, dtype=torch.uint8))
    sample = {"A": image, "B": image, "mask": tv_tensors.Mask(mask)}
    transform = build_transforms(None, resize=[12, 8]) if host else EvalTransform(resize=[12, 8])
    out = transform(sample)["mask"].as_subclass(torch.Tensor)
    # Each output pixel covers a 3 x 3 block, whose centre is its middle pixel (torchvision's legacy
    # nearest took the top-left one, 1 px up and left of the images' bilinear).
    assert torch.equal(out, mask[:, 1::3, 1::3])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"brightnes": 0.5}, "data.color_jitter=.*unexpected keyword argument 'brightnes'"),
        ({"hue": 0.9}, "data.color_jitter=.*hue values should be between"),
        ({"brightness": -1}, "data.color_jitter=.*must be non negative"),
        (0.2, "data.color_jitter must be null or a mapping"),
    ],
)
def test_a_wrong_colour_jitter_is_refused_naming_the_option(options, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Augment(color_jitter=options)


@pytest.mark.parametrize(
    ("mean", "std", "message"),
    [
        ([0.5, 0.5], [0.2, 0.2, 0.2], "data.mean must be three numbers"),
        ([0.5] * 3, [0.2, 0.0, 0.2], "data.std must be positive"),
        ([123.7, 116.3, 103.5], [58.4, 57.1, 57.4], "look like statistics of 0-255 pixels"),
    ],
)
def test_wrong_normalisation_statistics_are_refused_for_a_new_run(mean, std, message: str) -> None:
    from cdseg.data import ChangeDetectionDataModule

    with pytest.raises(ConfigError, match=message):
        ChangeDetectionDataModule(root="x", mean=mean, std=std)
    EvalTransform(mean=mean, std=std)  # a checkpoint trained so still predicts with what it was trained with


def test_image_smaller_than_crop_is_used_whole() -> None:
    out = build_transforms(Augment(crop_size=256, hflip=0), mean=None, std=None)(coded_sample(40, 56))
    assert out["A"].shape[-2:] == (40, 56)
    check_aligned(out)


def test_normalisation_applies_to_images_not_mask() -> None:
    sample = coded_sample()
    out = build_transforms(None, mean=[0.5] * 3, std=[0.25] * 3)(sample)
    assert out["A"].dtype == torch.float32
    assert torch.allclose(out["A"][2], torch.full_like(out["A"][2], (10 / 255 - 0.5) / 0.25))
    assert torch.equal(out["mask"], sample["mask"])


@pytest.mark.parametrize("resize", [None, 24, [20, 36]])
@pytest.mark.parametrize("normalise", [True, False])
def test_the_torch_only_eval_transform_equals_torchvisions_bit_for_bit(resize, normalise: bool) -> None:
    torch.manual_seed(0)
    a, b = torch.randint(0, 256, (2, 3, 30, 40), dtype=torch.uint8)
    mask = (torch.rand(1, 30, 40) > 0.7).to(torch.uint8)
    stats = {} if normalise else {"mean": None, "std": None}
    ours = EvalTransform(resize, **stats)({"A": a, "B": b, "mask": mask})
    theirs = build_transforms(None, resize, **stats)(
        {"A": tv_tensors.Image(a), "B": tv_tensors.Image(b), "mask": tv_tensors.Mask(mask)}
    )
    for key in ("A", "B", "mask"):
        assert torch.equal(ours[key], theirs[key].as_subclass(torch.Tensor)), key


def _test_images() -> list[torch.Tensor]:
    """Random noise, smooth colour ramps, a flat grey and, when ../shared is here, a real LEVIR crop."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 255, 96), torch.linspace(0, 255, 80), indexing="ij")
    images = [
        torch.randint(0, 256, (3, 64, 72), generator=g, dtype=torch.uint8),
        torch.stack([yy, xx, 255 - yy]).to(torch.uint8),
        torch.full((3, 32, 32), 128, dtype=torch.uint8),
    ]
    tile = ROOT.parent / "shared" / "data" / "levir-cd-samples" / "tiles-1024" / "test" / "A" / "test_1.png"
    if tile.is_file():
        images.append(torch.from_numpy(np.asarray(Image.open(tile).convert("RGB"))[:256, :256].copy()).permute(2, 0, 1))
    return images


@pytest.mark.parametrize("options", [{"hue": 0.5}, {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}])
def test_the_fast_colour_jitter_equals_torchvisions_within_a_few_grey_levels(options: dict) -> None:
    ours, theirs = ColorJitter(**options), v2.ColorJitter(**options)
    torch.manual_seed(0)
    differing, pixels = 0, 0
    for image in _test_images():
        for _ in range(25):
            params = theirs.make_params([image])  # the same draws feed both
            want = theirs.transform(image, params)
            got = ours.transform(tv_tensors.Image(image), params)
            assert isinstance(got, tv_tensors.Image) and got.dtype == torch.uint8 and got.shape == image.shape
            diff = (got.as_subclass(torch.Tensor).int() - want.int()).abs()
            assert diff.max() <= 3
            differing, pixels = differing + int((diff > 0).sum()), pixels + diff.numel()
    assert differing / pixels < 1e-3, differing / pixels
    floats = torch.rand(3, 16, 16)  # not uint8: torchvision's own path, exactly
    params = theirs.make_params([floats])
    assert torch.equal(ours.transform(floats, params), theirs.transform(floats, params))


def test_the_pipelines_jitter_draws_as_torchvisions() -> None:
    """Same seed, same options: the training pipeline's jitter and torchvision's draw the same factors."""
    augment = Augment(hflip=0.0, color_jitter={"brightness": 0.3, "hue": 0.05})
    (step,) = [s for s in augment.steps() if isinstance(s, PerDate)]
    torch.manual_seed(3)
    ours = [step.transform.make_params([]) for _ in range(5)]
    torch.manual_seed(3)
    theirs = [v2.ColorJitter(brightness=0.3, hue=0.05).make_params([]) for _ in range(5)]
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a["fn_idx"], b["fn_idx"]) and a["hue_factor"] == b["hue_factor"]
