"""One benchmark command: how fast cdseg trains, feeds and predicts on this machine.

Training is measured against a plain loop and compute against a matmul, each baseline run in the same
process; the other sections give rates and times.

    python benchmarks/run.py [--sections train flops data predict startup models matrix] [--quick]
        [--workers 0 1 2] [--rounds 3] [--budget SECONDS] [--work DIR]
        [--out outputs/bench/bench-<time>.json]

Sections (each figure is printed and written with the device, the settings and this command):
    train    pairs/s of train.py's Lightning path (the composed config, its callbacks included) against
             a plain PyTorch loop of the same network, loss, optimiser and loader, alternated round by
             round, for each --workers setting; steady-state steps only (the first --warmup are not
             timed, validation and checkpoints fall outside the timed steps); peak resident memory.
    flops    FLOPs of a training step and of an inference pass (torch.utils.flop_counter) against a
             dense matmul measured now: the share of the machine's peak each reaches.
    data     augmented samples/s of one process (one loader worker's share: one thread) on 1024 tiles,
             decoding per sample and from data.cache=ram, for data=levir's augmentation and for
             experiment=levir_opencd's (date exchange and per-date colour jitter: the heaviest),
             against the rate the model consumes 256 crops at on this device.
    predict  predict.py's Mpx/s and peak memory on a folder of 256x256 pairs, on 1024 and on 4096 pairs.
    startup  seconds from the command to train.py's first training batch, and for a one-pair predict.py.
    models   every conf/model at its default width: parameters, GFLOPs per 256 pair, training pairs/s.
    matrix   (for a GPU; not run by default) train.py's pairs/s and peak memory at 256^2, base 32, from
             data.cache=ram, for bf16-mixed and 16-mixed, batch 64 and 16, channels_last and NCHW,
             augmentation on the device and on the host, and model.compile for the first of these at
             batch 64; the share of the chip's bf16 matmul peak each reaches. Each row times 30 steps
             after enough warm-up steps to drain the loader's queues; its peak memory is given for
             the whole run and for the timed steps alone. On a GPU machine, benchmarks/gpu.sh
             runs it with flops and predict inside a time budget.

``--quick`` shrinks every size to a smoke run of seconds (the test suite runs it); its figures mean nothing.
The JSON file is rewritten after every row, so a run cut short keeps what it measured. A section or matrix
setting that fails is reported as a row with its error, the rest still runs, and the command exits 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from model_card import ROOT, compose_train, size_and_speed
from omegaconf import OmegaConf
from timing import device_name, in_turn, median_seconds, read_text, synchronize
from torch.utils.flop_counter import FlopCounterMode

from cdseg.atomic_write import write_png, write_text
from cdseg.config import build
from cdseg.data.datamodule import auto_workers
from cdseg.data.dataset import ChangeDetectionDataset
from cdseg.data.synthetic import ensure_synthetic
from cdseg.data.transforms import Augment, build_transforms
from cdseg.models import build_network
from cdseg.module import ChangeDetectionModule

SHARED_TILES = ROOT.parent / "shared" / "data" / "levir-cd-samples" / "tiles-1024" / "test"
QUIET = ["logger=csv", "~callbacks.sample_panels", "callbacks.progress_bar.refresh_rate=0", "test=false"]


def rss_bytes() -> int:
    fields = read_text("/proc/self/statm").split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") if fields else 0


@contextmanager
def peak_memory() -> Iterator[dict[str, float]]:
    """Peak memory above the start while the block runs: CUDA's allocator on a GPU, else the resident
    set sampled every 5 ms (loader workers, separate processes, are not counted). On a CPU it is not a
    comparison between blocks of one process: the first block pays for growing the heap that later
    ones reuse (the train section's plain loop, run first, shows 0.5 GB and Lightning 0.2 GB; swapped,
    0.15 against 0.53), so read it as an upper bound for the first block only."""
    out: dict[str, float] = {}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        StepTimer.peak_before_timing = 0
        base = torch.cuda.memory_allocated()
        yield out
        # StepTimer resets the counter where its timed steps start: the peak before that counts too
        peak = max(torch.cuda.max_memory_allocated(), StepTimer.peak_before_timing)
        out["peak_mem_GB"] = (peak - base) / 1e9
        return
    base, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        out["peak_mem_GB"] = max(peak[0] - base, 0) / 1e9


class StepTimer(L.Callback):
    """Wall time of the training steps after the first ``warmup``, each with the fetch (and, with
    data.augment_on=device, the augmentation) of its batch; the last measurement is kept on the class.
    On a GPU it also keeps the allocator's peak over the timed steps alone, without the warm-up's
    one-off workspaces (cuDNN's autotuning, a compiler's)."""

    last: dict[str, float] = {}
    peak_before_timing = 0  # bytes: CUDA's peak up to the reset (read by peak_memory)

    def __init__(self, warmup: int) -> None:
        self.warmup = max(warmup, 1)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step  # already counts this batch's optimizer step
        if step == self.warmup:
            synchronize()  # the warm-up steps' queued GPU work is not timed
            if torch.cuda.is_available():
                StepTimer.peak_before_timing = max(StepTimer.peak_before_timing, torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            self._start = time.perf_counter()
        elif step > self.warmup:
            if step >= trainer.max_steps:
                synchronize()  # the last step's queued GPU work is timed
            StepTimer.last = {"steps": step - self.warmup, "seconds": time.perf_counter() - self._start}
            if torch.cuda.is_available():
                StepTimer.last["steady_peak_mem_GB"] = torch.cuda.max_memory_allocated() / 1e9


def lightning_rate(overrides: list[str], warmup: int, steps: int, batch: int) -> float:
    """Pairs/s of train.py's own path (train()), over the timed steps."""
    from train import train

    timer = [f"+callbacks.bench_timer._target_={__name__}.StepTimer", f"+callbacks.bench_timer.warmup={warmup}"]
    StepTimer.last = {}
    train(compose_train(*overrides, *QUIET, *timer, f"+trainer.max_steps={warmup + steps}"))
    return StepTimer.last["steps"] * batch / StepTimer.last["seconds"]


