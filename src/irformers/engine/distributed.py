"""Data-parallel training from torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK, ...).

`torchrun --nproc-per-node N -m irformers train cfg.yaml` and a plain `irformers train cfg.yaml` run
the same code: without the variables this is a world of one and every collective is a no-op.
NCCL on GPUs, gloo on CPU. Multi-node: the same command on every node with `--nnodes`, `--node-rank`
and a rendezvous (`--rdzv-endpoint HOST:PORT`); see the README.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from irformers.devices import resolve_device
from irformers.engine.config import ConfigError

COLLECTIVE_TIMEOUT = timedelta(hours=2)  # how long ranks wait for each other, e.g. for rank 0's validation


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """This process's place in the job, as torchrun describes it (a world of one without torchrun)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def pick_device(preference: str, info: DistInfo) -> torch.device:
    """`auto`: this rank's local GPU when CUDA is available, else the CPU."""
    if info.world_size > 1 and preference.startswith("cuda:"):  # every rank would take that one GPU
        raise ConfigError(
            f"run.device: {preference} under torchrun puts every process on one GPU; use cuda (each "
            f"process takes its local rank's GPU) and CUDA_VISIBLE_DEVICES to choose the GPUs"
        )
    try:
        device = resolve_device(preference, local_rank=info.local_rank)
    except ValueError as err:
        raise ConfigError(f"run.device: {err}") from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


# `largest`'s group: gloo beside NCCL, so that a flag every step does not wait for the GPU; made at its
# first call, which every rank reaches at the same step (also under a process group made by the caller)
_CPU_GROUP = None


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, gloo otherwise); nothing to do for a world of one."""
    if info.enabled and not dist.is_initialized():
        # DDP touches torch._dynamo; imported after the group exists, dynamo keeps references to it
        # that outlive destroy_process_group, so the gloo worker threads live on into interpreter
        # shutdown and can abort it (std::terminate, SIGABRT) after a run that succeeded.
        import torch._dynamo  # noqa: F401

        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        # the other ranks wait at a barrier while rank 0 validates: NCCL's default 10 minutes would
        # abort a job whose validation sets take longer
        dist.init_process_group(
            backend, rank=info.rank, world_size=info.world_size, timeout=COLLECTIVE_TIMEOUT, **kwargs
        )


def largest(value: int) -> int:
    """The largest of the ranks' `value`s (a world of one: its own), on the CPU group: cheap every step."""
    if not dist.is_initialized():
        return value
    global _CPU_GROUP
    if _CPU_GROUP is None:
        on_cpu = dist.get_backend() == "gloo"
        _CPU_GROUP = (
            dist.group.WORLD if on_cpu else dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
        )
    tensor = torch.tensor([value])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_CPU_GROUP)
    return int(tensor.item())


def shutdown() -> None:
    global _CPU_GROUP
    if dist.is_initialized():
        dist.destroy_process_group()  # every group
    _CPU_GROUP = None


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over all ranks (a copy; `value` itself is left alone)."""
    value = value.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def gather(obj: object) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
