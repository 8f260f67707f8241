"""Projected gradient descent (Madry et al., ICLR 2018) through torchattacks, L-inf or L2.

The WIFS 2019 setting: PGD against an ODE-Net whose solver is pinned to tol_attack.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from ..errors import unknown_name_error

PGD_NORMS = ("linf", "l2")


def make_pgd(model: nn.Module, norm: str = "linf", eps: float = 0.1, steps: int = 40, alpha: float | None = None):
    """A torchattacks PGD (``linf``) or PGDL2 (``l2``) with random start; alpha defaults to 2.5 eps / steps."""
    if norm not in PGD_NORMS:
        raise unknown_name_error("PGD norm", norm, PGD_NORMS)
    alpha = 2.5 * eps / steps if alpha is None else alpha
    if norm == "linf":
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    return torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)


def run_pgd(attack, images: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Run a torchattacks attack with its random start drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return attack(images, labels)
