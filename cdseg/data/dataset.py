"""Bi-temporal change-detection dataset in the LEVIR-CD layout, validated before use.

Layout: ``ROOT/<split>/<a_dir>/<name>``, ``ROOT/<split>/<b_dir>/<name>``, ``ROOT/<split>/<label_dir>/<name>``,
paired by exact file name. Every file of a split is read once by :func:`validate_split` so that
a bad file fails before training starts, with an error naming it, rather than in a worker hours in.

Pixel rules:
    * images: 8-bit RGB, grayscale (replicated to three bands), palette, or RGBA whose alpha is
      fully opaque. Other modes (16-bit, float, CMYK, translucent RGBA) are errors.
    * labels: one band (or RGB with equal bands; a palette image by its indices), values in
      {0, 255} or in {0, 1}; anything else is an error listing the values found. Non-zero = change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from cdseg.errors import CdsegError

# Remote-sensing scenes are routinely larger than PIL's decompression-bomb limit (~89 Mpx).
Image.MAX_IMAGE_PIXELS = None

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DEFAULT_DIRS = {"a": "A", "b": "B", "label": "label"}  # folder of each date and of the label in a split
DEFAULT_SPLITS = {"train": "train", "val": "val", "test": "test"}
_MAX_LISTED = 10  # problems listed in one error message


class DatasetError(CdsegError, ValueError):
    """A dataset folder or file that cannot be used as given."""


@dataclass(frozen=True)
class Pair:
    name: str
    a: Path
    b: Path
    label: Path | None


def _problem_list(header: str, problems: Sequence[str]) -> str:
    shown = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{header}\n  {shown}{more}"


def _stored_bits(img: Image.Image) -> int:
    """Bits per sample as the file stores them, where Pillow decodes into an 8-bit mode: a 16-bit
    RGB(A) PNG or TIFF opens as "RGB" and keeps only the high byte of each sample. Read from the
    file's tile descriptor (PNG's raw mode, e.g. "RGB;16B") or TIFF's BitsPerSample, before decoding."""
    if img.mode not in ("RGB", "RGBA", "LA", "L", "P"):
        return 8  # I;16, I and F keep their values: refused as images, read exactly as labels
    raw = img.tile[0][3] if img.tile else ""
    bands, _, depth = str(raw[0] if isinstance(raw, tuple) else raw).partition(";")
    bits = getattr(img, "tag_v2", {}).get(258, 8)
    bits = max(bits) if isinstance(bits, tuple) else bits
    # "RGB;16B" is 16 bits a band; a BMP's "BGR;16" is 16 bits a pixel (5-6-5), expanded to full bytes.
    return 16 if bands in ("RGB", "RGBA", "RGBX", "LA", "L") and depth.startswith("16") else int(bits)


def _read(path: Path) -> Image.Image:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        img = Image.open(path)
        bits = _stored_bits(img)
        img.load()  # decode fully: truncated files fail here, not in a worker later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        size = path.stat().st_size if path.exists() else 0
        why = "empty file (0 bytes)" if size == 0 else f"{type(e).__name__}: {e}"
        raise DatasetError(f"{path}: unreadable image ({why})") from None
    if bits > 8:
        raise DatasetError(
            f"{path}: {bits}-bit {img.mode} image, which would be read as its high byte alone; expected 8 bits "
            "per band (convert it to 8 bits with an explicit scaling first)"
        )
    return img


def _opaque(path: Path, mode: str, alpha: np.ndarray, what: str) -> None:
    if alpha.min() < 255:
        raise DatasetError(
            f"{path}: {mode} {what} with transparent pixels (alpha min {alpha.min()}); expected an opaque "
            f"{what}, so masked areas are not silently read as data"
        )


