"""Pixel losses of the image-restoration papers, averaged over every element of the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from irformers.engine.config import LOSSES, TrainConfig


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((pred - target)^2 + eps^2)): L1 that stays differentiable at zero (Restormer, MPRNet)."""
    return torch.sqrt((pred - target).square() + eps * eps).mean()


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The configured loss, computed in float32 whatever the autocast dtype of `pred`."""
    pred, target = pred.float(), target.float()
    if cfg.loss == "l1":
        return F.l1_loss(pred, target)
    if cfg.loss == "mse":
        return F.mse_loss(pred, target)
    if cfg.loss == "charbonnier":
        return charbonnier(pred, target, cfg.charbonnier_eps)
    raise ValueError(f"unknown loss {cfg.loss!r}; expected one of {LOSSES}")
