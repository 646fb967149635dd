"""What every feature extractor shares: the contract, the batched extraction loop, safe weight loading.

A feature extractor is an ``nn.Module`` whose ``forward(x)`` maps a batch of data in [-1, 1]
to ``(features, logits)``: features (B, D) for the Frechet distance, KID and precision/recall;
logits (B, C) for accuracy and the IS-style score, or None when the network has no classifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ...io.torch_load import load_weights_only

__all__ = ["FeatureSet", "FeatureExtractor", "IdentityFeatures", "extract_features",
           "load_weights_file", "load_state_dict_checked", "check_image_range"]


@dataclass(frozen=True)
class FeatureSet:
    """Features (N, D) float32 on the CPU, and logits (N, C) where the extractor has them."""

    features: torch.Tensor
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.features.shape[0]


class FeatureExtractor(nn.Module):
    """Base class: ``forward(x) -> (features, logits or None)``; ``name`` and ``feature_dim`` say what."""

    name: str = "features"
    feature_dim: int = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:  # pragma: no cover
        raise NotImplementedError


class IdentityFeatures(FeatureExtractor):
    """Raw coordinates as features (2-D points, vectors): (B, ...) -> (B, prod(...)), no logits."""

    name = "raw"

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.feature_dim:
            raise ValueError(f"x has {flat.shape[1]} values per example, expected {self.feature_dim}")
        return flat, None


def check_image_range(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Images are expected in [-1, 1]; values a little outside (unclipped samples) are clipped.

    Data that looks like [0, 255] codes (beyond +-2) is refused rather than silently misread.
    """
    if x.numel() and float(x.detach().abs().max()) > 2.0:
        raise ValueError(f"{name} must be scaled to [-1, 1], got values up to {float(x.abs().max()):g}")
    return x.clamp(-1.0, 1.0)


@torch.no_grad()
def extract_features(
    extractor: FeatureExtractor,
    data: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int = 256,
    progress: bool = False,
) -> FeatureSet:
    """Run ``extractor`` (in eval mode) over ``data`` (N, ...) in batches, or over an iterable of batches.

    Batches move to the extractor's device; the result is float32 on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = extractor.training
    extractor.eval()
    device = next(iter(extractor.parameters()), torch.empty(0)).device
    batches = data.split(batch_size) if isinstance(data, torch.Tensor) else data
    total = -(-len(data) // batch_size) if isinstance(data, torch.Tensor) else None
    features, logits = [], []
    try:
        for batch in tqdm(batches, total=total, desc=f"{extractor.name} features", disable=not progress):
            f, l = extractor(batch.to(device=device, dtype=torch.float32))
            features.append(f.float().cpu())
            if l is not None:
                logits.append(l.float().cpu())
    finally:
        extractor.train(was_training)
    if not features:
        raise ValueError("data is empty: no batches to extract features from")
    return FeatureSet(torch.cat(features), torch.cat(logits) if logits else None)


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state dict from ``.safetensors``, or from a ``.pt``/``.pth`` through ``torch.load(weights_only=True)``.

    A pickle is never run as code: ``weights_only=True`` only rebuilds tensors and plain
    containers, and refuses anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise ValueError(f"weights file must be .safetensors, .pt, .pth or .bin, got {path.name}")
    try:
        state = load_weights_only(path)   # torch.load(weights_only=True), quiet when it refuses
    except Exception as error:  # UnpicklingError and friends, on anything but plain tensors
        raise ValueError(f"{path.name} is not a plain tensor state dict ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} must hold a mapping of parameter names to tensors")
    return dict(state)


def load_state_dict_checked(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                            optional: Iterable[str] = (), ignore_suffixes: Iterable[str] = ()) -> list[str]:
    """Load ``state`` into ``module`` strictly, with a one-line error naming what does not fit.

    ``optional``: key prefixes that may be absent (left as initialised). ``ignore_suffixes``:
    keys ending so are dropped from both sides (e.g. BatchNorm's ``num_batches_tracked``).
    Returns the optional keys that were absent.
    """
    optional, ignore_suffixes = tuple(optional), tuple(ignore_suffixes)
    expected = {k: v for k, v in module.state_dict().items() if not k.endswith(ignore_suffixes)}
    given = {k: v for k, v in state.items() if not k.endswith(ignore_suffixes)}
    missing = sorted(k for k in expected if k not in given and not k.startswith(optional))
    unexpected = sorted(k for k in given if k not in expected)
    for keys, what in ((missing, "is missing"), (unexpected, "has unexpected")):
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            raise ValueError(f"{source} {what} {len(keys)} key(s): {shown}")
    for key, value in given.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    absent = sorted(k for k in expected if k not in given)
    module.load_state_dict(given, strict=False)
    return absent
