"""Learning-rate schedules (notes: "Warmup + Learning Rate Scheduling"), as multipliers of step."""

from __future__ import annotations

import math


def noam_lr(step: int, d_model: int, warmup_steps: int = 4000) -> float:
    """The paper's LR = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5): linear rise, then 1/sqrt."""
    step = max(step, 1)
    return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Multiplier in [min_ratio, 1]: linear warmup, then cosine decay to min_ratio at total_steps."""
    if step < warmup_steps:
        return (step + 1) / max(warmup_steps, 1)
    progress = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