def load_image(path: Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, following the pixel rules above."""
    img = _read(path)
    mode = img.mode
    if mode in ("RGB", "L", "P") and "transparency" in img.info:  # a transparent colour (PNG's tRNS)
        img, mode = img.convert("LA" if mode == "L" else "RGBA"), f"{mode} (with a transparent colour)"
    if img.mode in ("RGB", "L", "P"):
        return np.array(img.convert("RGB"))
    if img.mode in ("RGBA", "LA"):
        _opaque(path, mode, np.asarray(img.getchannel("A")), "image")
        return np.array(img.convert("RGB"))
    raise DatasetError(
        f"{path}: unsupported image mode {img.mode!r}; expected 8-bit RGB, grayscale or palette "
        "(convert 16-bit or float rasters to 8 bits with an explicit scaling first)"
    )


def _label_array(path: Path) -> np.ndarray:
    img = _read(path)
    arr = np.asarray(img)  # a palette label is read by index, whatever colours its palette shows
    if img.mode in ("LA", "PA", "RGBA"):  # GIS exports draw labels on a transparent background
        arr = np.where(arr[..., -1:] == 0, 0, arr[..., :-1])  # a transparent pixel is unchanged
    if arr.ndim == 3:
        if not (arr == arr[..., :1]).all():
            raise DatasetError(f"{path}: colour label (its RGB bands differ); expected a single-band mask")
        arr = arr[..., 0]
    return arr


def _values(arr: np.ndarray) -> tuple[int | float, ...]:
    """A label's distinct values, as found: a float label's 0.3 stays 0.3 (and is refused), not 0."""
    return tuple(v.item() for v in np.unique(arr))


def _check_label_values(path: Path, arr: np.ndarray, values: Sequence[int | float]) -> None:
    if not (set(values) <= {0, 255} or set(values) <= {0, 1}):
        counts = {round(v, 6): int(np.count_nonzero(arr == v)) for v in values[:20]}
        raise DatasetError(
            f"{path}: label is not binary; expected values in {{0, 255}} or {{0, 1}}, "
            f"found values (pixel counts) {counts}"
        )


def load_label(path: Path, check: bool = True) -> np.ndarray:
    """Read a label as (H, W) bool, True = change, following the pixel rules above.

    ``check=False`` skips the value check (a pass over every pixel) for labels already validated.
    """
    arr = _label_array(path)
    if check:
        _check_label_values(path, arr, _values(arr))
    return arr > 0


def extensions_problem(extensions: object, key: str = "data.extensions") -> str | None:
    """What is wrong with a list of file suffixes (None when nothing): each a string with its dot."""
    if isinstance(extensions, str) or not all(isinstance(e, str) and e.startswith(".") for e in extensions or [None]):
        return f"{key} must be a list of suffixes with their dot, such as [.png, .tif], got {extensions!r}"
    return None


def folder_names(key: str, value: object, defaults: dict[str, str]) -> tuple[dict[str, str] | None, str | None]:
    """``data.dirs`` or ``data.splits`` checked and normalised: (the mapping with string values, or None
    when null; what is wrong, or None). Keys must be among ``defaults``'; a number is a folder name
    (``data.dirs={a: 2019, b: 2020}``)."""
    if value is None:
        return None, None
    valid = isinstance(value, Mapping) and all(
        k in defaults and isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) for k, v in value.items()
    )
    if not valid:
        example = "{" + ", ".join(f"{k}: {v}" for k, v in defaults.items()) + "}"
        return None, f"{key} must map {', '.join(defaults)} to folder names, such as {key}={example}, got {value!r}"
    names = {k: str(v) for k, v in value.items()}
    if defaults is DEFAULT_DIRS:  # the folders of one pair: two roles reading one folder would compare A with A
        merged = {**defaults, **names}
        shared = [
            f"{' and '.join(r for r in merged if merged[r] == f)} read {f!r}"
            for f in sorted(set(merged.values()))
            if sum(v == f for v in merged.values()) > 1
        ]
        if shared:
            return None, f"{key} must name a different folder for each of {', '.join(merged)}: {'; '.join(shared)}"
    return names, None


def split_as_root(root: Path, dirs: dict[str, str] | None, what: str) -> str:
    """``; <root> holds A/ and B/ itself: ...`` when ``root`` is one split rather than the folder that
    holds the splits (the mistake behind a "split not found"), else ``""``; ``what`` names the root."""
    a, b = ({**DEFAULT_DIRS, **(dirs or {})}[k] for k in ("a", "b"))
    if not ((root / a).is_dir() and (root / b).is_dir()):
        return ""
    splits = sorted(p.name for p in (root / a).iterdir() if p.is_dir() and not p.name.startswith("."))
    if splits:  # dates first (A/train/...): no root would be right, the folders must be moved
        return (
            f"; {root} is laid out by date ({a}/{splits[0]}/...), where cdseg reads <root>/<split>/{a}/, "
            f"<root>/<split>/{b}/, ...: move the folders into that order"
        )
    return f"; {root} holds {a}/ and {b}/ itself: {what} is the folder above it"


def scan_split(
    split_dir: str | Path,
    dirs: dict[str, str] | None = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    require_label: bool = True,
) -> tuple[list[Pair], list[str]]:
    """Pair A, B and label of one split by file name without extension (exact, case included),
    without raising.

    Returns:
        the complete pairs, and the problems with the file set (missing folder, empty split,
        unexpected file, a name without its partners).
    """
    split_dir = Path(split_dir)
    dirs = {**DEFAULT_DIRS, **(dirs or {})}
    roles = ["a", "b"] + (["label"] if require_label or (split_dir / dirs["label"]).is_dir() else [])
    exts = {e.lower() for e in extensions}
    names: dict[str, dict[str, list[str]]] = {}  # role -> name without extension -> its files
    problems: list[str] = []
    for role in roles:
        folder = split_dir / dirs[role]
        if not folder.is_dir():
            layout = f"{split_dir}/{{{','.join(dirs[r] for r in roles)}}}/"
            found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
            # Other datasets name the dates' folders otherwise (DSIFN: t1, t2, mask): say what is there
            hint = (
                f" (found: {', '.join(found)}; other names are set with data.dirs={{a: ..., b: ..., label: ...}},"
                " or dirs= for predict.py and --dirs for the doctor)"
                if found
                else ""
            )
            return [], [f"{folder}: folder not found; expected {layout}{hint}"]
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        images = sorted(p.name for p in files if p.suffix.lower() in exts)
        # Matched by name without extension: DSIFN, say, has t1/0.jpg, t2/0.jpg and mask/0.png.
        names[role] = {}
        for image in images:
            names[role].setdefault(Path(image).stem, []).append(image)
        problems += [
            f"{folder}: {', '.join(same)}: one name, {len(same)} images (pairs are matched by name without extension)"
            for same in names[role].values()
            if len(same) > 1
        ]
        problems += [
            f"{p}: unexpected file; expected extensions {sorted(exts)}" for p in files if p.suffix.lower() not in exts
        ]
    everything = set().union(*names.values())
    if not everything:
        return [], [f"{split_dir}: empty split; no images with extensions {sorted(exts)} in {[dirs[r] for r in roles]}"]
    complete = []
    for stem in sorted(everything):
        missing = [dirs[r] for r in roles if stem not in names[r]]
        if not missing:
            if all(len(names[r][stem]) == 1 for r in roles):
                complete.append(stem)
            continue
        have = [r for r in roles if stem in names[r]]
        hint = ""
        for r in roles:
            close = [n[0] for s, n in names[r].items() if s.lower() == stem.lower() and s != stem]
            if close:
                hint = f" (found {dirs[r]}/{close[0]}: names must match exactly, including case)"
        problems.append(
            f"{names[have[0]][stem][0]}: in {'/'.join(dirs[r] for r in have)} but missing from {'/'.join(missing)}{hint}"
        )
    label_dir = split_dir / dirs["label"] if "label" in roles else None
    pairs = [
        Pair(
            names["a"][stem][0],  # the pair's name: its A file's
            split_dir / dirs["a"] / names["a"][stem][0],
            split_dir / dirs["b"] / names["b"][stem][0],
            label_dir / names["label"][stem][0] if label_dir else None,
        )
        for stem in complete
    ]
    return pairs, problems


def find_pairs(
    split_dir: str | Path,
    dirs: dict[str, str] | None = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    require_label: bool = True,
) -> list[Pair]:
    """:func:`scan_split`, raising one :class:`DatasetError` that lists every problem."""
    pairs, problems = scan_split(split_dir, dirs, extensions, require_label)
    if problems:
        raise _file_set_error(split_dir, problems, pairs)
    return pairs


def _file_set_error(split_dir: str | Path, problems: Sequence[str], pairs: Sequence[Pair]) -> DatasetError:
    if len(problems) == 1 and not pairs:
        return DatasetError(problems[0])
    return DatasetError(_problem_list(f"{split_dir}: {len(problems)} problem(s) with the file set:", problems))


@dataclass(frozen=True)
class Decoded:
    """A pair's pixels as the dataset serves them: uint8 (3, H, W) dates, uint8 (1, H, W) 0/1 mask."""

    a: torch.Tensor
    b: torch.Tensor
    mask: torch.Tensor | None


@dataclass(frozen=True)
class PairInfo:
    """What reading a pair found: a problem (or None), its (H, W), its label's values and changed
    pixels, and (when asked to keep them) its decoded pixels."""

    problem: str | None
    size: tuple[int, int] = (0, 0)
    label_values: tuple[int | float, ...] = ()
    changed: int = 0
    decoded: Decoded | None = None


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()  # (3, H, W): a crop is a view of rows


def inspect_pair(pair: Pair, keep: bool = False) -> PairInfo:
    """Decode the pair's files and check modes, sizes and label values, without raising; ``keep``
    returns the decoded pixels too."""
    values: tuple[int | float, ...] = ()
    changed = 0
    arr = None
    try:
        a, b = load_image(pair.a), load_image(pair.b)
        sizes = {"A": a.shape[:2], "B": b.shape[:2]}
        if pair.label is not None:
            arr = _label_array(pair.label)
            sizes["label"] = arr.shape
            values = _values(arr)
            changed = int(np.count_nonzero(arr))
            _check_label_values(pair.label, arr, values)
    except DatasetError as e:
        return PairInfo(str(e), label_values=values)
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"{k} {w}x{h}" for k, (h, w) in sizes.items())
        return PairInfo(f"{pair.a}: size mismatch ({found}); A, B and label must have the same width and height")
    decoded = None
    if keep:
        mask = torch.from_numpy((arr > 0).astype(np.uint8))[None] if arr is not None else None
        decoded = Decoded(_chw(a), _chw(b), mask)
    return PairInfo(None, sizes["A"], values, changed, decoded)


