"""Adversarial attacks against a model whose ODE solver is pinned to one tolerance.

Each attack is one module that registers an :class:`AttackSpec` in :data:`ATTACKS`;
importing this package registers them all.
"""

from . import cw, pgd  # noqa: F401  (registers the attacks)
from .cw import CarliniWagnerL2, CWOptions
from .pgd import PGDOptions
from .pinned import PinnedTolerance, classification_margin
from .spec import ATTACKS, AttackSpec

__all__ = [
    "ATTACKS",
    "AttackSpec",
    "CWOptions",
    "CarliniWagnerL2",
    "PGDOptions",
    "PinnedTolerance",
    "classification_margin",
]
