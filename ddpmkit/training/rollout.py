"""k-step distillation on the sampler's own states ("rollout"), as an objective on the one trainer loop.

Liu et al. 2022's k-step distillation (sec. 2.3; :class:`~ddpmkit.core.flow.RectifiedFlow`,
``time_sampling="steps"``) trains every level t_j of the k-step Euler grid at the pair's straight
interpolant x_{t_j} = (1 - t_j) x + t_j z, with the target v = z - x. The k-step sampler never
visits that point: from the second step on it stands where its own earlier steps took it, and a
student that cannot hit x_{t_j} exactly (a blurred first step) meets inputs it was never trained on.
This objective trains each level j > 0 where the sampler stands instead, the train/test mismatch
that Kohler et al. 2024 ("Imagine Flash", backward distillation) remove by starting each student
step from the student's own trajectory:

    x_hat_0 = x + sigma_0 z,   x_hat_{i+1} = Euler(D_theta, x_hat_i, sigma_i -> sigma_{i+1})  (no gradient),

and the loss at level j is the process's own flow-matching loss with that state as its noisy input,
i.e. with the effective noise eps_j = (x_hat_j - x) / sigma_j: lambda(sigma_j) ||D_theta(x_hat_j, sigma_j) - x||^2.
So each step is asked to land on the pair's sample x from where it really starts (its velocity
target (x_t - x) / t is z - x on the interpolant: level 0, and every level of an exact student,
is the plain k-step loss). The rolled states come from the current weights under ``no_grad``: one
extra network call per level below j, k - 1 calls over the batch in all.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..core.predictions import per_example
from ..sampling.loop import SampleOptions
from ..sampling.ode import euler_step

__all__ = ["RolloutObjective"]



class RolloutObjective:
    """Per-example k-step distillation loss at the states the student's own Euler steps reach.

    Args:
        process: a rectified flow with ``rollout`` (``time_sampling="steps"``, ``distill_steps`` = k >= 2).
        loss_options: the keywords of the process's loss (``weighting``, ``snr_gamma``).
    """

    stat_names = ("loss", "grad_norm")

    def __init__(self, process: Any, loss_options: dict[str, Any] | None = None):
        if not getattr(process, "rollout", False):
            raise ValueError(f"the rollout objective needs a process with rollout=True, got {process!r}")
        self.process = process
        self.loss_options = dict(loss_options or {})
        self.sigmas = np.asarray(process.sigmas_to_zero(process.distill_steps), dtype=np.float64)   # host, ends in 0

    def draw(self, step: int, batch: int, generator: torch.Generator | None, device: torch.device
             ) -> dict[str, torch.Tensor]:
        """Each example's level: ``{"t", "sigma", "level"}`` (the process's own draw)."""
        return self.process.draw_levels(batch, generator, device, torch.float32)

    @torch.no_grad()
    def rolled_noise(self, model: Callable[..., torch.Tensor], x0: torch.Tensor, noise: torch.Tensor,
                     level: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        """eps_j = (x_hat_j - x0) / sigma_j, x_hat_j the state after j Euler steps of ``model`` from
        x0 + sigma_0 noise; exactly ``noise`` at level 0. Reads nothing from the device."""
        denoiser = self.process.denoiser(model)
        opts = SampleOptions(progress=False, cond=cond)
        level = per_example(level, x0)
        x_hat = x0 + float(self.sigmas[0]) * noise
        for i in range(self.process.distill_steps - 1):
            stepped, _ = euler_step(denoiser, x_hat, float(self.sigmas[i]), float(self.sigmas[i + 1]), opts)
            x_hat = torch.where(level > i, stepped, x_hat)
        return torch.where(level == 0, noise, (x_hat - x0) / per_example(sigma, x0))

    def loss(self, model: Callable[..., torch.Tensor], part: dict[str, torch.Tensor], **cond: Any) -> torch.Tensor:
        x0 = part["x0"]
        noise = self.rolled_noise(model, x0, part["noise"], part["level"], part["sigma"], **cond)
        draws = {"t": part["t"], "sigma": part["sigma"], "noise": noise}
        return self.process.loss_terms(model, x0, draws=draws, validate=False, **self.loss_options, **cond)["loss"]
