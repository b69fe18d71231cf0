"""Learning-rate schedules stepped every optimizer step (``interval = "step"``), for recipes whose
length is set in steps (``trainer.max_steps``) rather than epochs."""

from __future__ import annotations

import math

import torch

from cdseg.errors import ConfigError


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Linear warmup from ``1 / warmup_steps`` of the base learning rate to all of it over
    ``warmup_steps``, then cosine decay to ``min_lr_ratio`` x base at the last of ``total_steps``
    (step ``total_steps - 1``, counted from 0; a run of one step takes it at the base rate), held after.

    Args:
        optimizer: the optimiser whose learning rates it scales.
        total_steps: optimizer steps of the whole run (``${trainer.max_steps}`` in conf/scheduler).
        warmup_steps: steps of linear warmup.
        min_lr_ratio: the final learning rate as a fraction of the base one.
    """

    interval = "step"  # ChangeDetectionModule steps it per optimizer step

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.01
    ) -> None:
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(
                f"scheduler.total_steps must be a positive number of steps, got {total_steps!r}: "
                "set +trainer.max_steps=N (the schedule follows it), with trainer.max_epochs=-1 so that "
                "the run's length is set in steps"
            )
        if not 0 <= warmup_steps < total_steps:
            raise ConfigError(f"scheduler.warmup_steps must be in [0, {total_steps}), got {warmup_steps!r}")

        # The factor of optimizer step ``step`` (0-based): the warmup's last step is at the base rate,
        # and the cosine runs from there to the floor at the run's last step, total_steps - 1.
        peak = max(warmup_steps - 1, 0)

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = min((step - peak) / max(total_steps - 1 - peak, 1), 1.0)
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        self.total_steps = total_steps  # the run's length it plans for (cdseg.runs.guards.ScheduleFitsTheRun)
        super().__init__(optimizer, factor)

    # The plan is this command's (extend_schedule may lengthen it), never a checkpoint's, nor one
    # that a checkpoint written with it in its state would bring back.
    def state_dict(self) -> dict:
        return {k: v for k, v in super().state_dict().items() if k != "total_steps"}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "total_steps"})
