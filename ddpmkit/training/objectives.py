"""What ``train(config)`` optimises when the process's own denoising loss is not the whole story:
the one place that picks a trainer's default objective from what the process can do."""
from __future__ import annotations

import math
from typing import Any

from .consistency import ConsistencyObjective, PairSchedule
from .rollout import RolloutObjective

__all__ = ["default_objective"]


def default_objective(config: Any, process: Any, shape: tuple[int, ...]) -> Any | None:
    """Consistency training from scratch (iCT: the curriculum over ``optim.steps``, lognormal pairs)
    for a process with a consistency function (the ``digits-ct`` preset); k-step distillation on the
    student's own states (:mod:`.rollout`) for a flow with ``rollout``; None (the process's loss) otherwise."""
    if process.consistency_function:
        pairs = PairSchedule("ict", process.sigma_min, process.sigma_max, config.optim.steps, process.p_mean,
                             process.p_std)
        return ConsistencyObjective(process, pairs, "ct", dim=math.prod(shape))
    if getattr(process, "rollout", False):
        return RolloutObjective(process, config.diffusion.loss_options())
    return None
