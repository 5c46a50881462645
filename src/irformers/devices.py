"""Which torch device a setting names: one rule for inference, training, benchmarks and checkpoints."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: the GPU when CUDA is available, else the CPU; a bare `cuda` is GPU `local_rank` (torchrun's).

    A device this machine lacks, or a string that names none, is a ValueError of one line.
    """
    spec = "auto" if device is None else device
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"'{spec}' is not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        if device.index >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ValueError(f"'{spec}' needs {device}, but this machine has {found}")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether a CUDA device computes in bfloat16 natively (Ampere on); torch's own check also says
    yes for the slow emulation of older GPUs, and asks about the current device, not this one."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """CUDA float32 convolutions and matrix products at full precision while inside: PyTorch lets cuDNN
    run float32 convolutions as TF32 on Ampere and later GPUs, so an fp32 score there was not the
    model's. Set through the flags every torch from 2.4 reads consistently (mixing in 2.9's per-backend
    ``fp32_precision`` makes torch's own TF32 getter raise); global, and put back on leaving."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.set_float32_matmul_precision(matmul)


def fp32_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """`full_fp32` where it matters, fp32 on a CUDA device (nowhere else is there TF32 to turn off)."""
    return full_fp32() if dtype == torch.float32 and device.type == "cuda" else contextlib.nullcontext()
