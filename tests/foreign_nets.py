"""Networks in the layouts of other codes, written here from their descriptions, and saved
as those codes save them; plus a parts factory for the bring-your-own-model tests.

- torchdiffeq's examples/odenet_mnist.py: the repository's own script
  examples/torchdiffeq_layout_mnist5k.py builds that layout (loaded from its file here).
- fabiocarrara/neural-ode-features: :class:`NodeFeaturesNet` below.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from torch import nn
from torchdiffeq import odeint

from nodeguard.models.parts import ODEParts, ode_parts_factory

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "torchdiffeq_layout_mnist5k.py"


def torchdiffeq_layout():
    """The example script as a module (its ``build``, ``ResBlock``, ``ODEfunc``, ``norm``)."""
    spec = importlib.util.spec_from_file_location("torchdiffeq_layout_mnist5k", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_torchdiffeq(net: nn.Module, path: Path, tol: float, stem: str, **extra) -> Path:
    """As the example saves: the state_dict and its argparse.Namespace."""
    args = argparse.Namespace(network="odenet", tol=tol, adjoint=False, downsampling_method=stem, **extra)
    torch.save({"state_dict": net.state_dict(), "args": args}, path)
    return path


class _Module(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


class _NodeFeaturesBlock(nn.Module):
    def __init__(self, odefunc: nn.Module, tol: float):
        super().__init__()
        self.odefunc, self.tol = odefunc, tol

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tensor([0.0, 1.0]).type_as(x)
        return odeint(self.odefunc, x, t, rtol=self.tol, atol=self.tol)[-1]


class NodeFeaturesNet(nn.Module):
    """neural-ode-features' ODENet: ``downsample.module``, ``odeblock.odefunc``, ``classifier.module``."""

    def __init__(self, in_ch: int, filters: int, downsample: str, dropout: float, tol: float, out: int = 10):
        super().__init__()
        layout = torchdiffeq_layout()
        norm = layout.norm
        if downsample == "residual":
            stem = [
                nn.Conv2d(in_ch, 64, 3, 1),
                layout.ResBlock(64, 64, 2, nn.Conv2d(64, 64, 1, 2, bias=False)),
                layout.ResBlock(64, filters, 2, nn.Conv2d(64, filters, 1, 2, bias=False)),
            ]
        else:
            width = 24 if downsample == "minimal" else 64
            stem = [
                nn.Conv2d(in_ch, width, 3, 1),
                norm(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 4, 2, 1),
                norm(width),
                nn.ReLU(),
                nn.Conv2d(width, filters, 4, 2, 1),
            ]
        head = [norm(filters), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1))]
        head += [nn.Dropout(dropout)] if dropout else []
        head += [nn.Flatten(), nn.Linear(filters, out)]
        self.downsample = _Module(nn.Sequential(*stem))
        self.odeblock = _NodeFeaturesBlock(layout.ODEfunc(filters), tol)
        self.classifier = _Module(nn.Sequential(*head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.module(self.odeblock(self.downsample.module(x)))


def save_node_features(net: NodeFeaturesNet, path: Path, params: dict) -> Path:
    """As neural-ode-features' train.py saves: epoch, params (vars(args)), model, optim, metrics."""
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.rand(2, net.downsample.module[0].in_channels, 28, 28)).sum().backward()
    optimizer.step()
    params = {"device": torch.device("cpu"), "cuda": False, **params}
    checkpoint = {
        "epoch": 3,
        "params": params,
        "model": net.state_dict(),
        "optim": optimizer.state_dict(),
        "metrics": {"epoch": 3, "loss": 0.5, "acc": 0.9},
    }
    torch.save(checkpoint, path)
    return path


@torch.no_grad()
def alone(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The other code's logits, each image through its own forward (torchdiffeq's odeint)."""
    return torch.cat([net(images[i : i + 1]) for i in range(len(images))])


@ode_parts_factory
def small_parts(channels: int, filters: int, classes: int) -> ODEParts:
    """A user's own ODE classifier: a strided conv stem, a tanh-conv ODE function, a linear head."""
    return ODEParts(
        nn.Sequential(nn.Conv2d(channels, filters, 3, 2, 1), nn.ReLU(), nn.Conv2d(filters, filters, 3, 2, 1)),
        _TanhConv(filters),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(filters, classes)),
    )


class _TanhConv(nn.Module):
    def __init__(self, filters: int):
        super().__init__()
        self.conv = nn.Conv2d(filters, filters, 3, 1, 1)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(h)) * (1 + t)  # t: a scalar, or (B, 1, 1, 1) per sample


def unmarked_parts(channels: int, filters: int, classes: int) -> ODEParts:
    """The same parts, without the mark: a config.yaml naming it must be refused."""
    return small_parts(channels, filters, classes)
