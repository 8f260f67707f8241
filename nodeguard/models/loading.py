"""Loading a registered model back from the cache (inference needs nothing from training)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodeguard.data.datasets import ImageSplit, check_fingerprint, load_dataset
from nodeguard.errors import RegistryError, UnfinishedModelError
from nodeguard.models.networks import ImageClassifier, build_model
from nodeguard.runtime.device import resolve_device
from nodeguard.storage.registry import Registry
from nodeguard.storage.results import ResultStore


@dataclass
class LoadedModel:
    """A registered model in eval mode, with what the stages need to know about it.

    Attributes:
        name: the model's registered name.
        model: the network, in eval mode, on ``device``.
        config: its config.yaml (sections ``model``, ``training``, ``dataset``, ...).
        device: where the model's weights are.
        registry: the registry it was loaded from (where its results are kept); None for
            a model held in memory, whose results are kept in ``memory`` (nothing on disk).
        splits: images given in memory instead of its data set's ("train", "test"); None
            means the data set named in its config, loaded when a stage asks.
        memory_key: the key of the defense's secret draws of a model held in memory (made
            at random, once, when there is no registry whose key to use).
        memory: the results of a model held in memory (no registry), by kind and key.
    """

    name: str
    model: ImageClassifier
    config: dict[str, Any]
    device: torch.device
    registry: Registry | None
    splits: dict[str, ImageSplit] | None = None
    memory_key: bytes | None = field(default=None, repr=False)
    memory: dict[tuple[str, str, str], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.registry is None and self.memory_key is None:
            self.memory_key = secrets.token_bytes(32)

    def split(self, name: str, data_dir: str | Path | None = None) -> ImageSplit:
        """The images of split ``name`` ("train" or "test") that the stages work on.

        Raises:
            ConfigError: an unknown split name, or one not given in memory.
            DataUnavailableError: the data set is not on disk and cannot be downloaded, or a
                ``folder:`` set's files changed since the model was made on them.
        """
        if self.splits is not None:
            if name not in self.splits:
                from nodeguard.errors import unknown_name_error

                raise unknown_name_error("split", name, sorted(self.splits))
            return self.splits[name]
        check_fingerprint(self.dataset, self.config.get("dataset_fingerprint"), self.name)
        return load_dataset(self.dataset, data_dir).split(name)

    def results(self) -> ResultStore:
        """The model's result store (attack sets, sweep cells, votes, security reports); for a
        model held in memory, one that keeps them in ``memory``.

        Raises:
            RegistryError: the model's name is not a valid model name.
        """
        return ResultStore(self.registry, self.name, self.memory if self.registry is None else None)

    @property
    def tol_train(self) -> float:
        """The solver tolerance the model was trained at (its config's ``training.tol_train``)."""
        return float(self.config["training"]["tol_train"])

    @property
    def dataset(self) -> str:
        """The registered data set the model was trained on ("mnist5k", "mnist", "cifar10")."""
        return str(self.config["dataset"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the model takes."""
        channels, height, width = self.config["model"]["input_shape"]
        return int(channels), int(height), int(width)

    @property
    def num_classes(self) -> int:
        """Number of classes (logits per image)."""
        return self.model.num_classes


def load_model(name: str | None = None, registry: Registry | None = None, device: str = "auto") -> LoadedModel:
    """A trained model in eval mode: ``name``, or the most recently trained one.

    Args:
        name: a registered model name; None means the most recently trained ready model.
        registry: where to look; None means ``Registry()`` at the default cache root.
        device: "auto" (CUDA when available, else the CPU), "cpu" or "cuda"; in a sharded
            job each process takes the GPU of its local rank.

    Returns:
        The ``LoadedModel``: the network rebuilt from its config with its checkpoint's
        weights, in eval mode on the device.

    Raises:
        ModelNotFoundError: ``name`` is not registered (or None and no model is ready), or
            its config.yaml is missing.
        RegistryError: the model has not finished training, its config or checkpoint is
            missing, damaged or does not fit, or the index stayed locked for 60 s.
        ConfigError: an unknown ``device``, "cuda" without a GPU, an unknown architecture
            in the config, or malformed ``RANK``/``WORLD_SIZE`` variables.
    """
    registry = registry or Registry()
    name = registry.resolve(name)
    entry = registry.get(name)
    if entry.status != "ready":
        raise UnfinishedModelError(
            f"model {name!r} has not finished training ({entry.epochs_done}/{entry.epochs} epochs)"
        )
    config = registry.read_config(name)
    try:
        model = build_model(config["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"the config.yaml of {name!r} is damaged ({exc.__class__.__name__}: {exc})") from None
    checkpoint = registry.read_checkpoint(name)
    try:
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as exc:
        raise RegistryError(f"checkpoint of {name!r} does not fit its config ({str(exc).splitlines()[0]})") from None
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    return LoadedModel(name, model, config, torch_device, registry)
