"""Which mixed precision a device can run at useful speed."""

from __future__ import annotations

import torch


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
        return "bf16-mixed", f"precision {precision} needs a GPU; using bf16-mixed on this CPU"
    return "32-true", f"precision {precision} is not native on this CPU (bf16 would be ~30x slower); using 32-true"
