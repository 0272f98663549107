"""How one optimizer step's global batch is split over ranks and accumulation, and how the lr follows it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from jepa.config import Config, ConfigError, OptimConfig


@dataclass(frozen=True)
class BatchPlan:
    """global_batch = micro_batch x world_size x accum_steps, fixed by the config whatever the launch."""

    global_batch: int
    world_size: int
    accum_steps: int
    micro_batch: int
    lr_scale: float

    def describe(self) -> str:
        return (
            f"global batch {self.global_batch} = {self.micro_batch} per micro-batch x {self.world_size} process(es) "
            f"x {self.accum_steps} accumulation step(s); lr scale {self.lr_scale:g}"
        )


def lr_scale(optim: OptimConfig, global_batch: int) -> float:
    """The factor on the configured lr values: 1, global/reference, or its square root."""
    ratio = global_batch / optim.reference_batch
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[optim.lr_scaling]


def batch_plan(cfg: Config, world_size: int) -> BatchPlan:
    """Split ``data.batch_size`` over ``world_size`` ranks and ``optim.accum_steps``, or say why it cannot be."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    global_batch, accum = cfg.data.batch_size, cfg.optim.accum_steps
    if global_batch % (world_size * accum):
        raise ConfigError(
            f"data.batch_size {global_batch} (the global batch) is not divisible by {world_size} process(es) x "
            f"optim.accum_steps {accum} = {world_size * accum}; choose a multiple of {world_size * accum}"
        )
    return BatchPlan(global_batch, world_size, accum, global_batch // (world_size * accum),
                     lr_scale(cfg.optim, global_batch))
