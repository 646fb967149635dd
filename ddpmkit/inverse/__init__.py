"""Inverse problems and editing with one unconditional model, over the denoiser contract.

* linear observations y = A x: :class:`Mask` (inpainting), :class:`Greyscale` (colourisation),
  :class:`Downsample` (super-resolution);
* :func:`solve_inverse` / :func:`inpaint` with ``method`` ``"replace"`` (Song et al. 2021,
  app. I.2), ``"repaint"`` (Lugmayr et al. 2022), ``"dps"`` (Chung et al. 2023; Ho et al. 2022
  reconstruction guidance) or ``"smc"`` (SMCDiff, Trippe et al. 2023: asymptotically exact);
* :func:`sdedit` (Meng et al. 2022) and :func:`ddim_edit` (DDIM inversion, then resampling);
* :class:`GaussianOracle`: exact denoisers and exact conditionals of Gaussian (mixture) data,
  against which the methods are measured (tests, ``benchmarks/inverse_oracle.py``).
"""
from .api import METHODS, inpaint, solve_inverse
from .editing import ddim_edit, sdedit
from .operators import Downsample, Greyscale, LinearOperator, Mask
from .oracle import GaussianOracle, gaussian_kl
from .replacement import repaint, repaint_path, replacement
from .dps import dps
from .smc import smc, systematic_resample
from .steps import STEP_SAMPLERS

__all__ = ["METHODS", "solve_inverse", "inpaint", "sdedit", "ddim_edit", "Mask", "Greyscale", "Downsample",
           "LinearOperator", "GaussianOracle", "gaussian_kl", "replacement", "repaint", "repaint_path", "dps",
           "smc", "systematic_resample", "STEP_SAMPLERS"]
