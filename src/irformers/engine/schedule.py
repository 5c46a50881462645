"""Learning-rate schedules as pure functions of the step, so a resumed run needs nothing but the step."""

from __future__ import annotations

import bisect
import math

from irformers.engine.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then the decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** bisect.bisect_right(cfg.milestones, step)
    if cfg.schedule == "cosine":  # held at lr until cosine_start (Restormer: 92k of 300k steps)
        begin = max(cfg.warmup_steps, cfg.cosine_start)
        progress = min(max(step - begin, 0) / max(cfg.steps - begin, 1), 1.0)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
    return cfg.lr
