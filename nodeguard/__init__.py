"""nodeguard: adversarial robustness of Neural ODE image classifiers with tolerance randomization.

The public API, one name per concept; ``import nodeguard`` stays cheap (torch and the rest
load on first use of a name, PEP 562)::

    import nodeguard as ng

    ng.train_model(ng.TrainConfig(dataset="mnist5k"))               # register "odenet-mnist5k"
    loaded = ng.load_model("odenet-mnist5k")
    report = ng.run_attack(ng.AttackSettings(attack="cw", count=20), model="odenet-mnist5k")
    defense = ng.ToleranceRandomization(loaded.model, ng.DefenseSettings(votes=15, vmin=12))
    roc = ng.run_roc(ng.RocSettings(votes=(5, 10, 15, 20), attack="fmn"), model="odenet-mnist5k")

The paper: Carrara, Caldelli, Falchi, Amato, "Defending Neural ODE Image Classifiers from
Adversarial Attacks with Tolerance Randomization", ICPR 2021 workshops.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nodeguard.constants import __version__

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "NodeguardError": "nodeguard.errors",
    "ConfigError": "nodeguard.errors",
    "DataUnavailableError": "nodeguard.errors",
    "RegistryError": "nodeguard.errors",
    "ModelNotFoundError": "nodeguard.errors",
    "SolverError": "nodeguard.errors",
    "StorageError": "nodeguard.errors",
    "ImageReadError": "nodeguard.errors",
    "CheckpointRefusedError": "nodeguard.errors",
    # storage
    "Registry": "nodeguard.storage.registry",
    "ResultStore": "nodeguard.storage.results",
    "read_image": "nodeguard.storage.images",
    "read_image_frames": "nodeguard.storage.images",
    # data
    "load_dataset": "nodeguard.data.datasets",
    "Dataset": "nodeguard.data.datasets",
    "ImageSplit": "nodeguard.data.datasets",
    # models
    "ODENet": "nodeguard.models.networks",
    "ResNet": "nodeguard.models.networks",
    "ImageClassifier": "nodeguard.models.networks",
    "ComposedODENet": "nodeguard.models.networks",
    "ODEParts": "nodeguard.models.parts",
    "ode_parts_factory": "nodeguard.models.parts",
    "register_ode_classifier": "nodeguard.models.importing",
    "import_checkpoint": "nodeguard.models.importing",
    "RegisteredModel": "nodeguard.models.importing",
    "create_model": "nodeguard.models.networks",
    "load_model": "nodeguard.models.loading",
    "LoadedModel": "nodeguard.models.loading",
    "solve_per_sample": "nodeguard.models.solver",
    "logits_alone": "nodeguard.models.evaluation",
    "classify_alone": "nodeguard.models.evaluation",
    "AloneClassification": "nodeguard.models.evaluation",
    "classification_margin": "nodeguard.models.evaluation",
    # training
    "TrainConfig": "nodeguard.training.train",
    "TrainResult": "nodeguard.training.train",
    "train_model": "nodeguard.training.train",
    # attacks
    "ATTACKS": "nodeguard.attacks",
    "AttackSpec": "nodeguard.attacks",
    "CarliniWagnerL2": "nodeguard.attacks",
    "EOTCarliniWagnerL2": "nodeguard.attacks",
    "FastMinimumNormL2": "nodeguard.attacks",
    "PinnedTolerance": "nodeguard.attacks",
    # defense
    "DefenseSettings": "nodeguard.defense.randomization",
    "ToleranceRange": "nodeguard.defense.randomization",
    "ToleranceRandomization": "nodeguard.defense.randomization",
    "Votes": "nodeguard.defense.randomization",
    "draw_tolerances": "nodeguard.defense.randomization",
    "defend_paths": "nodeguard.defense.files",
    "SmoothingSettings": "nodeguard.defense.smoothing",
    "MarginSpread": "nodeguard.defense.spread",
    "rate_interval": "nodeguard.intervals",
    "Rate": "nodeguard.intervals",
    "to_plain": "nodeguard.plain",
    "from_plain": "nodeguard.plain",
    # stages
    "AttackSettings": "nodeguard.experiments.attack_sets",
    "AttackSet": "nodeguard.experiments.attack_sets",
    "AttackReport": "nodeguard.experiments.attack_sets",
    "load_attack_set": "nodeguard.stages.attack_sets",
    "run_attack": "nodeguard.stages.attack",
    "SweepSettings": "nodeguard.stages.sweep",
    "run_sweep": "nodeguard.stages.sweep",
    "GridSettings": "nodeguard.stages.grid",
    "run_grid": "nodeguard.stages.grid",
    "RocSettings": "nodeguard.stages.roc",
    "RocCurve": "nodeguard.experiments.roc",
    "RocPoint": "nodeguard.experiments.roc",
    "run_roc": "nodeguard.stages.roc",
    "SecuritySettings": "nodeguard.stages.security",
    "SecurityRow": "nodeguard.experiments.security",
    "run_security": "nodeguard.stages.security",
    "CertifySettings": "nodeguard.stages.certify",
    "CertifyReport": "nodeguard.stages.certify",
    "run_certify": "nodeguard.stages.certify",
    "evaluate_in_memory": "nodeguard.stages.in_memory",
    "InMemoryEvaluation": "nodeguard.stages.in_memory",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nodeguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and editors see
    from nodeguard.attacks import (
        ATTACKS,
        AttackSpec,
        CarliniWagnerL2,
        EOTCarliniWagnerL2,
        FastMinimumNormL2,
        PinnedTolerance,
    )
    from nodeguard.data.datasets import Dataset, ImageSplit, load_dataset
    from nodeguard.defense.files import defend_paths
    from nodeguard.defense.randomization import (
        DefenseSettings,
        ToleranceRandomization,
        ToleranceRange,
        Votes,
        draw_tolerances,
    )
    from nodeguard.defense.smoothing import SmoothingSettings
    from nodeguard.defense.spread import MarginSpread
    from nodeguard.errors import (
        CheckpointRefusedError,
        ConfigError,
        DataUnavailableError,
        ImageReadError,
        ModelNotFoundError,
        NodeguardError,
        RegistryError,
        SolverError,
        StorageError,
    )
    from nodeguard.experiments.attack_sets import AttackReport, AttackSet, AttackSettings
    from nodeguard.experiments.roc import RocCurve, RocPoint
    from nodeguard.experiments.security import SecurityRow
    from nodeguard.intervals import Rate, rate_interval
    from nodeguard.models.evaluation import AloneClassification, classification_margin, classify_alone, logits_alone
    from nodeguard.models.importing import RegisteredModel, import_checkpoint, register_ode_classifier
    from nodeguard.models.loading import LoadedModel, load_model
    from nodeguard.models.networks import ComposedODENet, ImageClassifier, ODENet, ResNet, create_model
    from nodeguard.models.parts import ODEParts, ode_parts_factory
    from nodeguard.models.solver import solve_per_sample
    from nodeguard.plain import from_plain, to_plain
    from nodeguard.stages.attack import run_attack
    from nodeguard.stages.attack_sets import load_attack_set
    from nodeguard.stages.certify import CertifyReport, CertifySettings, run_certify
    from nodeguard.stages.grid import GridSettings, run_grid
    from nodeguard.stages.in_memory import InMemoryEvaluation, evaluate_in_memory
    from nodeguard.stages.roc import RocSettings, run_roc
    from nodeguard.stages.security import SecuritySettings, run_security
    from nodeguard.stages.sweep import SweepSettings, run_sweep
    from nodeguard.storage.images import read_image, read_image_frames
    from nodeguard.storage.registry import Registry
    from nodeguard.storage.results import ResultStore
    from nodeguard.training.train import TrainConfig, TrainResult, train_model
