"""Loading a registered model back from the cache (inference needs nothing from training)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nodeguard.errors import RegistryError
from nodeguard.models.networks import ImageClassifier, build_model
from nodeguard.runtime.device import resolve_device
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import ResultStore


@dataclass
class LoadedModel:
    """A registered model in eval mode, with what the stages need to know about it."""

    name: str
    model: ImageClassifier
    config: dict[str, Any]
    device: torch.device
    registry: Registry

    def results(self) -> ResultStore:
        """The model's result store (attack sets, sweep cells, votes, security reports)."""
        return ResultStore(self.registry, self.name)

    @property
    def tol_train(self) -> float:
        return float(self.config["training"]["tol_train"])

    @property
    def dataset(self) -> str:
        return str(self.config["dataset"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the model takes."""
        channels, height, width = self.config["model"]["input_shape"]
        return int(channels), int(height), int(width)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes


def load_model(name: str | None = None, registry: Registry | None = None, device: str = "auto") -> LoadedModel:
    """A trained model in eval mode: ``name``, or the most recently trained one."""
    registry = registry or Registry()
    name = registry.resolve(name)
    entry = registry.get(name)
    if entry.status != "ready":
        raise RegistryError(
            f"model {name!r} has not finished training ({entry.epochs_done}/{entry.epochs} epochs); "
            "run the same `nodeguard train` again to continue it"
        )
    config = registry.read_config(name)
    model = build_model(config["model"])
    checkpoint = registry.read_checkpoint(name)
    try:
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as exc:
        raise RegistryError(f"checkpoint of {name!r} does not fit its config ({str(exc).splitlines()[0]})") from None
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    return LoadedModel(name, model, config, torch_device, registry)
