"""A model read from a published checkpoint format (diffusers, OpenAI improved/guided-diffusion),
already translated into ddpmkit's terms: a U-Net config, a state dict that loads into
:class:`ddpmkit.nets.unet.UNet` with ``strict=True``, and the discrete process it was trained with
(Ho et al. 2020, "Denoising Diffusion Probabilistic Models"; Nichol & Dhariwal 2021, "Improved
Denoising Diffusion Probabilistic Models").

The readers (:func:`ddpmkit.published.diffusers_format.read_diffusers`,
:func:`ddpmkit.published.openai_format.read_openai`) return it; :func:`ddpmkit.published.convert.import_checkpoint`
writes it as an ordinary ddpmkit run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:   # annotations only: keeps this module free of heavy imports and import cycles
    import torch

    from ..nets.unet import UNetConfig
    from ..training.run_config import DiffusionConfig

__all__ = ["ImportedModel", "check_same_keys"]


@dataclass(frozen=True)
class ImportedModel:
    """A published checkpoint in ddpmkit's terms.

    Attributes:
        network: the ddpmkit U-Net config (:class:`ddpmkit.nets.unet.UNetConfig`).
        state_dict: tensors under the keys of ddpmkit's ``UNet`` (loads with ``strict=True``).
        diffusion: the process (:class:`ddpmkit.training.run_config.DiffusionConfig`, ``process="discrete"``).
        clip_x0: whether the source clipped the predicted x_0 to [-1, 1] when sampling
            (diffusers' ``clip_sample``, OpenAI's ``clip_denoised``).
        source: where it came from, e.g. ``"diffusers:/path/to/folder"`` or ``"openai:/path/model.pt"``.
    """

    network: UNetConfig
    state_dict: dict[str, torch.Tensor]
    diffusion: DiffusionConfig
    clip_x0: bool
    source: str


def check_same_keys(expected: Iterable[str], state_dict: Mapping[str, Any], owner: str) -> None:
    """A one-line ValueError naming the first key that is in one of ``expected`` and ``state_dict``
    but not the other (an exporter's check that the weights fit the network ``owner`` describes)."""
    odd = sorted(set(expected) ^ set(state_dict))
    if odd:
        raise ValueError(f"state_dict does not fit the {owner}: key {odd[0]!r} is missing or extra")
