"""The paper's ODE-Net and its ResNet baseline.

Both share a downsampling stem (a 3x3 conv and two stride-2 pre-activation residual
blocks) and a head (GroupNorm, ReLU, global average pool, Linear). The ODE-Net puts one
ODE block between them, integrated over t in [0, 1] by an adaptive solver whose
tolerance (rtol = atol = tol) is an explicit attribute of the block, overridable for one
call through ``forward(x, tol=...)`` without touching any global state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint

from .errors import unknown_name_error
from .solver import solve_per_sample

DEFAULT_SOLVER = "dopri5"


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(32, C) groups, as in the paper's code."""
    return nn.GroupNorm(min(32, channels), channels)


class Normalize(nn.Module):
    """Per-channel normalisation kept inside the model, so inputs stay in [0, 1]."""

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
    """3x3 convolution that sees the time t as one extra constant input channel."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, 3, 1, 1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time_channel = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([time_channel, x], dim=1))


class ODEFunc(nn.Module):
    """f(t, h) = GN(conv(ReLU(GN(conv(ReLU(GN(h))))))) with time-concatenated convs.

    Counts its own evaluations in ``nfe``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = group_norm(channels)
        self.nfe = 0

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.conv1(t, torch.relu(self.norm1(h)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    """Integrates ``func`` from t=0 to t=1 with an adaptive solver at tolerance ``tol``.

    ``tol`` is the default tolerance (rtol = atol = tol); ``forward(h, tol=...)`` uses
    another one for that call only. ``last_nfe`` holds the number of function
    evaluations of the latest forward pass.
    """

    def __init__(self, func: ODEFunc, tol: float = 1e-3, method: str = DEFAULT_SOLVER):
        super().__init__()
        self.func = func
        self.tol = float(tol)
        self.method = method
        self.last_nfe = 0
        self.register_buffer("integration_time", torch.tensor([0.0, 1.0]), persistent=False)

    def forward(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        tol = self.tol if tol is None else float(tol)
        if h.shape[0] == 0:
            self.last_nfe = 0
            return h
        start = self.func.nfe
        t = self.integration_time.to(h.dtype)
        out = odeint(self.func, h, t, rtol=tol, atol=tol, method=self.method)[1]
        self.last_nfe = self.func.nfe - start
        return out


def downsampling(in_channels: int, filters: int) -> nn.Sequential:
    """Conv3x3 (no padding) then two stride-2 residual blocks: 28x28 -> 7x7 for MNIST."""
    return nn.Sequential(
        nn.Conv2d(in_channels, filters, 3, 1),
        ResBlock(filters, filters, stride=2),
        ResBlock(filters, filters, stride=2),
    )


def classifier_head(filters: int, num_classes: int) -> nn.Sequential:
    """GN, ReLU, global average pool, Linear."""
    return nn.Sequential(
        group_norm(filters),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(filters, num_classes),
    )


class ImageClassifier(nn.Module):
    """normalise -> downsampling -> feature block -> head; inputs are images in [0, 1]."""

    arch = "base"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        filters: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        mean = [0.0] * in_channels if mean is None else list(mean)
        std = [1.0] * in_channels if std is None else list(std)
        self.normalize = Normalize(mean, std)
        self.downsampling = downsampling(in_channels, filters)
        self.head = classifier_head(filters, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The downsampled features h(0) that the feature block starts from."""
        return self.downsampling(self.normalize(x))

    def classify_features(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        return self.classify_features(self.features(x), tol=tol)


class ODENet(ImageClassifier):
    """The paper's ODE-Net: downsampling, one ODE block solved at tolerance ``tol``, head."""

    arch = "odenet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        filters: int = 64,
        tol: float = 1e-3,
        method: str = DEFAULT_SOLVER,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__(in_channels, num_classes, filters, mean, std)
        self.odeblock = ODEBlock(ODEFunc(filters), tol=tol, method=method)

    @property
    def tol(self) -> float:
        return self.odeblock.tol

    @tol.setter
    def tol(self, value: float) -> None:
        self.odeblock.tol = float(value)

    @property
    def last_nfe(self) -> int:
        return self.odeblock.last_nfe

    def classify_features(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        return self.head(self.odeblock(h, tol=tol))

    def classify_features_per_sample(self, h: torch.Tensor, tols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, NFE per sample): sample i solved at ``tols[i]`` on its own steps.

        Each sample steps as torchdiffeq would solve it alone (:mod:`nodeguard.solver`),
        whatever else is in the batch.
        """
        solution = solve_per_sample(self.odeblock.func, h, tols)
        return self.head(solution.y1), solution.nfe


class ResNet(ImageClassifier):
    """The ResNet baseline: the same stem and head, six residual blocks in between.

    It has no solver: ``tol`` is accepted and ignored so callers can treat both alike.
    """

    arch = "resnet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        filters: int = 64,
        blocks: int = 6,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **_ignored: Any,
    ):
        super().__init__(in_channels, num_classes, filters, mean, std)
        self.blocks = nn.Sequential(*[ResBlock(filters, filters) for _ in range(blocks)])
        self.last_nfe = 0

    def classify_features(self, h: torch.Tensor, tol: float | None = None) -> torch.Tensor:
        return self.head(self.blocks(h))


MODELS: dict[str, Callable[..., ImageClassifier]] = {}


def register_model(name: str) -> Callable[[Callable[..., ImageClassifier]], Callable[..., ImageClassifier]]:
    """Register a model constructor under ``name`` for :func:`create_model`."""

    def decorator(factory: Callable[..., ImageClassifier]) -> Callable[..., ImageClassifier]:
        MODELS[name] = factory
        return factory

    return decorator


register_model("odenet")(ODENet)
register_model("resnet")(ResNet)


def create_model(arch: str, **kwargs: Any) -> ImageClassifier:
    """Build a registered model; keyword arguments that are None keep the model's defaults."""
    if arch not in MODELS:
        raise unknown_name_error("architecture", arch, list(MODELS))
    return MODELS[arch](**{key: value for key, value in kwargs.items() if value is not None})


def is_ode_model(model: nn.Module) -> bool:
    """True when the model has a solver whose tolerance matters."""
    return isinstance(model, ODENet)
