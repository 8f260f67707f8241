"""The building blocks of the paper's networks (Carrara et al., neural-ode-features).

GroupNorm with min(32, C) groups, pre-activation residual blocks, time-concatenated
convolutions, the ODE function f(t, h), the downsampling stem and the classifier head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(32, C) groups, as in the paper's code."""
    return nn.GroupNorm(min(32, channels), channels)


class Normalize(nn.Module):
    """Per-channel normalisation kept inside the model, so inputs stay in [0, 1]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ResBlock(nn.Module):
    """Pre-activation residual block (GN, ReLU, conv3x3, GN, ReLU, conv3x3)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.norm2(out)))
        return out + shortcut


class ConcatConv2d(nn.Module):
    """3x3 convolution that sees the time t as one extra constant input channel.

    The convolution is that of ``cat([t * ones, x])`` (channel 0 the time, zero-padded
    like the rest), computed without building the concatenation: the time channel's part
    is linear in t, t times the convolution of a ones map with the time channel's weights.
    One convolution on the C state channels, one on a single ones map, and one fused
    multiply-add replace a copy of every state into a (C + 1)-channel tensor. The result
    equals the concatenated convolution's up to float rounding (sums taken in another
    order); ``conv`` keeps the (C + 1)-channel weights, so checkpoints are unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, 3, 1, 1)

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """(N, out_channels, H, W) of the time ``t`` (a scalar, or (N, 1, 1, 1) one per sample) and x (N, C, H, W)."""
        conv = self.conv
        weight = conv.weight
        state_part = F.conv2d(x, weight[:, 1:], conv.bias, conv.stride, conv.padding, conv.dilation)
        time_map = F.conv2d(torch.ones_like(x[:1, :1]), weight[:, :1], None, conv.stride, conv.padding, conv.dilation)
        if not isinstance(t, torch.Tensor):
            return state_part + t * time_map
        return torch.addcmul(state_part, t.to(x.dtype), time_map)


class ODEFunc(nn.Module):
    """f(t, h) = GN(conv(ReLU(GN(conv(ReLU(GN(h))))))) with time-concatenated convs.

    Stateless (the solver's block counts evaluations), so ``torch.compile`` can trace it.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = group_norm(channels)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(h)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


def downsampling(in_channels: int, filters: int) -> nn.Sequential:
    """Conv3x3 (no padding) then two stride-2 residual blocks: 28x28 -> 7x7 for MNIST."""
    return nn.Sequential(
        nn.Conv2d(in_channels, filters, 3, 1),
        ResBlock(filters, filters, stride=2),
        ResBlock(filters, filters, stride=2),
    )


def classifier_head(filters: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """GN, ReLU, global average pool, (Dropout,) Linear.

    The dropout layer is there only when ``dropout > 0``, so heads without it keep the
    parameter names of models trained before it existed.
    """
    layers: list[nn.Module] = [group_norm(filters), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(filters, num_classes))
    return nn.Sequential(*layers)
