"""Networks: the DDPM/iDDPM/ADM U-Net, a residual MLP, a 1-D U-Net for sequences and a point
network for point clouds. They know nothing about diffusion: each is ``model(x, t, **cond) -> tensor``
(``y=None`` class labels; ``partial=None`` for a conditional point network).

    from ddpmkit.nets import UNetConfig, build_network
    net = build_network(UNetConfig.iddpm_cifar10())           # 52.5M parameters, 6 channels out
    saved = network_config_to_dict(net.config)               # JSON-ready, with "kind"
    same = build_network(network_config_from_dict(saved))
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from torch import nn

from .layers import SinusoidalEmbedding, sinusoidal_frequencies, timestep_embedding
from .mlp import MLP, MLPConfig
from .pointnet import PointNet, PointNetConfig
from .pvcnn import PVCNN, PVCNNConfig
from .unet import UNet, UNetConfig
from .unet1d import UNet1D, UNet1DConfig

__all__ = [
    "UNet",
    "UNetConfig",
    "MLP",
    "MLPConfig",
    "PointNet",
    "PointNetConfig",
    "PVCNN",
    "PVCNNConfig",
    "UNet1D",
    "UNet1DConfig",
    "NetworkConfig",
    "NETWORK_KINDS",
    "build_network",
    "compile_for_inference",
    "network_config_to_dict",
    "network_config_from_dict",
    "SinusoidalEmbedding",
    "sinusoidal_frequencies",
    "timestep_embedding",
]

NetworkConfig = UNetConfig | MLPConfig | PointNetConfig | UNet1DConfig | PVCNNConfig
NETWORK_KINDS: Mapping[str, type] = MappingProxyType(
    {"unet": UNetConfig, "mlp": MLPConfig, "pointnet": PointNetConfig, "unet1d": UNet1DConfig,
     "pvcnn": PVCNNConfig})
"""The one registry of network kinds: ``{kind: config class}``, the ``kind`` a saved config carries."""
_NETWORKS: dict[type, type[nn.Module]] = {UNetConfig: UNet, MLPConfig: MLP, PointNetConfig: PointNet,
                                         UNet1DConfig: UNet1D, PVCNNConfig: PVCNN}


def build_network(config: NetworkConfig) -> nn.Module:
    """The network a config describes: :class:`UNet` for a UNetConfig, :class:`MLP` for an MLPConfig,
    :class:`PointNet` for a PointNetConfig, :class:`UNet1D` for a UNet1DConfig."""
    network = _NETWORKS.get(type(config))
    if network is None:
        names = [cls.__name__ for cls in NETWORK_KINDS.values()]
        raise ValueError(f"config must be one of {names}, got {type(config).__name__}")
    return network(config)


def network_config_to_dict(config: NetworkConfig) -> dict[str, Any]:
    """``{"kind": "unet" | "mlp" | "pointnet" | "unet1d", **config.to_dict()}``: plain JSON values."""
    for kind, cls in NETWORK_KINDS.items():
        if type(config) is cls:
            return {"kind": kind, **config.to_dict()}
    names = [cls.__name__ for cls in NETWORK_KINDS.values()]
    raise ValueError(f"config must be one of {names}, got {type(config).__name__}")


def network_config_from_dict(d: Mapping[str, Any]) -> NetworkConfig:
    """Inverse of :func:`network_config_to_dict` (validates keys and types)."""
    if not isinstance(d, Mapping) or d.get("kind") not in NETWORK_KINDS:
        kind = d.get("kind") if isinstance(d, Mapping) else d
        raise ValueError(f"kind must be one of {list(NETWORK_KINDS)}, got kind={kind!r}")
    fields = {k: v for k, v in d.items() if k != "kind"}
    return NETWORK_KINDS[d["kind"]].from_dict(fields)


def compile_for_inference(network: nn.Module, device: Any) -> nn.Module:
    """``torch.compile`` a network for sampling or evaluation. On CUDA the mode is
    "reduce-overhead": CUDA graphs replay the whole network per call, which removes the launch
    overhead of a sampler's many small calls (keep the batch size fixed so the graph is reused);
    elsewhere the default inductor mode. The first calls pay the compile time."""
    import torch

    cuda = torch.device(device).type == "cuda"
    compiled = torch.compile(network, mode="reduce-overhead" if cuda else None)
    return _ClonedOutput(compiled) if cuda else compiled


class _ClonedOutput(nn.Module):
    """A CUDA-graph network whose output is copied out of the graph's static buffer: the next
    replay overwrites that buffer, and multistep samplers (Heun, DPM-Solver++) keep the previous
    output (an x0-predicting network's output *is* the denoised estimate they keep)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.network(*args, **kwargs).clone()
