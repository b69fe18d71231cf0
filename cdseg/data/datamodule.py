"""LightningDataModule wiring the split folders, transforms and loaders together."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from cdseg.config import SEED_MAX, bool_problem, int_problem, raise_problems
from cdseg.data.cache import CACHE_MODES, check_cache_memory
from cdseg.data.dataset import (
    DEFAULT_DIRS,
    DEFAULT_EXTENSIONS,
    DEFAULT_SPLITS,
    ChangeDetectionDataset,
    DatasetError,
    extensions_problem,
    folder_names,
    scan_split,
    split_as_root,
)
from cdseg.data.device_augment import DeviceAugment, batch_generator
from cdseg.data.duplicates import duplicate_pairs
from cdseg.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, eval_transform, mean_std_problem, resize_problem
from cdseg.data.sampler import SeededSampler
from cdseg.data.synthetic import ensure_synthetic
from cdseg.data.transforms import Augment, build_transforms, host_crop
from cdseg.errors import ConfigError


def auto_workers(cpus: int | None = None, most: int = 8) -> int:
    """Loader workers for ``num_workers: auto``: none on a machine with two cores or fewer (there the
    workers compete with the training threads; 4 workers on 2 cores trained about 20 % slower than
    none), else one per core beyond the first, at most ``most``."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 2 else min(most, cpus - 1)


