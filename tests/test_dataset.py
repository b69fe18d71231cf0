"""Every bad input fails before training with an error naming the file and what was expected."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from cdseg.data import ChangeDetectionDataModule, ChangeDetectionDataset, DatasetError
from cdseg.data.cache import available_bytes, cgroup_headroom, check_cache_memory
from cdseg.data.datamodule import auto_workers
from cdseg.data.dataset import find_pairs, load_image
from cdseg.errors import ConfigError
from tests.conftest import ROOT


def write(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def make_split(root: Path, names=("a.png", "b.png"), size=(24, 32), label_values=(0, 255), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for n in names:
        write(root / "A" / n, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        write(root / "B" / n, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        write(root / "label" / n, rng.choice(np.array(label_values, np.uint8), size))
    return root


@pytest.fixture
def split(tmp_path: Path) -> Path:
    return make_split(tmp_path / "train")


def test_good_split_loads(split: Path) -> None:
    ds = ChangeDetectionDataset(split)
    sample = ds[0]
    assert len(ds) == 2 and sample["name"] == "a.png"
    assert sample["A"].shape == (3, 24, 32) and sample["mask"].shape == (1, 24, 32)
    assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0}


def test_labels_in_0_1_are_binary(tmp_path: Path) -> None:
    ds = ChangeDetectionDataset(make_split(tmp_path / "s", label_values=(0, 1)))
    assert ds[0]["mask"].max() == 1.0


@pytest.mark.parametrize("folder", ["A", "B", "label"])
def test_missing_partner(split: Path, folder: str) -> None:
    (split / folder / "b.png").unlink()
    with pytest.raises(DatasetError, match=f"b.png: in .* but missing from {folder}"):
        ChangeDetectionDataset(split)


def test_extra_file_of_another_kind(split: Path) -> None:
    (split / "A" / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"A/notes.txt: unexpected file; expected extensions"):
        ChangeDetectionDataset(split)


def test_case_mismatch_is_named(split: Path) -> None:
    (split / "B" / "a.png").rename(split / "B" / "A.png")
    with pytest.raises(DatasetError, match=r"found B/A.png: names must match exactly"):
        ChangeDetectionDataset(split)


def test_pairs_are_matched_by_name_without_extension(split: Path) -> None:
    # DSIFN's layout: JPEG dates, PNG masks.
    for folder in ("A", "B"):
        for image in (split / folder).iterdir():
            Image.open(image).save(image.with_suffix(".jpg"), quality=100)
            image.unlink()
    (split / "label" / "a.png").rename(split / "label" / "a.PNG")
    ds = ChangeDetectionDataset(split)
    names = sorted(pair.name for pair in ds.pairs)
    assert names and all(n.endswith(".jpg") for n in names)
    first = next(p for p in ds.pairs if p.name == "a.jpg")
    assert (first.a.name, first.b.name, first.label.name) == ("a.jpg", "a.jpg", "a.PNG")
    assert ds[0]["mask"].shape[-2:] == ds[0]["A"].shape[-2:]
    write(split / "A" / "a.png", np.zeros((24, 32, 3), np.uint8))  # a second image named a in A/
    with pytest.raises(DatasetError, match=r"A: a.jpg, a.png: one name, 2 images"):
        ChangeDetectionDataset(split)


def test_size_mismatch(split: Path) -> None:
    write(split / "B" / "a.png", np.zeros((24, 30, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"a.png: size mismatch \(A 32x24, B 30x24, label 32x24\)"):
        ChangeDetectionDataset(split)


def test_truncated_png(split: Path) -> None:
    data = (split / "A" / "a.png").read_bytes()
    (split / "A" / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"A/a.png: unreadable image"):
        ChangeDetectionDataset(split)


def test_zero_byte_file(split: Path) -> None:
    (split / "label" / "b.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"label/b.png: unreadable image \(empty file"):
        ChangeDetectionDataset(split)


def test_text_file_named_png(split: Path) -> None:
    (split / "B" / "a.png").write_text("not an image")
    with pytest.raises(DatasetError, match=r"B/a.png: unreadable image"):
        ChangeDetectionDataset(split)


def test_non_binary_label_lists_values_and_counts(split: Path) -> None:
    label = np.zeros((24, 32), np.uint8)
    label[0, :3] = 128
    label[1, :2] = 255
    write(split / "label" / "a.png", label)
    with pytest.raises(DatasetError, match=r"label/a.png: label is not binary.*\{0: 763, 128: 3, 255: 2\}"):
        ChangeDetectionDataset(split)


def test_mixed_0_1_255_label_is_not_binary(split: Path) -> None:
    write(split / "label" / "a.png", np.array([[0, 1, 255]], np.uint8).repeat(8, 0).repeat(8, 1)[:24, :24])
    with pytest.raises(DatasetError, match="not binary"):
        ChangeDetectionDataset(split)


def test_colour_label_is_refused_but_grey_rgb_label_accepted(split: Path) -> None:
    grey = np.zeros((24, 32, 3), np.uint8)
    grey[:5] = 255
    write(split / "label" / "a.png", grey)
    assert ChangeDetectionDataset(split)[0]["mask"][0, :5].all()
    colour = grey.copy()
    colour[:5, :, 1] = 0
    write(split / "label" / "a.png", colour)
    with pytest.raises(DatasetError, match="colour label"):
        ChangeDetectionDataset(split)


def test_sixteen_bit_image_is_refused(split: Path) -> None:
    write(split / "A" / "a.png", np.full((24, 32), 1000, np.uint16))
    with pytest.raises(DatasetError, match=r"A/a.png: unsupported image mode 'I;16'"):
        ChangeDetectionDataset(split)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_rgb_is_refused_not_cut_to_its_high_byte(tmp_path: Path, suffix: str) -> None:
    import cv2

    split = make_split(tmp_path / "train", names=(f"a{suffix}",))
    cv2.imwrite(str(split / "B" / f"a{suffix}"), np.full((24, 32, 3), 3000, np.uint16))  # Pillow opens it as RGB
    with pytest.raises(DatasetError, match=rf"B/a\{suffix}: 16-bit RGB image, which would be read as its high byte"):
        ChangeDetectionDataset(split)


def test_a_bmp_of_16_bits_a_pixel_is_8_bits_a_band_and_read(tmp_path: Path) -> None:
    import struct

    # 5-6-5 RGB in 16 bits a pixel, which Pillow expands to full bytes: not a 16-bit-a-band image.
    pixels = struct.pack("<H", (31 << 11) | (20 << 5) | 10) * 16
    header = struct.pack("<2sIHHI", b"BM", 66 + len(pixels), 0, 0, 66)
    info = struct.pack("<IiiHHIIiiII", 40, 4, 4, 1, 16, 3, len(pixels), 2835, 2835, 0, 0)
    path = tmp_path / "rgb565.bmp"
    path.write_bytes(header + info + struct.pack("<III", 0xF800, 0x07E0, 0x001F) + pixels)
    assert load_image(path)[0, 0].tolist() == [255, 80, 82]


def test_a_float_label_with_fractions_is_refused_whole_values_accepted(tmp_path: Path) -> None:
    split = make_split(tmp_path / "train", names=("a.tif",))
    label = np.zeros((24, 32), np.float32)
    label[:4] = 1.0
    write(split / "label" / "a.tif", label, mode="F")
    assert ChangeDetectionDataset(split)[0]["mask"].sum() == 4 * 32
    label[5, 5] = 0.3  # int() would make it 0 and pass
    write(split / "label" / "a.tif", label, mode="F")
    with pytest.raises(DatasetError, match=r"label/a.tif: label is not binary; .* \{0.0: 639, 0.3: 1, 1.0: 128\}"):
        ChangeDetectionDataset(split)


def test_a_label_with_alpha_reads_its_transparent_pixels_as_unchanged(split: Path) -> None:
    label = np.zeros((24, 32, 2), np.uint8)
    label[..., 1] = 255
    label[:3, :, 0] = 255
    write(split / "label" / "a.png", label, mode="LA")
    assert ChangeDetectionDataset(split)[0]["mask"].sum() == 3 * 32
    label[0, :, 1] = 0  # white but transparent: a GIS export's background
    write(split / "label" / "a.png", label, mode="LA")
    assert ChangeDetectionDataset(split)[0]["mask"].sum() == 2 * 32


def test_an_image_with_a_transparent_colour_is_refused_when_it_uses_it(split: Path) -> None:
    image = np.full((24, 32, 3), 7, np.uint8)
    Image.fromarray(image).save(split / "A" / "a.png", transparency=(1, 2, 3))  # a colour no pixel has
    ChangeDetectionDataset(split)
    Image.fromarray(image).save(split / "A" / "a.png", transparency=(7, 7, 7))  # every pixel's colour
    with pytest.raises(DatasetError, match=r"A/a.png: RGB \(with a transparent colour\) image with transparent"):
        ChangeDetectionDataset(split)


@pytest.mark.parametrize("extensions", [["png"], ".png"])
def test_extensions_without_their_dot_are_refused_naming_the_option(extensions) -> None:
    with pytest.raises(ConfigError, match="data.extensions must be a list of suffixes with their dot"):
        ChangeDetectionDataModule(root="x", extensions=extensions)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"dirs": "im1"},
            r"data.dirs must map a, b, label to folder names, such as data.dirs=\{a: A, b: B, label: label\}",
        ),
        ({"dirs": {"a": "A", "mask": "m"}}, "data.dirs must map a, b, label to folder names"),
        ({"splits": "valid"}, "data.splits must map train, val, test to folder names"),
        ({"seed": "abc"}, "data.seed must be an integer from 0 to 4294967295, got 'abc'"),
        ({"seed": 2**40}, "data.seed must be an integer from 0 to 4294967295"),
        ({"pin_memory": "yes"}, "data.pin_memory must be true or false, got 'yes'"),
        ({"persistent_workers": 3}, "data.persistent_workers must be true or false, got 3"),
    ],
)
def test_wrongly_typed_loading_options_are_refused_naming_the_option(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ChangeDetectionDataModule(root="x", **options)


def test_a_folder_named_by_a_number_is_a_folder_name(tmp_path: Path) -> None:
    for date in ("2019", "2020", "label"):  # data.dirs={a: 2019, b: 2020}: YAML reads the names as numbers
        shutil.copytree(
            make_split(tmp_path / "made") / {"2019": "A", "2020": "B"}.get(date, date), tmp_path / "train" / date
        )
    dm = ChangeDetectionDataModule(root=str(tmp_path), dirs={"a": 2019, "b": 2020}, batch_size=1)
    assert dm.dirs == {"a": "2019", "b": "2020"}
    assert len(dm._dataset("train")) == 2


@pytest.mark.parametrize("cache", [None, "ram"])
def test_bad_files_of_every_split_are_named_at_once(tiny_data: Path, tmp_path: Path, cache: str | None) -> None:
    root = tmp_path / "d"
    shutil.copytree(tiny_data, root)
    bad = [sorted((root / split / "A").iterdir())[0] for split in ("train", "val", "test")]
    for path in bad:
        path.write_bytes(path.read_bytes()[:60])  # truncated
    sorted((root / "val" / "B").iterdir())[1].unlink()  # and a missing partner
    with pytest.raises(DatasetError) as error:
        ChangeDetectionDataModule(root=str(root), cache=cache).setup("fit")
    for path in bad:
        assert f"{path}: unreadable image" in str(error.value)
    assert "in A/label but missing from B" in str(error.value)


def test_an_evaluation_split_smaller_than_the_world_is_refused(tiny_data: Path) -> None:
    from types import SimpleNamespace

    dm = ChangeDetectionDataModule(root=str(tiny_data))
    dm.trainer = SimpleNamespace(global_rank=0, world_size=16, num_devices=16)  # 8 val pairs over 16 processes
    with pytest.raises(DatasetError, match=r"val: 8 pair\(s\) to evaluate over 16 processes"):
        dm.setup("fit")  # before any training: the test split, evaluated last, is checked now too
    dm.trainer = SimpleNamespace(global_rank=0, world_size=8, num_devices=8)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(global_rank=0, world_size=9, num_devices=9)
    with pytest.raises(DatasetError, match=r"test: 8 pair\(s\) to evaluate over 9 processes"):
        dm.setup("test")


def test_grayscale_image_becomes_three_bands(split: Path) -> None:
    write(split / "A" / "a.png", np.full((24, 32), 7, np.uint8))
    assert ChangeDetectionDataset(split)[0]["A"].shape == (3, 24, 32)


def test_empty_split_and_missing_folder(tmp_path: Path) -> None:
    for d in ("A", "B", "label"):
        (tmp_path / "val" / d).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"val: empty split"):
        ChangeDetectionDataset(tmp_path / "val")
    shutil.rmtree(tmp_path / "val" / "B")
    with pytest.raises(DatasetError, match=r"val/B: folder not found"):
        ChangeDetectionDataset(tmp_path / "val")


def test_all_problems_are_listed_at_once(tmp_path: Path) -> None:
    split = make_split(tmp_path / "train", names=("a.png", "b.png", "c.png"))
    (split / "A" / "a.png").unlink()
    (split / "B" / "b.png").unlink()
    (split / "A" / "notes.txt").write_text("x")
    (split / "label" / "c.png").write_bytes((split / "label" / "c.png").read_bytes()[:60])  # truncated
    with pytest.raises(DatasetError, match=r"4 problem\(s\)") as err:
        ChangeDetectionDataset(split)
    for named in ("a.png: in B/label but missing from A", "b.png", "notes.txt", "label/c.png: unreadable image"):
        assert named in str(err.value)


def test_folder_names_and_extensions_are_configurable(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for n in ("x.tif", "y.tif"):
        write(tmp_path / "test" / "im1" / n, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        write(tmp_path / "test" / "im2" / n, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        write(tmp_path / "test" / "OUT" / n, rng.choice(np.array([0, 255], np.uint8), (16, 16)))
    ds = ChangeDetectionDataset(tmp_path / "test", dirs={"a": "im1", "b": "im2", "label": "OUT"}, extensions=[".tif"])
    assert len(ds) == 2 and ds[1]["name"] == "y.tif"


def test_mixed_sizes_that_cannot_share_a_batch_fail_at_setup(tmp_path: Path) -> None:
    make_split(tmp_path / "train", names=("a.png",), size=(24, 32))
    make_split(tmp_path / "train", names=("b.png",), size=(40, 40))
    make_split(tmp_path / "val", names=("a.png",), size=(24, 32), seed=1)  # not copies of train's pairs
    make_split(tmp_path / "val", names=("b.png",), size=(40, 40), seed=1)
    with pytest.raises(DatasetError, match=r"train: images of different sizes.*32x24 \(a.png\), 40x40 \(b.png\)"):
        ChangeDetectionDataModule(str(tmp_path), batch_size=2).setup("fit")
    # A crop no larger than the smallest side makes training batchable; evaluation still is not.
    with pytest.raises(DatasetError, match=r"val: images of different sizes.*data.eval_batch_size=1"):
        ChangeDetectionDataModule(str(tmp_path), batch_size=2, crop_size=16).setup("fit")
    dm = ChangeDetectionDataModule(str(tmp_path), batch_size=2, crop_size=16, eval_batch_size=1)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["A"].shape == (2, 3, 16, 16)


def test_datamodule_names_a_missing_root(tmp_path: Path) -> None:
    dm = ChangeDetectionDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="nowhere: dataset root not found"):
        dm.setup("fit")


def test_palette_label_is_read_by_index(split: Path) -> None:
    label = Image.fromarray((np.arange(24 * 32).reshape(24, 32) % 2).astype(np.uint8), mode="P")
    label.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)  # index 1 shown red
    label.save(split / "label" / "a.png")
    mask = ChangeDetectionDataset(split)[0]["mask"]
    assert mask.sum() == 24 * 32 // 2


def test_auto_loader_workers_follow_the_machine(tiny_data: Path) -> None:
    assert [auto_workers(n) for n in (1, 2, 3, 4, 16, 64)] == [0, 0, 2, 3, 8, 8]
    dm = ChangeDetectionDataModule(root=str(tiny_data), num_workers="auto")
    assert dm.loader_args["num_workers"] == auto_workers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        assert compose("train", overrides=["data=levir", "data.root=x"]).data.num_workers == "auto"


def _copy_pair(root: Path, src: tuple[str, str], dst: tuple[str, str], exchange: bool = False) -> None:
    """Copy split/name src to split/name dst (A and B exchanged if asked), label included."""
    (s_split, s_name), (d_split, d_name) = src, dst
    parts = {"A": "B", "B": "A", "label": "label"} if exchange else {"A": "A", "B": "B", "label": "label"}
    for part, from_part in parts.items():
        shutil.copy(root / s_split / from_part / s_name, root / d_split / part / d_name)


def test_a_pair_shared_by_train_and_test_is_refused_naming_the_files(tiny_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    _copy_pair(root, ("train", "train_0003.png"), ("test", "copied.png"), exchange=True)  # dates exchanged: same pair
    dm = ChangeDetectionDataModule(root=str(root))
    with pytest.raises(DatasetError, match=r"in train and test \(train: train_0003.png .*test: copied.png"):
        dm.setup("fit")


def test_a_pair_repeated_within_a_split_is_a_warning(tiny_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    _copy_pair(root, ("train", "train_0003.png"), ("train", "again.png"))
    dm = ChangeDetectionDataModule(root=str(root))
    with pytest.warns(UserWarning, match=r"2 times in train \(train: again.png"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == len(list((tiny_data / "train" / "A").iterdir())) + 1


def _batches(dm: ChangeDetectionDataModule, split: str) -> list[dict]:
    dm.setup("fit")
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_ram_cache_serves_exactly_what_decoding_serves(tiny_data: Path, workers: int) -> None:
    # Every random transform, including per-date jitter, must see the same pixels from the cache.
    options = {"crop_size": 32, "vflip": 0.5, "rot90": True, "swap": 0.5, "color_jitter": {"brightness": 0.3}}
    plain = ChangeDetectionDataModule(root=str(tiny_data), batch_size=8, **options)
    cached = ChangeDetectionDataModule(root=str(tiny_data), batch_size=8, num_workers=workers, cache="ram", **options)
    for split in ("train", "val"):
        for x, y in zip(_batches(plain, split), _batches(cached, split), strict=True):
            assert x["name"] == y["name"]
            for key in ("A", "B", "mask"):
                assert torch.equal(x[key], y[key]), (split, key)
    # The transforms never wrote into the cache: it still holds the files' pixels.
    dataset = cached.datasets["train"]
    for pair, decoded in zip(dataset.pairs, dataset.cache, strict=True):
        assert np.array_equal(decoded.a.permute(1, 2, 0).numpy(), np.array(Image.open(pair.a).convert("RGB")))
        assert np.array_equal(decoded.mask[0].numpy(), (np.array(Image.open(pair.label)) > 0).astype(np.uint8))


def _files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_memory_left_counts_every_cgroup_limit_above_the_process(tmp_path: Path) -> None:
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    _files(
        proc, {"meminfo": "MemTotal: 100000 kB\nMemAvailable: 90000 kB\n", "self/cgroup": "0::/slurm/job_7/step_0\n"}
    )
    job = "slurm/job_7/"  # a SLURM job's limit, two levels above the process's own group; none at the root
    _files(cgroups, {job + "memory.max": "50000000", job + "memory.current": "30000000"})
    _files(cgroups, {job + "memory.stat": "anon 1\ninactive_file 4000000\n", "memory.max": "max"})
    assert cgroup_headroom(proc, cgroups) == [24_000_000]
    assert available_bytes(proc, cgroups) == 24_000_000  # not the machine's 92 MB
    # cgroup v1, in a container that sees only its own group as the root; "no limit" is a huge number.
    _files(proc, {"self/cgroup": "5:cpu:/docker/x\n4:memory:/docker/x\n"})
    v1 = {
        "memory.limit_in_bytes": "8000000",
        "memory.usage_in_bytes": "1000000",
        "memory.stat": "total_inactive_file 0",
    }
    _files(cgroups / "memory", v1)
    assert cgroup_headroom(proc, cgroups) == [7_000_000]
    _files(cgroups / "memory", {"memory.limit_in_bytes": str(2**63 - 4096)})
    assert cgroup_headroom(proc, cgroups) == [] and available_bytes(proc, cgroups) == 90000 * 1024


def test_a_ram_cache_that_does_not_fit_is_refused_before_decoding(tiny_data: Path, monkeypatch) -> None:
    pairs = {split: find_pairs(tiny_data / split) for split in ("train", "val")}
    need = 48 * 48 * 7 * (len(pairs["train"]) + len(pairs["val"]))
    line = check_cache_memory(pairs, available=10**9)
    assert f"the decoded splits take {need / 1e9:.2f} GB (train 24 pairs" in line and "1.00 GB available" in line
    with pytest.raises(DatasetError, match=r"x 4 processes\), more than 80% of the 0.00 GB"):
        check_cache_memory(pairs, copies=4, available=need)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the memory check")

    monkeypatch.setattr("cdseg.data.cache.available_bytes", lambda: 1000)
    monkeypatch.setattr("cdseg.data.dataset.load_image", no_decoding)
    with pytest.raises(DatasetError, match="data.cache=ram: the decoded splits take .* use data.cache=null"):
        ChangeDetectionDataModule(root=str(tiny_data), cache="ram").setup("fit")
    with pytest.raises(ConfigError, match="data.cache must be null or ram, got 'disk'"):
        ChangeDetectionDataModule(root=str(tiny_data), cache="disk")
    with pytest.raises(ConfigError, match="data.augment_on must be host or device, got 'gpu'"):
        ChangeDetectionDataModule(root=str(tiny_data), augment_on="gpu")


def test_a_root_that_is_one_split_and_folders_named_otherwise_get_a_hint(split: Path, tmp_path: Path) -> None:
    # data.root pointing at a split (root/A, root/B) instead of the folder that holds the splits
    with pytest.raises(DatasetError, match=r"train split not found; .*train holds A/ and B/ itself: data.root is"):
        ChangeDetectionDataModule(root=str(split)).setup("fit")
    # the dates' folders named as another dataset names them
    for old, new in (("A", "t1"), ("B", "t2")):
        (split / old).rename(split / new)
    with pytest.raises(
        DatasetError, match=r"train/A: folder not found; .*\(found: label, t1, t2; other names are set with data.dirs"
    ):
        ChangeDetectionDataset(split)


def test_a_root_under_the_home_folder_may_be_written_with_a_tilde() -> None:
    assert ChangeDetectionDataModule(root="~/LEVIR-CD").root == Path.home() / "LEVIR-CD"