def inspect_pairs(pairs: Sequence[Pair], workers: int = 4, keep: bool = False) -> list[PairInfo]:
    # PIL releases the GIL while decoding, so threads overlap the file reads and inflates.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(partial(inspect_pair, keep=keep), pairs))


def validate_split(pairs: Sequence[Pair], workers: int = 4) -> list[tuple[int, int]]:
    """Decode every file once and check modes, sizes and label values.

    Returns:
        the (H, W) of every pair.

    Raises:
        DatasetError: one error listing every bad pair.
    """
    return [i.size for i in _validated(pairs, workers)]


def _validated(
    pairs: Sequence[Pair], workers: int = 4, keep: bool = False, file_set: Sequence[str] = ()
) -> list[PairInfo]:
    """Every pair inspected; one error listing the ``file_set``'s problems and every bad pair."""
    infos = inspect_pairs(pairs, workers, keep)
    problems = [*file_set, *(i.problem for i in infos if i.problem)]
    if problems:
        raise DatasetError(_problem_list(f"{len(problems)} problem(s):", problems))
    return infos


def decoded_bytes(pairs: Sequence[Pair]) -> int:
    """Bytes the decoded pairs take in memory (3 + 3 + 1 per pixel), from the image headers alone."""
    total = 0
    for pair in pairs:
        try:
            with Image.open(pair.a) as img:  # reads the header, decodes nothing
                w, h = img.size
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            continue  # validation names the file
        total += h * w * (7 if pair.label is not None else 6)
    return total


