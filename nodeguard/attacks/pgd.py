"""Projected gradient descent (Madry et al., ICLR 2018) through torchattacks, L-inf or L2.

The WIFS 2019 setting: PGD against an ODE-Net whose solver is pinned to tol_attack.
Options (defaults): ``steps`` (40), ``norm`` (linf or l2), ``eps`` (0.1 for linf, 2.0 for
l2), step size 2.5 eps / steps, random start drawn from the attack set's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torchattacks
from torch import nn

from nodeguard.attacks.spec import ATTACKS, AttackSpec, require_at_least
from nodeguard.checks import require_positive
from nodeguard.errors import unknown_name_error

PGDNorm = Literal["linf", "l2"]
PGD_NORMS: tuple[str, ...] = get_args(PGDNorm)
DEFAULT_EPS: dict[str, float] = {"linf": 0.1, "l2": 2.0}


@dataclass
class PGDOptions:
    """Options of ``nodeguard attack pgd``; ``eps`` None means the norm's default."""

    steps: int = 40
    norm: PGDNorm = "linf"
    eps: float | None = None

    def __post_init__(self) -> None:
        if self.norm not in PGD_NORMS:
            raise unknown_name_error("PGD norm", self.norm, PGD_NORMS)
        require_at_least("steps", self.steps, 1)
        self.eps = require_positive("eps", DEFAULT_EPS[self.norm] if self.eps is None else self.eps)


def make_pgd(model: nn.Module, norm: PGDNorm = "linf", eps: float = 0.1, steps: int = 40, alpha: float | None = None):
    """A torchattacks PGD (``linf``) or PGDL2 (``l2``) with random start; alpha defaults to 2.5 eps / steps."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    if norm == "linf":
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    return torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)


def run_pgd(model: nn.Module, options: PGDOptions, images: torch.Tensor, labels: torch.Tensor, seed: int):
    """PGD with its random start drawn from ``seed`` (the global RNG is left untouched)."""
    assert options.eps is not None  # __post_init__ filled in the norm's default
    attack = make_pgd(model, norm=options.norm, eps=options.eps, steps=options.steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return attack(images, labels)


ATTACKS.register(
    "pgd",
    AttackSpec(name="pgd", version=2, options=PGDOptions, run=run_pgd, summary="PGD, L-inf or L2, random start"),
)
