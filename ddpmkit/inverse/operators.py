"""Linear observations y = A x for inverse problems: a pixel mask, colour to grey, average pooling.

Every operator here has orthogonal rows of equal norm, A A^T = c I on its range (``gram`` = c),
so its pseudo-inverse is A^+ = A^T / c and the projection onto {x : A x = y} is

    project(x, y) = x + A^+ (y - A x)

(the least-change correction; for a mask it is plain replacement of the known pixels). In the
noise-level variables x_hat = x_0 + sigma eps the observation of a noisy sample is
A x_hat = y + sigma A eps, a draw of N(y, sigma^2 c I): :meth:`LinearOperator.noised` makes it
from the same operator (Song et al. 2021, app. I.2, for a general linear A).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

__all__ = ["LinearOperator", "Mask", "Greyscale", "Downsample"]


class LinearOperator:
    """The shared part: ``op(x) = A x``, ``pinv(y) = A^+ y``, ``project(x, y)``, ``check(shape)``.

    Subclasses implement :meth:`forward`, :meth:`pinv`, :attr:`gram` and :meth:`check`; every
    method works on a batch (B, *example_shape) and is differentiable (DPS takes gradients
    through it).
    """

    gram: float = 1.0
    """c in A A^T = c I (on the range of A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check(self, shape: Sequence[int]) -> None:
        """One-line ValueError if the operator does not fit examples of ``shape`` (no batch)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x + A^+ (y - A x): the nearest point to x with A x = y."""
        return x + self.pinv(y - self.forward(x))

    def noised(self, y: torch.Tensor, std: float, noise: torch.Tensor) -> torch.Tensor:
        """y + std A noise, noise ~ N(0, I) of the data's shape, a draw of N(y, std^2 A A^T): for
        std = sigma, the observation of x_hat = x_0 + sigma eps (score-SDE app. I.2)."""
        return y + std * self.forward(noise)

    def level(self, noise_std: float) -> float:
        """The noise level sigma_y of an observation y = A x_0 + noise_std n: A x_hat at level
        sigma_y = noise_std / sqrt(c) has exactly that noise (A A^T = c I)."""
        return float(noise_std) / math.sqrt(self.gram)

    def observation_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of A x for x of ``shape`` (with its batch)."""
        return tuple(self.forward(torch.zeros(tuple(shape), device="meta")).shape)


class Mask(LinearOperator):
    """A x = m * x with m in {0, 1} (1 = a known pixel): inpainting. y keeps the data's shape
    (zeros where unknown); A^+ = A, A A^T = I on the known pixels.

    Args:
        mask: a 0/1 tensor broadcastable to one example's shape (e.g. (1, H, W) for (C, H, W)).
    """

    def __init__(self, mask: torch.Tensor | Any):
        m = torch.as_tensor(mask)
        if m.dim() < 1 or not torch.all((m == 0) | (m == 1)):
            raise ValueError(f"mask must be a tensor of 0s and 1s (1 = known), got shape {tuple(m.shape)} "
                             f"and values outside {{0, 1}}" if m.dim() >= 1 else f"mask must be a tensor, got {mask!r}")
        self.mask = m.to(torch.float32)

    def _m(self, like: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=like.device, dtype=like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._m(x) * x

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._m(y) * y

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        m = self._m(x)
        return torch.lerp(x, y.to(x.dtype), m)   # (1 - m) x + m y, exact on the known pixels

    def check(self, shape: Sequence[int]) -> None:
        shape = tuple(shape)
        mshape = tuple(self.mask.shape)
        ok = len(mshape) <= len(shape) and all(a in (1, b) for a, b in zip(mshape[::-1], shape[::-1]))
        if not ok:
            raise ValueError(f"mask of shape {mshape} does not fit examples of shape {shape}")

    @property
    def known_fraction(self) -> float:
        return float(self.mask.mean())


class Greyscale(LinearOperator):
    """A x = sum_c w_c x_c over the channel axis (dim 1): colourisation. y has one channel;
    A A^T = |w|^2, A^+ y = w y / |w|^2.

    Args:
        weights: the channel mix (default ITU-R BT.601 luma, 0.299 R + 0.587 G + 0.114 B).
    """

    def __init__(self, weights: Sequence[float] = (0.299, 0.587, 0.114)):
        w = [float(v) for v in weights]
        if len(w) < 1 or not all(math.isfinite(v) for v in w) or sum(v * v for v in w) == 0.0:
            raise ValueError(f"weights must be finite numbers, not all zero, got weights={tuple(weights)!r}")
        self.weights = torch.tensor(w, dtype=torch.float64)
        self.gram = sum(v * v for v in w)

    def _w(self, like: torch.Tensor) -> torch.Tensor:
        return self.weights.to(device=like.device, dtype=like.dtype).reshape((1, -1) + (1,) * (like.dim() - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._w(x) * x).sum(dim=1, keepdim=True)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._w(y) * y / self.gram

    def check(self, shape: Sequence[int]) -> None:
        shape = tuple(shape)
        if len(shape) < 1 or shape[0] != self.weights.numel():
            raise ValueError(f"Greyscale with {self.weights.numel()} weights needs examples with "
                             f"{self.weights.numel()} channels (dim 1), got example shape {shape}")


class Downsample(LinearOperator):
    """A x = average pooling of the last two axes by ``factor`` (super-resolution).
    A A^T = I / factor^2, A^+ y = nearest-neighbour upsampling of y."""

    def __init__(self, factor: int):
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got factor={factor!r}")
        self.factor = factor
        self.gram = 1.0 / factor**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor
        lead = x.shape[:-2]
        pooled = F.avg_pool2d(x.reshape((-1, 1) + tuple(x.shape[-2:])), f)
        return pooled.reshape(tuple(lead) + tuple(pooled.shape[-2:]))

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)

    def check(self, shape: Sequence[int]) -> None:
        shape = tuple(shape)
        if len(shape) < 2 or shape[-1] % self.factor or shape[-2] % self.factor:
            raise ValueError(f"Downsample(factor={self.factor}) needs examples whose last two sizes divide "
                             f"by {self.factor}, got example shape {shape}")
