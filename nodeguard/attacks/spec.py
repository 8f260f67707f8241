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

from nodeguard.catalog import Catalog
from nodeguard.errors import ConfigError, setting_error

INCOMPLETE_WINDOW = 0.1  # the last tenth of an attack's steps (of its last search over c for CW)
INCOMPLETE_SHRINK = 0.01  # ... over which its smallest adversarial still shrank by more than 1%


@dataclass
class AttackOutcome:
    """What an attack returns when it also reports on its own optimization.

    Attributes:
        adversarial: (N, C, H, W) float32 adversarial images in [0, 1].
        still_improving: (N,) bool, the smallest adversarial found still shrank (L2) by more
            than ``INCOMPLETE_SHRINK`` over the last ``INCOMPLETE_WINDOW`` of the attack's
            steps, or was first found inside them: incomplete optimization (Pintor et al.,
            NeurIPS 2022). None: the attack does not record it.
    """

    adversarial: torch.Tensor
    still_improving: torch.Tensor | None = None


def window_start(steps: int) -> int:
    """The first step of the last ``INCOMPLETE_WINDOW`` of ``steps`` steps (at least one step)."""
    return steps - max(1, round(steps * INCOMPLETE_WINDOW))


def still_shrinking(best_at_window: torch.Tensor, best_now: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the smallest L2 found shrank by more than ``INCOMPLETE_SHRINK`` since the
    window began, or was first found inside it (``best_at_window`` inf, ``best_now`` finite).

    Args:
        best_at_window: (N,) float, the smallest L2 when the window began (inf: none yet).
        best_now: (N,) float, the smallest L2 at the end (inf: none found).
    """
    return torch.isfinite(best_now) & (best_now < (1.0 - INCOMPLETE_SHRINK) * best_at_window)


# run(model, options, images, labels, seed) -> adversarial images in [0, 1] (or an
# AttackOutcome with them); the model's solver is already pinned to tol_attack, and seed is
# fixed per batch of the attack set. An attack that ``takes_start`` is also called with
# ``starts=`` (N, C, H, W) images.
AttackRunner = Callable[..., "torch.Tensor | AttackOutcome"]


@dataclass(frozen=True)
class AttackSpec:
    """What the attack stage needs to know about one attack.

    Attributes:
        name: the registered name ("cw", "fmn", "eot-cw", "apgd-rand", "pgd", "blend").
        version: the algorithm's version, part of every attack set's key.
        options: the dataclass of the attack's own settings (checked in its ``__post_init__``).
        run: ``run(model, options, images, labels, seed)``: ``model`` solves each image
            alone at tol_attack (:class:`~nodeguard.attacks.PinnedTolerance`), ``images``
            (N, C, H, W) float32 in [0, 1], ``labels`` (N,) int64, ``seed`` fixed per batch;
            returns (N, C, H, W) adversarial images in [0, 1], or an :class:`AttackOutcome`
            holding them and the attack's record of its own convergence.
        summary: one line for ``--help`` and listings.
        refine_to_boundary: a minimal-perturbation attack, whose adversarials the stage
            moves back to margin -(kappa + slack).
        per_image: each adversarial depends on its image alone, so a sharded run may
            split a batch across processes.
        takes_start: ``run`` also takes ``starts=``, (N, C, H, W) images in [0, 1] its
            search begins from (another attack set's adversarials) instead of the clean ones.
    """

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
    # run(..., starts=) begins the search from given points (cw, eot-cw)
    takes_start: bool = False

    def option_names(self) -> tuple[str, ...]:
        """The names of the attack's own options, in their dataclass's order."""
        return tuple(field.name for field in fields(self.options))

    def build_options(self, overrides: dict[str, Any]) -> Any:
        """The attack's options object (its checks run here, once), defaults filled in.

        Args:
            overrides: option name -> value; None values keep the default.

        Returns:
            An instance of :attr:`options` (e.g. a ``CWOptions``).

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
        """Every option of this attack as a dict, defaults filled in (see :meth:`build_options`).

        Raises:
            ConfigError: an option this attack does not take, or a value it refuses.
        """
        return asdict(self.build_options(overrides))


# Every attack by name ("cw", "fmn", "eot-cw", "apgd-rand", "pgd", "blend" once nodeguard.attacks
# is imported); ``ATTACKS.get(name)`` raises ConfigError naming the valid ones for an unknown name.
ATTACKS: Catalog[AttackSpec] = Catalog("attack")


def require_at_least(name: str, value: int | float | None, low: int | float) -> None:
    """An option check shared by the attacks' option classes."""
    if value is not None and not value >= low:  # NaN fails too
        raise setting_error(name, f"must be at least {low}, got {value}")