def _tv_tensors(sample: dict) -> dict:
    """A/B as torchvision Images and the mask as a Mask, which v2 transforms need to treat each right.
    Imported here: evaluation and prediction (plain tensors) never pay torchvision's import time."""
    from torchvision import tv_tensors

    out = {"A": tv_tensors.Image(sample["A"]), "B": tv_tensors.Image(sample["B"])}
    if "mask" in sample:
        out["mask"] = tv_tensors.Mask(sample["mask"])
    return out


class ChangeDetectionDataset(Dataset):
    """Pairs as dicts ``{"A": (3,H,W), "B": (3,H,W), "mask": (1,H,W) float, "name": str}``.

    ``source`` is a split folder (``<split>/{A,B,label}``, paired by :func:`find_pairs`), or the pairs
    themselves. ``cache`` keeps every pair decoded in memory (validation decodes each file anyway), so a
    sample costs a crop and its augmentation instead of three image decodes; loader workers forked
    after it share those pages. ``transform`` (unless it says ``plain_tensors = True``, as
    :class:`cdseg.data.preprocess.EvalTransform` does) receives ``{"A": Image, "B": Image, "mask": Mask}`` (uint8
    tv_tensors) and must return the same keys; torchvision's v2 transforms apply one set of random
    parameters to all three and never interpolate the Mask. Without a transform A and B stay uint8.
    Without labels, ``mask`` is absent.
    """

    def __init__(
        self,
        source: str | Path | Sequence[Pair],
        transform: Callable[[dict], dict] | None = None,
        dirs: dict[str, str] | None = None,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        require_label: bool = True,
        validate: bool = True,
        cache: bool = False,
    ) -> None:
        file_set: list[str] = []
        if isinstance(source, (str, Path)):
            self.split_dir: Path | None = Path(source)
            self.pairs, file_set = scan_split(source, dirs, extensions, require_label)
            # The file set's problems alone when no pair is to be inspected, else with the bad files.
            if file_set and not (self.pairs and (validate or cache)):
                raise _file_set_error(source, file_set, self.pairs)
        else:
            self.split_dir, self.pairs = None, list(source)
        infos = _validated(self.pairs, keep=cache, file_set=file_set) if validate or cache else None
        self.sizes = [i.size for i in infos] if infos else None  # (H, W) of each pair, known after validation
        self.cache = [i.decoded for i in infos] if cache and infos else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """``item`` is an index, or ``(index, seed)`` from :class:`cdseg.data.sampler.SeededSampler`:
        then the random transforms draw from ``seed`` alone, so the sample is reproducible."""
        if isinstance(item, tuple):
            index, seed = item
            # Only the CPU generator, which the transforms draw from: torch.manual_seed would also
            # (lazily) seed every accelerator's, at about 20x the cost, and fork_rng would not restore those.
            generator = torch.default_generator
            state = generator.get_state()
            generator.manual_seed(seed)
            try:
                return self._load(index)
            finally:
                generator.set_state(state)
        return self._load(item)

    def _load(self, index: int) -> dict:
        pair = self.pairs[index]
        if self.cache is not None:  # the transforms never write into their input: the cache stays intact
            decoded = self.cache[index]
            sample = {"A": decoded.a, "B": decoded.b}
            if decoded.mask is not None:
                sample["mask"] = decoded.mask
        else:
            sample = {
                "A": torch.from_numpy(load_image(pair.a)).permute(2, 0, 1),
                "B": torch.from_numpy(load_image(pair.b)).permute(2, 0, 1),
            }
            if pair.label is not None:
                label = load_label(pair.label, check=self.sizes is None)
                sample["mask"] = torch.from_numpy(label).to(torch.uint8)[None]
        if self.transform is not None and not getattr(self.transform, "plain_tensors", False):
            sample = _tv_tensors(sample)
        if self.transform is not None:
            sample = self.transform(sample)
        out = {k: v.as_subclass(torch.Tensor) for k, v in sample.items()}
        if "mask" in out:
            out["mask"] = out["mask"].float()
        out["name"] = pair.name
        return out
