"""The distributed environment: validated before use, a stop vote across ranks, and a batch gather.

torchrun, ``jepa launch`` (submitit) and ``accelerate launch`` all describe a process with the
``env://`` variables. A half-set or inconsistent environment would otherwise hang in the
rendezvous or, worse, leave every process training alone; here it is an error that names the
variable and the launcher to use.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from jepa.losses import local_batch

REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_INTEGERS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT")


class DistributedEnvError(RuntimeError):
    """The process was started with a missing or inconsistent distributed environment."""


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def check_distributed_env(environ: Mapping[str, str]) -> DistEnv | None:
    """The validated ``env://`` settings, or None for a plain single process.

    A single process is one with none of the variables set and not one task of a
    multi-task SLURM step (which would otherwise train alone, once per task).
    """
    present = [k for k in REQUIRED if environ.get(k)]
    if not present:
        tasks = environ.get("SLURM_NTASKS") or environ.get("SLURM_STEP_NUM_TASKS")
        if tasks and tasks.isdigit() and int(tasks) > 1:
            raise DistributedEnvError(
                f"this is one of {tasks} SLURM tasks but RANK/WORLD_SIZE/MASTER_ADDR are not set, so every task "
                "would train alone; start multi-task jobs with `jepa launch` (it exports them) or torchrun"
            )
        return None
    missing = [k for k in REQUIRED if not environ.get(k)]
    if missing:
        raise DistributedEnvError(
            f"incomplete distributed environment: {', '.join(present)} set but {', '.join(missing)} missing; "
            "start with torchrun, `accelerate launch` or `jepa launch`, or unset them all for one process"
        )
    values: dict[str, int] = {}
    for key in _INTEGERS:
        if environ.get(key):
            try:
                values[key] = int(environ[key])
            except ValueError:
                raise DistributedEnvError(f"{key}={environ[key]!r} is not an integer") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    local_world = values.get("LOCAL_WORLD_SIZE", world)
    problems = [
        (world >= 1, f"WORLD_SIZE={world} must be >= 1"),
        (0 <= rank < world, f"RANK={rank} is outside WORLD_SIZE={world}"),
        (1 <= local_world <= world, f"LOCAL_WORLD_SIZE={local_world} must lie in 1..WORLD_SIZE={world}"),
        (0 <= local < local_world, f"LOCAL_RANK={local} is outside LOCAL_WORLD_SIZE={local_world}"),
        (world % local_world == 0, f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local_world}"),
        (1 <= values["MASTER_PORT"] <= 65535, f"MASTER_PORT={values['MASTER_PORT']} is not a port number"),
    ]
    errors = [message for ok, message in problems if not ok]
    if errors:
        raise DistributedEnvError("inconsistent distributed environment: " + "; ".join(errors))
    return DistEnv(rank, world, local, environ["MASTER_ADDR"], values["MASTER_PORT"])


class StopVote:
    """Agrees across ranks on stopping, so that every rank saves and stops after the same step.

    A signal reaches ranks at different moments (or only some of them). Each step starts an
    asynchronous MAX all-reduce of the local request (a signal number, 0 for none) on a CPU (gloo)
    group and reads the previous step's result, so the decision costs no device sync and is the
    same on every rank, one step after the first request. With one process the local request is
    the decision.
    """

    def __init__(self, group: dist.ProcessGroup | None) -> None:
        self.group = group
        self._flag = torch.zeros(1, dtype=torch.int32)
        self._work: dist.Work | None = None

    @classmethod
    def for_world(cls, world_size: int) -> StopVote:
        """A vote over a new gloo group when distributed (every rank must call this), else a local one."""
        return cls(dist.new_group(backend="gloo") if world_size > 1 else None)

    def __call__(self, requested: int) -> int:
        """The agreed signal number to stop on (0: keep going), given this rank's request."""
        if self.group is None:
            return requested
        agreed = 0
        if self._work is not None:
            self._work.wait()
            agreed = int(self._flag.item())
        self._flag = torch.tensor([requested], dtype=torch.int32)
        self._work = dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        return agreed

    def close(self) -> None:
        """Finish the pending exchange (every rank takes part in it)."""
        if self._work is not None:
            self._work.wait()
            self._work = None


class BatchGather:
    """Concatenate a per-rank batch ``z`` [N, ...] over all ranks, gradients flowing back to each rank's rows.

    Batch statistics (the VICReg variance and covariance) then cover the whole per-step batch of
    all ranks, as in one process: the autograd all-gather sums the gradient of every rank's copy
    of the loss, and DDP's average over ranks turns that into the gradient of one copy. Ranks may
    hold different N (unreadable samples are dropped): the sizes travel over a CPU (gloo) group,
    so learning them costs no device sync, and shorter batches are padded for the exchange.
    """

    def __init__(self, group: dist.ProcessGroup, world_size: int) -> None:
        self.group = group
        self.world_size = world_size

    @classmethod
    def for_world(cls, world_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """A gather over all ranks when distributed (every rank must call this), else the identity."""
        return cls(dist.new_group(backend="gloo"), world_size) if world_size > 1 else local_batch

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        import torch.distributed.nn.functional as dist_fn

        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([len(z)]), group=self.group)
        counts = [int(n) for n in sizes]
        longest = max(counts)
        if len(z) < longest:
            z = torch.cat([z, z.new_zeros(longest - len(z), *z.shape[1:])])
        with warnings.catch_warnings():  # its replacement's backward needs reduce_scatter, which gloo lacks
            warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather is deprecated", FutureWarning)
            parts = dist_fn.all_gather(z)
        return torch.cat([part[:n] for part, n in zip(parts, counts)])


class ReplicaMismatch(RuntimeError):
    """Ranks hold different weights: their updates diverged, so a checkpoint of rank 0 would not be the run."""


def fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """[2] float64: the sum and the sum of squares of every parameter and buffer."""
    values = [t.detach().double() for t in (*module.parameters(), *module.buffers())]
    return torch.stack([sum(v.sum() for v in values), sum(v.pow(2).sum() for v in values)])


def mismatched(gathered: torch.Tensor, names: list[str], rtol: float = 1e-9) -> list[str]:
    """Names whose fingerprints differ between ranks; ``gathered`` is [world, len(names), 2]."""
    spread = (gathered - gathered[:1]).abs().amax(dim=(0, 2))
    scale = gathered[0].abs().amax(dim=1).clamp_min(1.0)
    return [name for name, s, m in zip(names, spread.tolist(), scale.tolist()) if s > rtol * m]


def check_replicas_agree(
    modules: dict[str, torch.nn.Module], gather: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """Raise :class:`ReplicaMismatch` unless every rank holds the same ``modules`` (e.g. encoder, EMA target).

    ``gather`` is the all-gather that stacks a tensor from every rank (``Accelerator.gather``).
    """
    local = torch.stack([fingerprint(m) for m in modules.values()])
    device = next(next(iter(modules.values())).parameters()).device
    gathered = gather(local[None].to(device)).cpu()
    bad = mismatched(gathered, list(modules))
    if bad:
        raise ReplicaMismatch(f"ranks disagree on {', '.join(bad)}; their training has diverged")
