"""Adversarial attacks against a model whose ODE solver is pinned to one tolerance."""

from .cw import CarliniWagnerL2
from .pinned import PinnedTolerance, classification_margin

__all__ = ["CarliniWagnerL2", "PinnedTolerance", "classification_margin"]
