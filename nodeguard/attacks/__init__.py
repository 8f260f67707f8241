"""Adversarial attacks against a model whose ODE solver is pinned to one tolerance.

Each attack is one module that registers an :class:`AttackSpec` in :data:`ATTACKS`;
importing this package registers them all.
"""

from nodeguard.attacks import apgd_rand, blend, cw, eot_cw, fmn, pgd, square  # noqa: F401  (registers the attacks)
from nodeguard.attacks.apgd_rand import APGDRandOptions, RandomTolerance
from nodeguard.attacks.blend import BlendOptions
from nodeguard.attacks.cw import CarliniWagnerL2, CWOptions
from nodeguard.attacks.eot_cw import EOTCarliniWagnerL2, EOTCWOptions, ToleranceDraws
from nodeguard.attacks.fmn import FastMinimumNormL2, FMNOptions
from nodeguard.attacks.pgd import PGDOptions
from nodeguard.attacks.pinned import PinnedTolerance, classification_margin
from nodeguard.attacks.spec import ATTACKS, AttackSpec
from nodeguard.attacks.square import SquareOptions

__all__ = [
    "APGDRandOptions",
    "ATTACKS",
    "BlendOptions",
    "AttackSpec",
    "CWOptions",
    "CarliniWagnerL2",
    "EOTCWOptions",
    "EOTCarliniWagnerL2",
    "FMNOptions",
    "FastMinimumNormL2",
    "PGDOptions",
    "PinnedTolerance",
    "RandomTolerance",
    "SquareOptions",
    "ToleranceDraws",
    "classification_margin",
]