class ChangeDetectionDataModule(L.LightningDataModule):
    """Train/val/test loaders over ``root/<split>/{A,B,label}``.

    Args:
        root: dataset root holding the split folders.
        synthetic: if given, the keyword arguments of :class:`cdseg.data.synthetic.SyntheticSpec`;
            the dataset is generated into ``root`` on first use and reused afterwards.
        splits: folder name of each stage's split; a missing ``test`` folder just skips testing.
        dirs: folder names of the two dates and the label (``{"a": "A", "b": "B", "label": "label"}``).
        eval_batch_size: batch size of validation and test (default: ``batch_size``); evaluation
            runs on whole images, which may be much larger than training crops.
        seed: the training order and augmentation of epoch e are a function of (seed, e) alone
            (:class:`cdseg.data.sampler.SeededSampler`).
        resize, mean, std: what evaluation (and predict.py) does to a pair: :func:`cdseg.data.preprocess.eval_transform`.
        augment_on: ``"device"`` crops on the host and applies the rest of the training augmentation
            to each batch on the accelerator (:mod:`cdseg.data.device_augment`); ``"host"`` does it all
            in the loader.
        cache: ``"ram"`` keeps every split decoded in memory (:mod:`cdseg.data.cache` checks that it
            fits first), so a training sample is a crop and its augmentation rather than three image
            decodes; ``None`` decodes per sample.
        augment: the training augmentation options, the fields of :class:`cdseg.data.transforms.Augment`.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int | str = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        resize: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        splits: dict[str, str] | None = None,
        dirs: dict[str, str] | None = None,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        synthetic: dict[str, int] | None = None,
        seed: int = 0,
        cache: str | None = None,
        augment_on: str = "host",
        **augment: Any,
    ) -> None:
        super().__init__()
        # Wrongly typed options fail here, all named at once, rather than deep inside a DataLoader.
        if num_workers == "auto":
            num_workers = auto_workers()
        splits, splits_problem = folder_names("data.splits", splits, DEFAULT_SPLITS)
        dirs, dirs_problem = folder_names("data.dirs", dirs, DEFAULT_DIRS)
        problems = [
            splits_problem,
            dirs_problem,
            int_problem("data.seed", seed, 0, maximum=SEED_MAX),
            bool_problem("data.pin_memory", pin_memory),
            bool_problem("data.persistent_workers", persistent_workers),
            int_problem("data.batch_size", batch_size),
            int_problem("data.num_workers", num_workers, minimum=0),
            int_problem("data.eval_batch_size", eval_batch_size, optional=True),
            resize_problem(resize),
            mean_std_problem(mean, std),
            extensions_problem(extensions),
            None if cache in CACHE_MODES else f"data.cache must be null or ram, got {cache!r}",
            None if augment_on in ("host", "device") else f"data.augment_on must be host or device, got {augment_on!r}",
        ]
        try:
            self.augment = Augment(**augment)
        except (ConfigError, TypeError) as e:  # a wrongly typed or an unknown augmentation option
            problems.append(str(e))
        raise_problems(problems)
        if (mean is None) != (std is None):
            rank_zero_warn(f"data.mean={mean}, data.std={std}: one is null, so images are not normalised at all")
        self.root = Path(root).expanduser()  # data.root='~/LEVIR-CD', quoted past the shell
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.loader_args: dict[str, Any] = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers and num_workers > 0,
        }
        self.splits = {**DEFAULT_SPLITS, **(splits or {})}
        self.dirs = dirs
        self.extensions = tuple(extensions)
        self.resize = resize
        self.synthetic = synthetic
        self.seed = seed
        self.cache = cache
        self.mean, self.std = mean, std
        preprocess = {"resize": resize, "mean": mean, "std": std}
        self.augment_on = augment_on
        if augment_on == "device":  # the host crops; the batch is augmented where it trains
            self.train_transform = host_crop(self.augment, resize)
            self.device_augment = DeviceAugment(self.augment, mean, std)
        else:
            self.train_transform = build_transforms(self.augment, **preprocess)
        self.eval_transform = eval_transform(preprocess)
        self.datasets: dict[str, ChangeDetectionDataset] = {}

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            ensure_synthetic(self.root, **self.synthetic)

    def has_split(self, stage: str) -> bool:
        return (self.root / self.splits[stage]).is_dir()

    def _dataset(self, stage: str) -> ChangeDetectionDataset:
        if stage not in self.datasets:
            if not self.root.is_dir():
                raise DatasetError(f"{self.root}: dataset root not found (set data.root)")
            if not self.has_split(stage):
                hint = split_as_root(self.root, self.dirs, "data.root")
                raise DatasetError(f"{self.root / self.splits[stage]}: {stage} split not found{hint}")
            transform = self.train_transform if stage == "train" else self.eval_transform
            dataset = ChangeDetectionDataset(
                self.root / self.splits[stage], transform, self.dirs, self.extensions, cache=self.cache == "ram"
            )
            self._check_batchable(stage, dataset)
            self.datasets[stage] = dataset
        return self.datasets[stage]

    def _check_batchable(self, stage: str, dataset: ChangeDetectionDataset) -> None:
        """Samples of one batch must share a shape: refuse a mixed-size split before training, not mid-epoch."""
        batch_size = self.batch_size if stage == "train" else self.eval_batch_size
        if batch_size == 1 or self.resize is not None or not dataset.sizes:
            return
        sizes = dataset.sizes
        if stage == "train" and self.augment.crop_size:
            crop = self.augment.crop_size
            sizes = [(min(h, crop), min(w, crop)) for h, w in sizes]
        shapes: dict[tuple[int, int], str] = {}
        for pair, size in zip(dataset.pairs, sizes, strict=True):
            shapes.setdefault(size, pair.name)
        if len(shapes) > 1:
            found = ", ".join(f"{w}x{h} ({name})" for (h, w), name in list(shapes.items())[:4])
            key = "data.batch_size" if stage == "train" else "data.eval_batch_size"
            fix = "a data.crop_size no larger than the smallest image, " if stage == "train" else ""
            raise DatasetError(
                f"{dataset.split_dir}: images of different sizes cannot share a batch: {found}. "
                f"Use {fix}data.resize, or {key}=1."
            )

    def setup(self, stage: str) -> None:
        # Fitting also checks the test split, so a bad test file fails before training, not after.
        needed = {"fit": ["train", "val", "test"], "validate": ["val"], "test": ["test"], "predict": ["test"]}[stage]
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root not found (set data.root)")
        if self.cache == "ram":
            self._check_cache([s for s in needed if s not in self.datasets and self.has_split(s)])
        errors = []  # every split's bad files in one message, not one split per attempt
        for split in needed:
            if split in ("train", "val") or self.has_split(split):
                try:
                    self._dataset(split)
                except DatasetError as e:
                    errors.append(str(e))
        if errors:
            raise DatasetError("\n".join(errors))
        world = self.trainer.world_size if self.trainer is not None else 1
        for split in ("val", "test"):  # a rank without a sample would never join the metrics' sync
            dataset = self.datasets.get(split)
            if split in needed and dataset is not None and len(dataset) < world:
                raise DatasetError(
                    f"{dataset.split_dir}: {len(dataset)} pair(s) to evaluate over {world} processes; every process "
                    "needs at least one (evaluation is never padded with repeats, so that its scores are exact)"
                )
        if stage == "fit":
            self._check_duplicates()

    def _check_cache(self, splits: list[str]) -> None:
        """Before decoding anything: what the cache takes, refused when the machine lacks it."""
        if not splits or not self.root.is_dir():
            return  # _dataset() names a missing root or split
        # The complete pairs are what gets decoded; _dataset() names a file-set problem, in every split.
        pairs = {s: scan_split(self.root / self.splits[s], self.dirs, self.extensions)[0] for s in splits}
        # Every process on this machine (a DDP rank each) holds a cache of its own. Rank 0 decides for
        # all, before any of them decodes: ranks checking one after another would each see less memory.
        copies = self.trainer.num_devices if self.trainer is not None else 1
        try:
            verdict = (True, check_cache_memory(pairs, copies))
        except DatasetError as e:
            verdict = (False, str(e))
        if self.trainer is not None:
            verdict = self.trainer.strategy.broadcast(verdict, src=0)
        if not verdict[0]:
            raise DatasetError(verdict[1])
        rank_zero_info(verdict[1])

    def _check_duplicates(self) -> None:
        """Refuse a pair shared by train and val or test; warn of one repeated within a split."""
        errors, warnings = duplicate_pairs({s: d.pairs for s, d in self.datasets.items()})
        for warning in warnings:
            rank_zero_warn(f"{self.root}: {warning}")
        if errors:
            raise DatasetError(f"{self.root}: " + "; ".join(errors))

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if self.augment_on == "device" and self.trainer is not None and self.trainer.training:
            g = batch_generator(batch["A"].device, self.seed, self.trainer.current_epoch, batch["name"])
            batch = self.device_augment(batch, g)
        return batch

    def _sampler(self, dataset: ChangeDetectionDataset, train: bool) -> SeededSampler:
        # The datamodule distributes samples itself (trainer use_distributed_sampler: false), so
        # that evaluation splits are never padded with duplicates.
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return SeededSampler(len(dataset), shuffle=train, seed=self.seed, rank=rank, world_size=world, pad=train)

    def _loader(self, dataset: ChangeDetectionDataset, batch_size: int, sampler: SeededSampler) -> DataLoader:
        init = partial(_worker_init, rank=sampler.rank) if self.loader_args["num_workers"] else None
        args = dict(self.loader_args)
        on = self.trainer.strategy.root_device.type if self.trainer is not None else "cpu"
        args["pin_memory"] = args["pin_memory"] and on == "cuda"  # pinned pages only help a copy to a GPU
        return DataLoader(dataset, batch_size, sampler=sampler, worker_init_fn=init, **args)

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train")
        sampler = self._sampler(dataset, train=True)
        # Lightning builds the first iterator (and worker processes prefetch from it) before its own
        # set_epoch call, so a resumed run must position the sampler itself: at the restored epoch,
        # past the batches of it that the checkpoint's weights have already seen.
        if self.trainer is not None:
            epoch, batches_done = resume_point(self.trainer)
            sampler.set_epoch(epoch)
            sampler.skip(epoch, batches_done * self.batch_size)
        return self._loader(dataset, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        dataset = self._dataset("val")
        return self._loader(dataset, self.eval_batch_size, self._sampler(dataset, False))

    def test_dataloader(self) -> DataLoader:
        dataset = self._dataset("test")
        return self._loader(dataset, self.eval_batch_size, self._sampler(dataset, False))


def _worker_init(worker_id: int, rank: int) -> None:
    # Ctrl-C and SIGTERM reach every process of the job. The main process handles them
    # (cdseg.runs.interrupt.InterruptCheckpoint) and ends its workers itself, so a worker must not die first
    # and fail the batches still to come.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pl_worker_init_function(worker_id, rank)  # what Lightning would install: seeds random/numpy per worker


def resume_point(trainer: L.Trainer) -> tuple[int, int]:
    """(epoch, batches of it already trained), as restored from a checkpoint; (0, 0) on a fresh run.

    An epoch counts as started but not processed while it is under way, so a checkpoint saved
    between two batches (an interrupt, or ``every_n_train_steps``) reads as mid-epoch, and its
    batch counter is the number of optimizer steps of that epoch the weights hold.
    """
    epochs = trainer.fit_loop.epoch_progress.current
    batches = trainer.fit_loop.epoch_loop.batch_progress.current
    mid_epoch = epochs.started > epochs.processed
    return epochs.processed, batches.processed if mid_epoch else 0
