"""Adversarial attacks against a model whose ODE solver is pinned to one tolerance.

Each attack is one module that registers an :class:`AttackSpec` in :data:`ATTACKS`;
importing this package registers them all.
"""

from . import apgd_rand, blend, cw, eot_cw, pgd  # noqa: F401  (registers the attacks)
from .apgd_rand import APGDRandOptions, RandomTolerance
from .blend import BlendOptions
from .cw import CarliniWagnerL2, CWOptions
from .eot_cw import EOTCarliniWagnerL2, EOTCWOptions, ToleranceDraws
from .pgd import PGDOptions
from .pinned import PinnedTolerance, classification_margin
from .spec import ATTACKS, AttackSpec

__all__ = [
    "APGDRandOptions",
    "ATTACKS",
    "BlendOptions",
    "AttackSpec",
    "CWOptions",
    "CarliniWagnerL2",
    "EOTCWOptions",
    "EOTCarliniWagnerL2",
    "PGDOptions",
    "PinnedTolerance",
    "RandomTolerance",
    "ToleranceDraws",
    "classification_margin",
]
