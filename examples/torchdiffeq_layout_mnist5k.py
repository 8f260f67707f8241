"""Train an ODE-Net in the layout of torchdiffeq's examples/odenet_mnist.py, outside nodeguard.

A model made by other code, for `nodeguard models import --format torchdiffeq-example`:
the same nn.Sequential (downsampling stem, one ODE block holding ``odefunc``, GroupNorm /
ReLU / average-pool / flatten / Linear head), integrated over [0, 1] by torchdiffeq's
``odeint`` at rtol = atol = --tol, and saved as that script saves it:
``torch.save({'state_dict': model.state_dict(), 'args': args}, path)`` with ``args`` an
``argparse.Namespace``. Only the digits come from nodeguard (the bundled mnist5k, as
uint8 tensors); the network, the training loop and the file are this script's own.

    python examples/torchdiffeq_layout_mnist5k.py --save out/byo/model.pth
    nodeguard models import out/byo/model.pth --format torchdiffeq-example --dataset mnist5k

The torchdiffeq example trains 160 epochs of SGD on all of MNIST; this script trains
15 epochs of AdamW on the 4000 bundled training digits (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn
from torchdiffeq import odeint


def norm(dim: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, dim), dim)


class ResBlock(nn.Module):
    """Pre-activation residual block; ``downsample`` maps the activated input for the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.norm1 = norm(inplanes)
        self.downsample = downsample
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.norm2 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(x))
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv2(torch.relu(self.norm2(self.conv1(out))))
        return out + shortcut


class ConcatConv2d(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self._layer = nn.Conv2d(dim_in + 1, dim_out, 3, 1, 1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._layer(torch.cat([torch.ones_like(x[:, :1]) * t, x], 1))


class ODEfunc(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1, self.conv1 = norm(dim), ConcatConv2d(dim, dim)
        self.norm2, self.conv2 = norm(dim), ConcatConv2d(dim, dim)
        self.norm3 = norm(dim)
        self.nfe = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.conv1(t, torch.relu(self.norm1(x)))
        return self.norm3(self.conv2(t, torch.relu(self.norm2(out))))


class ODEBlock(nn.Module):
    def __init__(self, odefunc: nn.Module, tol: float):
        super().__init__()
        self.odefunc = odefunc
        self.tol = tol
        self.integration_time = torch.tensor([0.0, 1.0])  # a plain attribute, as in the example

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.integration_time.type_as(x)
        return odeint(self.odefunc, x, t, rtol=self.tol, atol=self.tol)[1]


def build(downsampling_method: str, tol: float, channels: int = 1, filters: int = 64) -> nn.Sequential:
    """The example's network: stem, ODE block, head, in one nn.Sequential."""
    if downsampling_method == "conv":
        stem = [
            nn.Conv2d(channels, filters, 3, 1),
            norm(filters),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 4, 2, 1),
            norm(filters),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 4, 2, 1),
        ]
    else:
        stem = [
            nn.Conv2d(channels, filters, 3, 1),
            ResBlock(filters, filters, 2, nn.Conv2d(filters, filters, 1, 2, bias=False)),
            ResBlock(filters, filters, 2, nn.Conv2d(filters, filters, 1, 2, bias=False)),
        ]
    head = [norm(filters), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(filters, 10)]
    return nn.Sequential(*stem, ODEBlock(ODEfunc(filters), tol), *head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # the example's own arguments (they travel in the checkpoint as `args`)
    parser.add_argument("--network", type=str, choices=["odenet"], default="odenet")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--adjoint", type=eval, default=False, choices=[True, False])
    parser.add_argument("--downsampling-method", type=str, default="conv", choices=["conv", "res"])
    parser.add_argument("--nepochs", type=int, default=15)
    parser.add_argument("--data_aug", type=eval, default=False, choices=[True, False])
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--test_batch_size", type=int, default=1000)
    parser.add_argument("--save", type=str, default="./out/byo/model.pth")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from nodeguard import load_dataset  # the digits only

    torch.manual_seed(args.seed)
    data = load_dataset("mnist5k")
    train_x, train_y = data.train.float_images(), data.train.labels
    test_x, test_y = data.test.float_images(), data.test.labels
    model = build(args.downsampling_method, args.tol)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.nepochs * ((len(train_x) + args.batch_size - 1) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    for epoch in range(args.nepochs):
        model.train()
        start = time.time()
        order = torch.randperm(len(train_x))
        for first in range(0, len(order), args.batch_size):
            index = order[first : first + args.batch_size]
            loss = nn.functional.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            predictions = torch.cat([model(test_x[i : i + 500]).argmax(1) for i in range(0, len(test_x), 500)])
        error = float((predictions != test_y).float().mean())
        seconds = time.time() - start
        print(f"epoch {epoch + 1}/{args.nepochs}: loss {loss.item():.3f}, test error {error:.2%} ({seconds:.0f} s)")
    os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "args": args}, args.save)  # exactly as the example saves
    print(f"saved {args.save}")


if __name__ == "__main__":
    main()
