"""Evaluating a model held in memory, without the registry (RobustBench's ``benchmark``).

:func:`evaluate_in_memory` runs the same stages as ``nodeguard roc`` and ``nodeguard
security`` on an ``nn.Module`` and images given by the caller, over a model with no
registry: its results are keyed as usual and kept in the model's memory for the
evaluation (nothing is read or written on disk), so each is computed once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from nodeguard.checks import require_tol
from nodeguard.data.datasets import ImageSplit
from nodeguard.defense.votes import Votes, stored_votes
from nodeguard.errors import ConfigError, setting_error
from nodeguard.models.loading import LoadedModel
from nodeguard.models.networks import ComposedODENet
from nodeguard.models.parts import ODEParts
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.device import resolve_device
from nodeguard.stages.attack import make_attack_set
from nodeguard.stages.roc import RocReport, RocSettings, roc_of
from nodeguard.stages.security import SecurityReport, SecuritySettings, compute_security
from nodeguard.storage.registry import model_record

IN_MEMORY_NAME = "in-memory"


@dataclass
class InMemoryEvaluation:
    """What :func:`evaluate_in_memory` found.

    Attributes:
        roc: the ROC report (one curve per V) on the attack set of ``roc_settings.attack``.
        pristine_votes: the defense's votes on the attacked clean images (largest V).
        adversarial_votes: its votes on their successful 8-bit adversarials.
        security: the security report (None when not asked for).
    """

    roc: RocReport
    pristine_votes: Votes
    adversarial_votes: Votes
    security: SecurityReport | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "roc": self.roc.to_dict(),
            "security": None if self.security is None else self.security.to_dict(),
            "pristine": len(self.pristine_votes.predictions),
            "adversarial": len(self.adversarial_votes.predictions),
        }


def _as_levels(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4:
        raise setting_error("images", f"must be shaped (N, C, H, W), not {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.cpu()
    if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
        raise setting_error("images", "must be uint8 levels or finite floats in [0, 1]")
    if float(images.min()) < 0 or float(images.max()) > 1:
        raise setting_error("images", "must lie in [0, 1] (pixels, as the data sets give them)")
    return images.detach().cpu().mul(255).round_().to(torch.uint8)


def evaluate_in_memory(
    model: ComposedODENet | ODEParts,
    images: torch.Tensor,
    labels: torch.Tensor,
    tol_train: float | None = None,
    roc_settings: RocSettings | None = None,
    security_settings: SecuritySettings | None = None,
    device: str = "auto",
    progress: Progress = SILENT,
) -> InMemoryEvaluation:
    """The defense's votes, ROC and (optionally) security rows of a model in memory.

    The paper's protocol (Carrara et al., ICPR 2021 workshops) on the caller's model and
    images, exactly as ``nodeguard roc`` and ``nodeguard security`` run it on a registered
    model: the attack (CW by default) on the images classified correctly alone at
    tol_train, its adversarials verified and rounded to 8 bits, the votes of V tolerances
    drawn log-uniformly in the defense's range. The registry is not read or written.

    Args:
        model: a :class:`~nodeguard.models.networks.ComposedODENet` (nodeguard's ODENet is
            one), or ``ODEParts(features, odefunc, head)`` taking [0, 1] images (then
            ``tol_train`` is required). A copy is evaluated (in eval mode, on ``device``):
            the caller's model is not changed.
        images: (N, C, H, W) uint8 levels, or floats in [0, 1] (rounded to 8-bit levels,
            the grid every adversarial is judged on).
        labels: (N,) integer classes.
        tol_train: the model's solver tolerance (rtol = atol); None means ``model.tol``.
        roc_settings: V values, range, seed and attack; None means ``RocSettings()`` with
            ``count`` = N. A seed of None draws with a fresh secret key (not reproducible):
            give a seed to reproduce a run.
        security_settings: if given, the security report too (its ``count`` images).
        device: "auto", "cpu" or "cuda".
        progress: receives log lines and progress.

    Returns:
        The :class:`InMemoryEvaluation`.

    Raises:
        ConfigError: images or labels of the wrong shape or range, a missing or bad
            tol_train, no image classified correctly, no successful adversarial, a bad device.
        SolverError: the solver cannot meet a tolerance.
    """
    model = copy.deepcopy(model)
    if isinstance(model, ODEParts):
        if tol_train is None:
            raise setting_error("tol_train", "is needed for a model given as parts")
        parameters = [*model.features.parameters(), *model.odefunc.parameters(), *model.head.parameters()]
        with torch.no_grad():  # the ODE keeps the state's shape: the head tells the classes
            probe = images[:1].float() / (255.0 if images.dtype == torch.uint8 else 1.0)
            probe = probe.to(parameters[0].device if parameters else "cpu")
            classes = int(model.head(model.features(probe)).shape[1])
        model = ComposedODENet(
            model.features,
            model.odefunc,
            model.head,
            num_classes=classes,
            in_channels=int(images.shape[1]),
            tol=tol_train,
        )
    if not isinstance(model, ComposedODENet):
        raise ConfigError(f"{type(model).__name__} is not an ODE classifier (ComposedODENet or ODEParts)")
    tol = require_tol("tol_train", float(model.tol if tol_train is None else tol_train))
    levels = _as_levels(images)
    labels = torch.as_tensor(labels).long().cpu().reshape(-1)
    if len(labels) != len(levels):
        raise ConfigError(f"{len(levels)} images but {len(labels)} labels")
    split = ImageSplit(levels, labels)
    torch_device = resolve_device(device)
    model.tol = tol
    model.to(torch_device).eval()
    roc_settings = roc_settings or RocSettings(count=len(split))
    config = model_record(
        IN_MEMORY_NAME, {"arch": model.arch, "input_shape": list(levels.shape[1:])}, {"tol_train": tol}
    )
    loaded = LoadedModel(IN_MEMORY_NAME, model, config, torch_device, None, splits={"test": split, "train": split})
    roc = roc_of(loaded, roc_settings, progress=progress)
    # found again in the model's memory, as the ROC kept them
    attack_set, _report = make_attack_set(roc_settings.attack_settings(), loaded, progress=progress)
    defense = roc_settings.defense()
    pristine, _ = stored_votes(loaded, defense, attack_set.clean, "pristine", progress)
    adversarial, _ = stored_votes(loaded, defense, attack_set.successful_8bit_images(), "adversarial", progress)
    security = compute_security(security_settings, loaded, progress) if security_settings is not None else None
    return InMemoryEvaluation(roc, pristine, adversarial, security)
