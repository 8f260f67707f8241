"""The attack registry: an attack is one file that defines its options and registers an :class:`AttackSpec`.

Adding an attack: write ``nodeguard/attacks/NAME.py`` with an options dataclass (the
attack's own settings and their defaults, checked in ``__post_init__``), a ``run``
function, and ``ATTACKS.register("NAME", AttackSpec(...))`` at the bottom; then import
the module in ``nodeguard/attacks/__init__.py``. The attack stage, the result store,
``nodeguard attack NAME`` and the sweep find it from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from nodeguard.catalog import Catalog
from nodeguard.errors import ConfigError

# run(model, options, images, labels, seed) -> adversarial images in [0, 1]; the model's
# solver is already pinned to tol_attack, and seed is fixed per batch of the attack set
AttackRunner = Callable[[nn.Module, Any, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """What the attack stage needs to know about one attack."""

    name: str
    version: int  # part of every attack set's key: bump it when the algorithm changes
    options: type  # dataclass of the attack's own settings, with their defaults
    run: AttackRunner
    summary: str
    # a minimal-perturbation attack: its adversarials are moved back to the decision
    # boundary (margin -(kappa + slack)) after the attack; a fixed-budget one is left as is
    refine_to_boundary: bool = False
    # each image's adversarial depends on that image alone (not on the rest of its batch,
    # not on the seed): a sharded run may split a batch's images across processes
    per_image: bool = False

    def option_names(self) -> tuple[str, ...]:
        return tuple(field.name for field in fields(self.options))

    def build_options(self, overrides: dict[str, Any]) -> Any:
        """The attack's options object (its checks run here, once), defaults filled in.

        Raises:
            ConfigError: an option this attack does not take, or a value it refuses.
        """
        unknown = sorted(set(overrides) - set(self.option_names()))
        if unknown:
            raise ConfigError(
                f"{self.name} takes no option {', '.join(unknown)}; its options: {', '.join(self.option_names())}"
            )
        return self.options(**{key: value for key, value in overrides.items() if value is not None})

    def resolve_options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Every option of this attack as a dict, defaults filled in (see :meth:`build_options`)."""
        return asdict(self.build_options(overrides))


ATTACKS: Catalog[AttackSpec] = Catalog("attack")


def require_at_least(name: str, value: int | float | None, low: int | float) -> None:
    """An option check shared by the attacks' option classes."""
    if value is not None and value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}")
