"""The processes whose time is their noise level (EDM's axis), and the old names of the protocol.

``ContinuousProcess`` is :class:`ddpmkit.core.process.Process`, the one protocol of every process
(the discrete chain included); the name is kept for code written against it.
"""
from __future__ import annotations

from typing import Any

from .process import Process, ProcessDenoiser, check_number, time_dtype

__all__ = ["ContinuousProcess", "SigmaIsTime", "ProcessDenoiser", "check_number", "time_dtype"]

ContinuousProcess = Process


class SigmaIsTime(Process):
    """The processes whose time is their noise level, s(t) = 1 and sigma(t) = t (EDM, Karras et al.
    2022, Table 1; the consistency models of Song et al. 2023 on the same axis): ``t_min`` and
    ``t_max`` are sigma_min and sigma_max, and the prior is N(0, sigma_max^2 I)."""

    @property
    def sigma_min(self) -> float:
        return self.t_min

    @property
    def sigma_max(self) -> float:
        return self.t_max

    @property
    def prior_std(self) -> float:
        return self.t_max

    def _sigma(self, t: Any, xp: Any) -> Any:
        return t * 1.0

    def _scale(self, t: Any, xp: Any) -> Any:
        return xp.ones_like(t)

    def _t_of_sigma(self, sigma: Any, xp: Any) -> Any:
        return sigma * 1.0

    def _dsigma2_dt(self, t: Any, xp: Any) -> Any:
        return 2.0 * t
