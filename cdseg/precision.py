"""Which mixed precision a device can run at useful speed, for training and for prediction."""

from __future__ import annotations

import sys

import torch
from omegaconf import DictConfig, open_dict

# Precision names (Lightning's, and the short forms predict.py also accepts) -> autocast dtype
# (None: no autocast, float32).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "32": None,
    "32-true": None,
    "bf16": torch.bfloat16,
    "bf16-mixed": torch.bfloat16,
    "16": torch.float16,
    "16-mixed": torch.float16,
}


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_precision(precision: str) -> tuple[str, str | None]:
    """The precision a CPU-only run should use instead of ``precision``, and a notice if it changed.

    float16 autocast is for GPUs; bf16 without native support is emulated and about 30x slower
    than float32 (measured on an AVX2 CPU), so both fall back to what this CPU runs well.
    """
    precision = str(precision)
    if precision not in ("16-mixed", "16", "bf16-mixed", "bf16"):
        return precision, None
    wants_half = precision.startswith("16")
    if cpu_has_native_bf16():
        if not wants_half:
            return precision, None
        return "bf16-mixed", f"{precision} needs a GPU; using bf16-mixed on this CPU"
    return "32-true", f"{precision} is not native on this CPU (bf16 would be ~30x slower); using 32-true"


def cpu_only(cfg: DictConfig) -> bool:
    """Whether the composed train config runs on the CPU alone."""
    accelerator = cfg.trainer.get("accelerator", "auto")
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def runnable_precision(precision: str, cpu: bool, notice_key: str | None = None) -> str:
    """``precision`` as it runs: unchanged off the CPU; on a CPU, :func:`cpu_precision`'s choice, with a
    one-line notice naming the option ``notice_key`` when it changes (none when ``notice_key`` is None)."""
    if not cpu:
        return str(precision)
    runnable, notice = cpu_precision(precision)
    if notice and notice_key is not None:
        print(f"notice: {notice_key} {notice}", file=sys.stderr)
    return runnable


def fix_precision(cfg: DictConfig) -> None:
    """On a CPU-only run, swap a GPU-only or emulated ``trainer.precision`` for one this CPU runs well."""
    asked = cfg.trainer.get("precision", "32-true")
    precision = runnable_precision(asked, cpu_only(cfg), "trainer.precision")
    if precision != str(asked):
        with open_dict(cfg):
            cfg.trainer.precision = precision