def plain_rate(overrides: list[str], warmup: int, steps: int, batch: int) -> float:
    """Pairs/s of a minimal loop: the same network, loss, optimiser and DataLoader, nothing else."""
    cfg = compose_train(*overrides)
    torch.manual_seed(cfg.seed)
    net, loss = build_network(cfg.model), build(cfg.loss)
    optimizer = build(cfg.optimizer)(params=net.parameters())
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device).train()
    warmup = max(warmup, 1)
    done, start = 0, 0.0
    while done < warmup + steps:
        for batch_ in datamodule.train_dataloader():
            a, b, mask = (batch_[k].to(device, non_blocking=True) for k in ("A", "B", "mask"))
            optimizer.zero_grad(set_to_none=True)
            loss(net(a, b), mask).backward()
            optimizer.step()
            done += 1
            if done == warmup:  # as StepTimer: each timed step with the fetch of its batch
                synchronize()
                start = time.perf_counter()
            if done == warmup + steps:
                break
    synchronize()
    return steps * batch / (time.perf_counter() - start)


def section_train(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    size, batch = args.train_size, args.batch
    # Enough training pairs that warmup + timed steps fit in one epoch: no validation inside the timing.
    pairs = batch * (args.warmup + args.steps + 1)
    data = [
        f"data.root={work / f'synthetic-{size}'}",
        f"data.synthetic={{size:{size},train:{pairs},val:{batch},test:0,seed:0}}",
        f"data.batch_size={batch}",
        "data.crop_size=null",
        f"model.base={args.base}",
        f"paths.output_dir={work / 'run'}",
    ]
    for workers in args.workers:
        overrides = [*data, f"data.num_workers={workers}", f"data.persistent_workers={workers > 0}"]
        rates: dict[str, list[float]] = {"lightning": [], "plain": []}
        memory: dict[str, float] = {}
        for i in range(args.rounds):  # alternated, so that a slow spell of the machine hits both
            for name, fn in in_turn([("plain", plain_rate), ("lightning", lightning_rate)], i):
                with peak_memory() as mem:
                    rates[name].append(fn(overrides, args.warmup, args.steps, batch))
                memory[name] = max(memory.get(name, 0.0), mem["peak_mem_GB"])
                _remove(work / "run")
        lightning, plain = statistics.median(rates["lightning"]), statistics.median(rates["plain"])
        yield {
            "section": "train",
            "what": f"siamese_unet base {args.base}, batch {batch} x {size}^2, data.num_workers={workers}",
            "lightning_pairs_per_s": lightning,
            "plain_pairs_per_s": plain,
            "ratio": lightning / plain,
            "lightning_rounds": rates["lightning"],
            "plain_rounds": rates["plain"],
            "lightning_peak_mem_GB": memory["lightning"],
            "plain_peak_mem_GB": memory["plain"],
        }


def section_matrix(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    """The GPU matrix: train.py's pairs/s and peak memory at 256^2, base 32, from data.cache=ram with
    experiment=levir_opencd's augmentation (the heaviest) on the host or on the device, for each
    precision, batch size and memory format, and model.compile for the first setting at the largest
    batch; each against the chip's bf16 matmul peak. A setting that fails becomes a row with its error
    and the next one runs; once the --budget is spent, the settings left become rows marked skipped."""
    cuda = torch.cuda.is_available()
    size, base = args.matrix_size, args.matrix_base
    opencd = compose_train("experiment=levir_opencd", "data.root=x").data
    peak = matmul_peak(
        args.matrix_n, torch.bfloat16 if cuda else torch.float32, torch.device("cuda" if cuda else "cpu"), 5
    )
    with FlopCounterMode(display=False) as counter:  # forward + backward of one pair
        net = build_network(compose_train(f"model.base={base}", "model.channels_last=false").model)
        net(*torch.randn(2, 1, 3, size, size)).sum().backward()
    gflop = counter.get_total_flops() / 1e9
    # The loader's workers fill their queues (two batches each, and one in the pinning thread) while
    # step 0 autotunes or compiles: the warm-up drains them, so that the timed steps run at the rate
    # the loader keeps up, not from a stock made while the GPU was busy elsewhere.
    workers = auto_workers()
    warmup = max(args.warmup, 2 * workers + 4)
    # One dataset for every row: enough pairs that the largest batch's steps fit in one epoch (no
    # validation inside the timing).
    root = _replicated(work, size, args.matrix_unique, max(args.matrix_batches) * (warmup + args.matrix_steps + 1))
    warnings.filterwarnings("ignore", message=".*the same image pair is .* times in train")  # replicated on purpose

    def common(batch: int) -> list[str]:
        return [
            f"data.root={root}",
            "data.synthetic=null",
            f"data.batch_size={batch}",
            "data.crop_size=null",
            "data.cache=ram",
            f"data.pin_memory={cuda}",  # as data=levir on a GPU
            "data.num_workers=auto",
            "data.persistent_workers=true",
            "data.vflip=0.5",
            "data.rot90=true",
            f"data.swap={opencd.swap}",
            "data.color_jitter={" + ",".join(f"{k}:{v}" for k, v in opencd.color_jitter.items()) + "}",
            f"model.base={base}",
            f"trainer.accelerator={'gpu' if cuda else 'cpu'}",
            f"++trainer.benchmark={cuda}",
            "++trainer.num_sanity_val_steps=0",  # no validation at all: it would compile a second graph
            f"paths.output_dir={work / 'run'}",
        ]

    for precision, channels_last, where, compiled in matrix_settings(args.matrix_precisions, args.matrix_compile):
        # A compiled setting runs at the largest batch only: its compilation alone may take minutes.
        for batch in [max(args.matrix_batches)] if compiled else args.matrix_batches:
            row = {
                "section": "matrix",
                "what": f"base {base}, {size}^2, batch {batch}, {precision}, "
                f"{'channels_last' if channels_last else 'NCHW'}, augmentation on the {where}"
                + (", compiled" if compiled else ""),
            }
            left = args.deadline - time.monotonic()
            if left <= 0 or (compiled and left < args.matrix_compile_needs):
                yield {**row, "skipped": "the --budget was spent" if left <= 0 else f"{left:.0f} s of --budget left"}
                continue
            overrides = [
                *common(batch),
                f"trainer.precision={precision}",
                f"model.channels_last={channels_last}",
                f"model.compile={compiled}",
                f"data.augment_on={where}",
            ]
            gc.collect()  # the row before's module and optimizer, held in reference cycles
            if cuda:
                torch.cuda.empty_cache()
            started = time.monotonic()
            try:
                with peak_memory() as mem:
                    rate = lightning_rate(overrides, warmup, args.matrix_steps, batch)
            except Exception as error:  # one failing setting (a compiler, the memory) leaves the rest to run
                yield {**row, "error": failure(error)}
                continue
            finally:
                _remove(work / "run")
            yield {
                **row,
                "pairs_per_s": rate,
                "share_of_matmul_peak": rate * gflop / peak,
                "peak_mem_GB": mem["peak_mem_GB"],
                **{k: v for k, v in StepTimer.last.items() if k.endswith("_GB")},
                "train_gflop_per_pair": gflop,
                "matmul_peak_gflop_per_s": peak,
                "loader_workers": workers,  # data.num_workers=auto on this machine
                "warmup_steps": warmup,
                "timed_steps": args.matrix_steps,
                "row_seconds": time.monotonic() - started,
            }


def matrix_settings(precisions: list[str], compile: bool) -> list[tuple[str, bool, str, bool]]:
    """(precision, channels_last, augmentation on, compiled), in the order the matrix runs them: the
    expected fastest first, then each setting that changes one thing of it, the compiled one, then
    the rest, so that a spent --budget cuts what tells the least."""
    product = [
        (precision, channels_last, where, False)
        for precision in precisions
        for channels_last in (True, False)
        for where in ("device", "host")
    ]
    first = product[0]
    ordered = sorted(product, key=lambda s: sum(x != y for x, y in zip(s, first, strict=True)))
    if compile:
        ordered.insert(
            1 + sum(sum(x != y for x, y in zip(s, first, strict=True)) == 1 for s in product), (*first[:3], True)
        )
    return ordered


def _replicated(work: Path, size: int, unique: int, pairs: int) -> Path:
    """A LEVIR-layout folder of ``pairs`` training pairs of size^2 (and a few validation ones), hard
    links to ``unique`` generated ones: a loader and the cache do the same work whatever a pair
    shows, and generating thousands of pairs would take a minute of a GPU's budget."""
    source = ensure_synthetic(work / f"synthetic-{size}-{unique}", size=size, train=unique, val=4, test=0, seed=0)
    root = work / f"replicated-{size}-{unique}-{pairs}"
    if root.is_dir():
        return root
    tmp = work / f".{root.name}.partial"
    _remove(tmp)
    for split, count in (("train", pairs), ("val", 4)):
        names = sorted(p.name for p in (source / split / "A").iterdir())
        for sub in ("A", "B", "label"):
            (tmp / split / sub).mkdir(parents=True)
            for i in range(count):
                src, dst = source / split / sub / names[i % len(names)], tmp / split / sub / f"{i:05d}.png"
                try:
                    os.link(src, dst)
                except OSError:  # a file system without hard links
                    shutil.copyfile(src, dst)
    tmp.rename(root)
    return root


def matmul_peak(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """GFLOP/s of an n x n dense matmul. On a GPU each timed call runs 20 products back to back (one
    8192^2 bf16 product takes about a millisecond), after ten such calls that let the clocks rise
    from idle."""
    x, y = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty_like(x)
    runs, warmup = (20, 10) if device.type == "cuda" else (1, 1)

    def products() -> None:
        for _ in range(runs):
            torch.matmul(x, y, out=out)

    return 2 * n**3 * runs / median_seconds(products, repeats, warmup=warmup) / 1e9


def section_flops(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, batch = args.infer_size, args.infer_batch
    torch.manual_seed(0)
    cfg = compose_train(f"model.base={args.base}")
    net, loss = build_network(cfg.model).to(device), build(cfg.loss)
    optimizer = build(cfg.optimizer)(params=net.parameters())
    a, b = torch.randn(2, batch, 3, size, size, device=device)
    mask = (torch.rand(batch, 1, size, size, device=device) > 0.9).float()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(net(a, b), mask).backward()
        optimizer.step()

    @torch.no_grad()
    def infer() -> None:
        net(a, b)

    # Strict float32 for the convolutions and the matmul alike: on a GPU, cuDNN would otherwise run
    # the convolutions in TF32 on the tensor cores, and the matmul, by PyTorch's default, would not.
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        # On a GPU a 2048 matmul takes a fraction of a millisecond, too short to time against the clock.
        n = 8192 if device.type == "cuda" and not args.quick else args.matmul_n
        peak = matmul_peak(n, torch.float32, device, args.repeats)
        for name, fn, mode in (("training step", train_step, net.train), ("inference", infer, net.eval)):
            mode()
            with FlopCounterMode(display=False) as counter:
                fn()
            gflop = counter.get_total_flops() / 1e9
            achieved = gflop / median_seconds(fn, args.repeats, warmup=1)
            yield {
                "section": "flops",
                "what": f"{name}, siamese_unet base {args.base}, batch {batch} x {size}^2, float32 (no TF32)",
                "gflop": gflop,
                "gflop_per_s": achieved,
                "matmul_peak_gflop_per_s": peak,
                "matmul_n": n,
                "share_of_peak": achieved / peak,
            }
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _tiles(work: Path, quick: bool) -> Path:
    """The real 1024 tiles when ../shared has them, else generated ones (48 px in a quick run)."""
    if SHARED_TILES.is_dir() and not quick:
        return SHARED_TILES
    size = 48 if quick else 1024
    root = ensure_synthetic(work / f"tiles-{size}", size=size, train=0, val=0, test=4, seed=0)
    return root / "test"


def section_data(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    tiles = _tiles(work, args.quick)
    crop = 32 if args.quick else 256
    consumption = consumption_rate(args.consumer_base, crop, args.repeats)
    yield {
        "section": "data",
        "what": f"model consumption: siamese_unet base {args.consumer_base}, batch 8 x {crop}^2 training",
        "samples_per_s": consumption,
    }
    levir = Augment(crop_size=crop, hflip=0.5, vflip=0.5, rot90=True)
    opencd = compose_train("experiment=levir_opencd", "data.root=x").data
    augments = {
        "data=levir": levir,
        "experiment=levir_opencd": replace(levir, swap=opencd.swap, color_jitter=dict(opencd.color_jitter)),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what one loader worker has
    try:
        for cache in (False, True):
            for name, augment in augments.items():
                dataset = ChangeDetectionDataset(tiles, build_transforms(augment), cache=cache)
                n = args.samples * (20 if cache else 1)
                # Each sample dropped once made, as a loader's batches are: keeping all n would time
                # the page faults of ever-new memory (about 2 MB a sample), not the pipeline.
                seconds = median_seconds(lambda d=dataset, n=n: deque((d[(i % len(d), i)] for i in range(n)), 0), 3, 1)
                yield {
                    "section": "data",
                    "what": f"{name} augmentation, {'data.cache=ram' if cache else 'decoded per sample'}, "
                    f"{crop}^2 crops of {tiles}, one process, one thread",
                    "samples_per_s": n / seconds,
                    "model_pairs_per_s": consumption,
                    "ratio_to_model": n / seconds / consumption,
                }
    finally:
        torch.set_num_threads(threads)


def consumption_rate(base: int, crop: int, repeats: int) -> float:
    """What the model consumes: training pairs/s of siamese_unet at ``base``, batch 8 of crop^2."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = compose_train(f"model.base={base}")
    net, loss = build_network(cfg.model).to(device).train(), build(cfg.loss)
    optimizer = build(cfg.optimizer)(params=net.parameters())
    a, b = torch.randn(2, 8, 3, crop, crop, device=device)
    mask = (torch.rand(8, 1, crop, crop, device=device) > 0.9).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(net(a, b), mask).backward()
        optimizer.step()

    return 8 / median_seconds(step, repeats, warmup=1)


def _checkpoint(work: Path, base: int) -> Path:
    """A checkpoint of the seed model at ``base`` as train.py writes it (untrained: speed does not care)."""
    cfg = compose_train(f"model.base={base}", "data.root=x", f"paths.output_dir={work}")
    module = ChangeDetectionModule(
        build_network(cfg.model),
        build(cfg.loss),
        build(cfg.optimizer),
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    file = work / "bench.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, file)
    return file


def _scene(folder: Path, count: int, size: int) -> Path:
    """``count`` pairs of size x size: smooth random scenes (noise would make PNG coding the benchmark)."""
    rng = np.random.default_rng(0)
    for sub in ("A", "B"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        for sub in ("A", "B"):
            coarse = rng.integers(0, 256, (max(size // 32, 2), max(size // 32, 2), 3), dtype=np.uint8)
            image = torch.nn.functional.interpolate(
                torch.from_numpy(coarse).permute(2, 0, 1)[None].float(), size=(size, size), mode="bilinear"
            )
            write_png(folder / sub / f"{i:04d}.png", image[0].permute(1, 2, 0).round().byte().numpy())
    return folder


def section_predict(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    from predict import predict

    ckpt = _checkpoint(work, args.base)

    def config(inputs: Path) -> Any:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("predict", overrides=[f"ckpt_path={ckpt}", f"input={inputs}", f"output={work / 'pred'}"])

    # One untimed pair first, so that the first set does not pay for the first kernels (on a GPU,
    # CUDA's start and cuDNN's choices).
    predict(config(_scene(work / "warm-up", 1, min(size for _, size in args.predict_sets))))
    _remove(work / "pred")
    for count, size in args.predict_sets:
        inputs = _scene(work / f"pairs-{count}x{size}", count, size)
        cfg = config(inputs)
        with peak_memory() as mem:
            summary = predict(cfg)
        _remove(work / "pred")
        yield {
            "section": "predict",
            "what": f"predict.py, {count} pair(s) of {size}x{size}, siamese_unet base {args.base}, defaults",
            "megapixels_per_s": summary["megapixels_per_second"],
            "peak_mem_GB": mem["peak_mem_GB"],
        }


def section_startup(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    ckpt = _checkpoint(work, args.base)
    pair = _scene(work / "one-pair", 1, 64)
    predict_cmd = [
        sys.executable,
        str(ROOT / "predict.py"),
        f"ckpt_path={ckpt}",
        f"a={pair / 'A' / '0000.png'}",
        f"b={pair / 'B' / '0000.png'}",
        f"output={work / 'one'}",
        "overwrite=true",
    ]
    marker = work / "first-batch"
    train_cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        f"data.root={work / 'synthetic-startup'}",
        "data.synthetic={size:32,train:8,val:4,test:0,seed:0}",
        f"paths.output_dir={work / 'startup-run'}",
        "+callbacks.first._target_=run.FirstBatch",  # this file, imported by train.py from PYTHONPATH
        f"+callbacks.first.marker={marker}",
        *QUIET,
    ]
    for name, cmd in (
        ("predict.py, one 64x64 pair, to the end", predict_cmd),
        ("train.py to its first batch", train_cmd),
    ):
        times = []
        for _ in range(args.rounds):
            _remove(work / "startup-run")
            marker.unlink(missing_ok=True)
            start = time.time()
            proc = subprocess.run(
                cmd,
                cwd=work,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"},
            )
            end = float(marker.read_text()) if marker.is_file() else time.time()
            if proc.returncode not in (0, 3):
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            times.append(end - start)
        yield {"section": "startup", "what": name, "seconds": statistics.median(times), "rounds": times}


class FirstBatch(L.Callback):
    """Writes the time the first training batch starts to ``marker`` and ends the process (exit 3)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        write_text(self.marker, repr(time.time()))
        os._exit(3)


def section_models(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    for config in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        figures = size_and_speed(config.stem, size=args.infer_size, batch=2, repeats=args.repeats)
        what = f"model={config.stem}, default width, batch 2 x {args.infer_size}^2"
        yield {"section": "models", "what": what, **figures}


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


SECTIONS = {
    "train": section_train,
    "flops": section_flops,
    "data": section_data,
    "predict": section_predict,
    "startup": section_startup,
    "models": section_models,
    "matrix": section_matrix,
}
DEFAULT_SECTIONS = ["train", "flops", "data", "predict", "startup", "models"]  # matrix: for a GPU


def line(row: dict[str, Any]) -> str:
    figures = ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k not in ("section", "what") and isinstance(v, float))
    if "error" in row:
        figures = f"failed: {row['error']}"
    elif "skipped" in row:
        figures = f"skipped: {row['skipped']}"
    return f"[{row['section']}] {row['what']}: {figures}"


def failure(error: Exception) -> str:
    """The error in one line for the report; the whole traceback goes to stderr."""
    traceback.print_exception(error)
    return f"{type(error).__name__}: {error}"[-1000:]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=DEFAULT_SECTIONS, choices=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds; its figures mean nothing")
    parser.add_argument("--workers", nargs="+", type=int, default=None, help="loader workers to train with")
    parser.add_argument("--rounds", type=int, default=None, help="alternations of the contenders (default 3)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds after which no new section or matrix setting starts; what is left is reported as skipped",
    )
    args = parser.parse_args(argv)
    settings = (
        dict(
            train_size=32,
            batch=2,
            base=4,
            warmup=1,
            steps=2,
            rounds=2,  # two: the contenders alternate in order
            repeats=1,
            infer_size=32,
            infer_batch=1,
            matmul_n=64,
            samples=2,
            consumer_base=4,
            predict_sets=[(3, 32), (1, 64)],
            matrix_size=32,
            matrix_base=4,
            matrix_batches=[2],
            matrix_precisions=["32-true"],
            matrix_compile=False,
            matrix_compile_needs=0,
            matrix_steps=2,
            matrix_unique=3,
            matrix_n=64,
        )
        if args.quick
        else dict(
            train_size=128,
            batch=8,
            base=16,
            warmup=3,
            steps=20,
            rounds=3,
            repeats=5,
            infer_size=256,
            infer_batch=4,
            matmul_n=2048,
            samples=10,
            consumer_base=32,
            predict_sets=[(64, 256), (4, 1024), (1, 4096)],
            matrix_size=256,
            matrix_base=32,
            matrix_batches=[64, 16],
            matrix_precisions=["bf16-mixed", "16-mixed"],
            matrix_compile=True,
            matrix_compile_needs=120,  # seconds of --budget a compiled row may take (the compiler's share)
            matrix_steps=30,
            matrix_unique=64,
            matrix_n=8192,
        )
    )
    if args.rounds is not None:
        settings["rounds"] = args.rounds
    for key, value in settings.items():
        setattr(args, key, value)
    if args.workers is None:
        args.workers = [0] if args.quick else sorted({0, 1, 2})
    args.deadline = time.monotonic() + (args.budget if args.budget is not None else math.inf)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out = args.out or ROOT / "outputs" / "bench" / f"bench-{stamp}.json"
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "date": stamp,
        "device": device_name(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": torch.get_num_threads(),
        "peak_mem_GB": "CUDA's allocator, above the start"
        if torch.cuda.is_available()
        else "the resident set's growth (sampled every 5 ms)",
        "settings": {k: v for k, v in settings.items()},
        "rows": [],
    }
    print(f"{report['device']}; torch {report['torch']}, Lightning {report['lightning']}, {report['threads']} threads")
    out.parent.mkdir(parents=True, exist_ok=True)

    def record(row: dict[str, Any]) -> None:  # the file is rewritten after each row: a run cut short keeps its rows
        print(line(row), flush=True)
        report["rows"].append(row)
        write_text(out, json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.sections:
            if time.monotonic() >= args.deadline:
                record({"section": name, "what": "the whole section", "skipped": "the --budget was spent"})
                continue
            try:
                for row in SECTIONS[name](args, work):
                    record(row)
            except Exception as error:  # the next section still runs
                record({"section": name, "what": "the section stopped", "error": failure(error)})
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    sys.exit(1 if any("error" in row for row in main()["rows"]) else 0)
