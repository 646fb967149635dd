"""Inception-v3 as used for FID: 2048-d pool3 features (Szegedy et al. 2016; Heusel et al. 2017).

This is the network of the TensorFlow FID graph (inception-2015-12-05) in the layout of the
PyTorch port that pytorch-fid distributes, written here from the architecture: the
torchvision-style module names (``Conv2d_1a_3x3``, ``Mixed_5b`` ...) so that its weight file
loads as is. Where the FID graph differs from torchvision's ImageNet model, it is followed:
average pools in the mixed blocks do not count padding, the last block pools by max, and the
classifier has 1008 outputs.

Weights are never downloaded: pass a file (``--inception-weights PATH``), either safetensors or
pytorch-fid's ``pt_inception-2015-12-05-*.pth`` (read with ``torch.load(weights_only=True)``).
Images in [-1, 1] are resized to 299x299 (bilinear, no antialiasing, as pytorch-fid does), which
is the range the network expects; grayscale is repeated to 3 channels.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import FeatureExtractor, check_image_range, load_state_dict_checked, load_weights_file

__all__ = ["FIDInceptionV3", "InceptionFeatures", "load_inception", "INCEPTION_SIZE"]

INCEPTION_SIZE = 299
Size = int | tuple[int, int]


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3), ReLU: the unit every Inception layer is made of."""

    def __init__(self, cin: int, cout: int, kernel: Size, stride: int = 1, padding: Size = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pool, stride 1, that averages only the pixels inside the image (FID graph)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def max_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


def chain(x: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


class Mixed35(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1 -> 224 + pool_features."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            chain(x, self.branch5x5_1, self.branch5x5_2),
            chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(avg_pool_3x3(x)),
        ], dim=1)


class Reduce35to17(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 768."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


class Mixed17(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-e): 4 x 192 = 768 channels."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of a 1x7 and a 7x1
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, width, 1)
        self.branch7x7_2 = ConvBN(width, width, row[0], padding=row[1])
        self.branch7x7_3 = ConvBN(width, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = ConvBN(cin, width, 1)
        self.branch7x7dbl_2 = ConvBN(width, width, col[0], padding=col[1])
        self.branch7x7dbl_3 = ConvBN(width, width, row[0], padding=row[1])
        self.branch7x7dbl_4 = ConvBN(width, width, col[0], padding=col[1])
        self.branch7x7dbl_5 = ConvBN(width, 192, row[0], padding=row[1])
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                  self.branch7x7dbl_4, self.branch7x7dbl_5),
            self.branch_pool(avg_pool_3x3(x)),
        ], dim=1)


class Reduce17to8(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 1280."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            chain(x, self.branch3x3_1, self.branch3x3_2),
            chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


class Mixed8(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs (Mixed_7b/c): 320 + 768 + 768 + 192 = 2048.

    ``pool`` is the pooling before the pool branch: average (Mixed_7b) or max (Mixed_7c, FID graph).
    """

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = {"avg": avg_pool_3x3, "max": max_pool_3x3}[pool]
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        narrow = self.branch3x3_1(x)
        deep = chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(narrow), self.branch3x3_2b(narrow),
            self.branch3x3dbl_3a(deep), self.branch3x3dbl_3b(deep),
            self.branch_pool(self.pool(x)),
        ], dim=1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the FID graph: (B, 3, 299, 299) in [-1, 1] -> pool3 (B, 2048); ``fc`` -> 1008 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = Mixed35(192, pool_features=32)
        self.Mixed_5c = Mixed35(256, pool_features=64)
        self.Mixed_5d = Mixed35(288, pool_features=64)
        self.Mixed_6a = Reduce35to17(288)
        self.Mixed_6b = Mixed17(768, width=128)
        self.Mixed_6c = Mixed17(768, width=160)
        self.Mixed_6d = Mixed17(768, width=160)
        self.Mixed_6e = Mixed17(768, width=192)
        self.Mixed_7a = Reduce17to8(768)
        self.Mixed_7b = Mixed8(1280, pool="avg")
        self.Mixed_7c = Mixed8(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-d average-pooled activations of the last block (FID's features)."""
        x = chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = F.max_pool2d(x, 3, stride=2)
        x = chain(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = F.max_pool2d(x, 3, stride=2)
        x = chain(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                  self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool3(x))


def prepare_images(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """(B, 1 or 3, H, W) in [-1, 1] -> (B, 3, size, size): clip, repeat grayscale, bilinear resize."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must have shape (B, 1 or 3, H, W), got {tuple(x.shape)}")
    x = check_image_range(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return x


class InceptionFeatures(FeatureExtractor):
    """FID Inception as a feature extractor: ``x -> (pool3 (B, 2048), logits (B, 1008) or None)``.

    Logits exist when the weights held the classifier (``fc``). As in Salimans et al.'s IS code
    they are ``pool3 @ fc.weight.T`` without the bias unless ``logits_bias=True``.
    """

    name = "inception-v3-pool3"
    feature_dim = 2048

    def __init__(self, network: FIDInceptionV3, has_logits: bool = True, logits_bias: bool = False,
                 size: int = INCEPTION_SIZE) -> None:
        super().__init__()
        self.network = network.eval()
        self.has_logits = has_logits
        self.logits_bias = logits_bias
        self.size = size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.network.pool3(prepare_images(x, self.size))
        if not self.has_logits:
            return features, None
        fc = self.network.fc
        return features, F.linear(features, fc.weight, fc.bias if self.logits_bias else None)


def load_inception(weights: str | Path, device: str | torch.device = "cpu",
                   logits_bias: bool = False) -> InceptionFeatures:
    """The FID Inception from a user's weights file (.safetensors, or a .pth/.pt state dict).

    Every convolution and BatchNorm tensor must be present with the right shape; ``fc`` may be
    absent (then there are no logits); BatchNorm's ``num_batches_tracked`` is ignored.
    """
    network = FIDInceptionV3()
    path = Path(weights)
    absent = load_state_dict_checked(network, load_weights_file(path), source=path.name,
                                     optional=("fc.",), ignore_suffixes=("num_batches_tracked",))
    return InceptionFeatures(network, has_logits=not absent, logits_bias=logits_bias).to(device)
