"""Exponential moving averages of a network's weights, at one or more rates.

DDPM (Ho et al. 2020, appendix B) samples from an EMA of the weights with decay 0.9999;
improved-diffusion keeps several rates side by side. Each average is a full copy of the network
(an ``nn.Module`` in float32, whatever precision the training step runs in), so it can be
handed to a sampler as it is.

Optional warm-up: the decay after ``n`` updates is ``min(rate, (1 + n) / (10 + n))`` (the
``num_updates`` rule of TensorFlow's ExponentialMovingAverage). Early on the average then
follows the weights closely instead of remembering the random initialisation for ~1/(1-rate)
steps, which matters for short runs.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

__all__ = ["EMA", "ema_decay"]


def ema_decay(rate: float, num_updates: int, warmup: bool) -> float:
    """The decay used for the update that follows ``num_updates`` earlier updates."""
    if not warmup:
        return rate
    return min(rate, (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    """Float32 moving averages of ``model``'s parameters at each rate in ``rates``.

    ``update()`` after every optimiser step; ``models[i]`` is the averaged network for
    ``rates[i]`` (buffers are copied, not averaged). ``num_updates`` counts the updates so far.
    """

    def __init__(self, model: nn.Module, rates: Sequence[float], warmup: bool = False):
        rates = tuple(float(r) for r in rates)
        if not rates or any(not 0.0 <= r < 1.0 for r in rates) or len(set(rates)) != len(rates):
            raise ValueError(f"ema_rates must be distinct values in [0, 1), got ema_rates={rates!r}")
        self.rates = rates
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.models = [self._float_copy(model) for _ in rates]
        self._source = model

    @staticmethod
    def _float_copy(model: nn.Module) -> nn.Module:
        clone = copy.deepcopy(model)
        for p in clone.parameters():
            p.requires_grad_(False)
            p.data = p.data.float()
        return clone.eval()

    @torch.no_grad()
    def update(self) -> None:
        """Move every average towards the current weights: ema <- ema + (1 - decay)(w - ema)."""
        weights = [p.detach().float() for p in self._source.parameters()]
        for rate, average in zip(self.rates, self.models):
            ema_params = list(average.parameters())
            if len(ema_params) != len(weights):
                raise ValueError("EMA: the model's parameters changed since the EMA was made")
            torch._foreach_lerp_(ema_params, weights, 1.0 - ema_decay(rate, self.num_updates, self.warmup))
            for ema_buf, buf in zip(average.buffers(), self._source.buffers()):
                ema_buf.copy_(buf)
        self.num_updates += 1

    def model(self, rate: float | None = None) -> nn.Module:
        """The averaged network for ``rate`` (the first rate when None)."""
        if rate is None:
            return self.models[0]
        if float(rate) not in self.rates:
            raise ValueError(f"rate must be one of the EMA rates {list(self.rates)}, got rate={rate!r}")
        return self.models[self.rates.index(float(rate))]

    def state_tensors(self, prefix: str = "ema") -> dict[str, torch.Tensor]:
        """Flat ``{f"{prefix}.{i}.{name}": tensor}`` for a safetensors file."""
        return {f"{prefix}.{i}.{name}": value for i, average in enumerate(self.models)
                for name, value in average.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], num_updates: int,
                           prefix: str = "ema") -> None:
        """Inverse of :meth:`state_tensors`; missing or extra keys raise a ValueError."""
        for i, average in enumerate(self.models):
            head = f"{prefix}.{i}."
            state = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
            missing = set(average.state_dict()) - set(state)
            if missing:
                raise ValueError(f"EMA state for rate {self.rates[i]} lacks {sorted(missing)[:3]}")
            average.load_state_dict(state)
        self.num_updates = int(num_updates)
