"""Putting models that nodeguard did not train into the registry.

:func:`register_ode_classifier` registers any ODE classifier given as three parts and a
parts factory (:mod:`nodeguard.models.parts`); :func:`import_checkpoint` reads a
checkpoint written by torchdiffeq's example or by neural-ode-features
(:mod:`nodeguard.models.foreign`) and registers it the same way. Both classify the data
set's test split, each image alone at tol_train, so that the user sees at once whether
the model is the one they trained.
"""

from __future__ import annotations

import hashlib
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from nodeguard.checks import require_count, require_tol
from nodeguard.constants import METRICS_FILE
from nodeguard.data.datasets import (
    dataset_empty_test_classes,
    dataset_fingerprint,
    dataset_info,
    dataset_skipped,
    load_dataset,
)
from nodeguard.errors import CheckpointRefusedError, ConfigError, RegistryError
from nodeguard.models.evaluation import classify_alone
from nodeguard.models.foreign import FACTORY, FORMATS, READERS, ForeignModel
from nodeguard.models.networks import ComposedODENet, build_model, composed_config
from nodeguard.models.parts import ODEParts, factory_name, resolve_factory
from nodeguard.plain import to_plain
from nodeguard.progress import SILENT, Progress
from nodeguard.runtime.device import resolve_device
from nodeguard.storage.files import display_path
from nodeguard.storage.images import SkippedFile
from nodeguard.storage.registry import ModelEntry, Registry, model_record, now_iso


@dataclass
class RegisteredModel:
    """A model that entered the registry without `nodeguard train`.

    Attributes:
        name: its registered name.
        dataset: the data set it classifies.
        tol_train: its solver tolerance (rtol = atol), the one it was trained at.
        test_error: error rate in [0, 1] on the test split, each image alone at tol_train.
        mean_nfe: mean function evaluations per test image.
        count: test images classified.
        source: where it came from (format, file and its SHA-256, the checkpoint's settings).
        path: its folder in the registry.
        skipped: for a ``folder:`` data set, each entry its scan left out (hidden names,
            files that are not images, ...).
        empty_test_classes: for a ``folder:`` data set, the classes its test split lacks
            (the test error says nothing about them).
    """

    name: str
    dataset: str
    tol_train: float
    test_error: float
    mean_nfe: float
    count: int
    source: dict[str, Any]
    path: str
    skipped: list[SkippedFile] = field(default_factory=list)
    empty_test_classes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", to_plain(self))


def _copy_weights(model: ComposedODENet, parts: ODEParts, spec: str) -> None:
    pairs = (("features", model.downsampling, parts.features), ("odefunc", model.odeblock.func, parts.odefunc))
    for label, rebuilt, given in (*pairs, ("head", model.head, parts.head)):
        try:
            rebuilt.load_state_dict(given.state_dict(), strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0]
            raise ConfigError(
                f"the {label} part built by {spec!r} does not fit the given one ({detail}); "
                "pass the {factory_kwargs} that built the given parts",
                settings="factory_kwargs",
            ) from None


def register_ode_classifier(
    parts: ODEParts,
    factory: Callable[..., Any] | str,
    dataset: str,
    tol_train: float,
    name: str,
    factory_kwargs: dict[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    t_end: float = 1.0,
    source: dict[str, Any] | None = None,
    registry: Registry | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    test_limit: int | None = None,
    progress: Progress = SILENT,
) -> RegisteredModel:
    """Register an ODE classifier given as three trained parts, so every command works on it.

    logits = head(h(T)), h(0) = features((x - mean) / std), dh/dt = odefunc(t, h) over
    [0, T] with dopri5 per sample (:class:`nodeguard.models.networks.ComposedODENet`).
    config.yaml records ``factory`` and ``factory_kwargs``; checkpoint.pt holds the weights
    (weights-only). Loading the model later imports the factory's module and calls it, and
    runs nothing else: keep that module importable wherever the model is used.

    Args:
        parts: the trained ``ODEParts(features, odefunc, head)``; ``odefunc`` must accept
            t shaped (B, 1, ..., 1) as well as a scalar.
        factory: a function marked with :func:`nodeguard.ode_parts_factory`, defined at the
            top level of an importable module (or its ``"module:function"`` name), that
            returns parts of the same shapes with fresh weights.
        dataset: the data set the model classifies (its test split is evaluated now).
        tol_train: the solver tolerance the model was trained at (rtol = atol), in
            [1e-6, 10]; every command's default tolerance.
        name: the registered name (letters, digits, '.', '_', '+', '-'); must be new.
        factory_kwargs: the factory's keyword arguments (plain YAML values).
        mean, std: per-channel normalisation of the [0, 1] images, applied inside the
            model (default 0 and 1: the parts see [0, 1] images).
        t_end: the end time T of the integration (default 1).
        source: where the model came from, stored in config.yaml.
        registry: where to register it; None means ``Registry()``.
        data_dir: where mnist, cifar10 and the other torchvision sets are looked for.
        device: where the test split is classified: "auto", "cpu" or "cuda".
        test_limit: classify only the first N test images (None: all).
        progress: reports the evaluation of the test split.

    Returns:
        The :class:`RegisteredModel`, with the test error at tol_train.

    Raises:
        ConfigError: an unknown data set, a tolerance outside [1e-6, 10], mean/std of the
            wrong length or a std of zero, a bad ``t_end`` or ``test_limit``, factory
            arguments YAML cannot store, a factory that is not marked or not importable,
            parts the factory does not rebuild, or parts that do not take the data set's images.
        RegistryError: an invalid or already registered name; a cache root that is a file.
        StorageError: the registry cannot be written (read-only for this user), said
            before any image is classified.
        DataUnavailableError: the data set is not on disk.
        SolverError: the solver cannot meet tol_train on a test image.
    """
    registry = registry or Registry()
    require_tol("tol_train", tol_train)
    info = dataset_info(dataset)
    dataset = info.name
    spec = factory if isinstance(factory, str) else factory_name(factory)
    resolve_factory(spec)
    for label, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != info.channels:
            raise ConfigError(
                f"{{{label}}} needs {info.channels} values for {dataset}'s images, not {len(values)}",
                settings=label,
            )
    if std is not None and any(float(value) == 0.0 for value in std):
        raise ConfigError("{std} must not hold a zero", settings="std")
    require_count("test_limit", test_limit)
    config_model = composed_config(
        spec, factory_kwargs or {}, info.num_classes, info.input_shape, tol_train, mean, std, t_end
    )
    try:  # config.yaml must give back exactly these arguments
        stored_ok = yaml.safe_load(yaml.safe_dump(config_model)) == config_model
    except yaml.YAMLError:
        stored_ok = False
    if not stored_ok:
        raise ConfigError(
            "{factory_kwargs} must be plain YAML values (numbers, strings, booleans, lists, dicts), "
            f"got {factory_kwargs!r}",
            settings="factory_kwargs",
        )
    if registry.exists(name):
        raise RegistryError(f"a model named {name!r} is already registered; choose another name or remove it first")
    registry.model_dir(name)
    with registry.locked():  # a registry that cannot take the model says so now, before the test split is classified
        pass
    model = build_model(config_model)
    assert isinstance(model, ComposedODENet)
    _copy_weights(model, parts, spec)
    model.to(resolve_device(device)).eval()
    try:
        with torch.no_grad():
            probe = torch.zeros(1, *info.input_shape, device=next(model.normalize.buffers()).device)
            logits = model.head(model.downsampling(model.normalize(probe)))
    except RuntimeError as exc:
        raise ConfigError(
            f"the model does not take {dataset}'s {'x'.join(map(str, info.input_shape))} images "
            f"({str(exc).strip().splitlines()[0][:160]})"
        ) from None
    if tuple(logits.shape) != (1, info.num_classes):
        raise ConfigError(
            f"the model gives {tuple(logits.shape)[1:]} logits per image; {dataset} has {info.num_classes} classes"
        )

    started = time.perf_counter()
    test = load_dataset(dataset, data_dir).test.subset(test_limit)
    task = progress.task(f"{name}: test split, each image alone at tol {tol_train:g}", len(test))
    predictions, nfes = [], []
    for first in range(0, len(test), 250):
        classified = classify_alone(model, test.float_images(slice(first, first + 250)))
        batch_predictions, batch_nfe = classified.predictions, classified.nfe
        predictions.append(batch_predictions)
        nfes.append(batch_nfe)
        task.advance(len(batch_predictions))
    task.close()
    predicted = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
    nfe = torch.cat(nfes).float() if nfes else torch.zeros(0)
    count = len(test)
    error = float((predicted != test.labels).sum()) / max(count, 1)
    mean_nfe = float(nfe.mean()) if count else 0.0
    seconds = time.perf_counter() - started

    source = dict(source or {"format": "python", "factory": spec})
    created = now_iso()
    training = {"tol_train": float(tol_train), "epochs": 0, "imported": True}
    config = model_record(
        dataset, config_model, training, created=created, fingerprint=dataset_fingerprint(dataset), source=source
    )
    with registry.exclusive(name, purpose="imported"):
        if registry.exists(name):
            raise RegistryError(f"a model named {name!r} is already registered; choose another name or remove it first")
        registry.write_config(name, config)
        weights = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        registry.write_checkpoint(name, {"epoch": 0, "model": weights})
        metrics = {"test_error": error, "nfe": mean_nfe, "count": count, "seconds": seconds, "tol_train": tol_train}
        registry.write_json(name, METRICS_FILE, metrics)
        entry = ModelEntry(name, ComposedODENet.arch, dataset, "ready", 0, 0, test_error=error, created=created)
        registry.put(entry)
    skipped = [SkippedFile(display_path(path), reason) for path, reason in dataset_skipped(dataset)]
    return RegisteredModel(
        name,
        dataset,
        float(tol_train),
        error,
        mean_nfe,
        count,
        source,
        str(registry.model_dir(name)),
        skipped,
        dataset_empty_test_classes(dataset),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_foreign(path: str | Path, format: str) -> ForeignModel:
    """Read a foreign checkpoint into parts without registering it.

    Args:
        path: the checkpoint file.
        format: "torchdiffeq-example" or "neural-ode-features".

    Returns:
        The :class:`nodeguard.models.foreign.ForeignModel`: parts with the weights, the
        stored tolerance and normalisation (None where the checkpoint does not say).

    Raises:
        ConfigError: an unknown format.
        CheckpointRefusedError: an unsafe or unreadable file, or parameters that do not fit.
    """
    if format not in READERS:
        raise ConfigError(f"unknown checkpoint format {format!r}; choose one of: {', '.join(FORMATS)}")
    return READERS[format](Path(path))


def import_checkpoint(
    path: str | Path,
    format: str,
    dataset: str,
    name: str | None = None,
    tol_train: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    t_end: float = 1.0,
    registry: Registry | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    test_limit: int | None = None,
    progress: Progress = SILENT,
) -> RegisteredModel:
    """Import a Neural ODE checkpoint trained by other code (``nodeguard models import``).

    Reads it weights-only (:mod:`nodeguard.models.foreign`), rebuilds the network, takes
    tol_train and the input normalisation from the checkpoint where it stores them, and
    registers it with :func:`register_ode_classifier`, which evaluates the test split.

    Args:
        path: the checkpoint file.
        format: "torchdiffeq-example" (rtqichen/torchdiffeq, examples/odenet_mnist.py) or
            "neural-ode-features" (fabiocarrara/neural-ode-features, train.py).
        dataset: the data set it classifies (channels and classes must fit the weights).
        name: the registered name; None means ``<format>-<dataset>``.
        tol_train: the training tolerance, needed only when the checkpoint does not store
            it; one that contradicts the stored value is refused.
        mean, std: the per-channel normalisation the training code applied to [0, 1]
            images, needed only when the checkpoint does not say (a neural-ode-features
            CIFAR-10 run without ``augmentation``, a torchdiffeq example changed to take
            colour images); one that contradicts the stored settings is refused.
        t_end: the end time T the model was trained to integrate to (neither code stores
            it; both use 1 unless changed).
        registry, data_dir, device, test_limit, progress: see :func:`register_ode_classifier`.

    Returns:
        The :class:`RegisteredModel`.

    Raises:
        CheckpointRefusedError: unsafe (needs code), unreadable, not an ODE-Net, or its
            parameters do not fit the format's layout (the first mismatch is named).
        ConfigError: an unknown format or data set, a missing or contradicting tol_train
            or normalisation, or weights whose channels or classes do not fit the data set.
        RegistryError, DataUnavailableError, SolverError: see :func:`register_ode_classifier`.
    """
    path = Path(path).expanduser()
    if tol_train is not None:
        require_tol("tol_train", tol_train)
    info = dataset_info(dataset)
    foreign = read_foreign(path, format)
    if foreign.in_channels != info.channels or foreign.num_classes != info.num_classes:
        raise ConfigError(
            f"the checkpoint takes {foreign.in_channels}-channel images into {foreign.num_classes} classes; "
            f"{dataset} has {info.channels}-channel images in {info.num_classes} classes"
        )
    if foreign.tol is not None and tol_train is not None and abs(foreign.tol - tol_train) > 1e-12 * foreign.tol:
        raise ConfigError(
            f"the checkpoint was trained at tol {foreign.tol:g}; {{tol_train}} {tol_train:g} contradicts it",
            settings="tol_train",
        )
    tol = foreign.tol if foreign.tol is not None else tol_train
    if tol is None:
        raise ConfigError(
            "the checkpoint does not store its training tolerance; give {tol_train}", settings="tol_train"
        )
    given = (tuple(map(float, mean)) if mean is not None else None, tuple(map(float, std)) if std is not None else None)
    if foreign.mean is not None and foreign.std is not None:
        stored = (tuple(foreign.mean), tuple(foreign.std))
        for label, value, known in (("mean", given[0], stored[0]), ("std", given[1], stored[1])):
            if value is not None and value != tuple(known):
                raise ConfigError(
                    f"the checkpoint's training code normalised with {label} {list(known)}; "
                    f"{{{label}}} {list(value)} contradicts it",
                    settings=label,
                )
        mean, std = stored
    elif given[0] is None or given[1] is None:
        raise ConfigError(
            "the checkpoint does not say how its training code normalised the images; give {mean} and {std} "
            "(per channel, as torchvision's Normalize took them; 0 and 1 for none)",
            settings=("mean", "std"),
        )
    if not path.is_file():  # read_foreign has opened it; a race is not worth more
        raise CheckpointRefusedError(f"{path} does not exist")
    source = {
        "format": format,
        "file": str(path.resolve()),
        "sha256": _sha256(path),
        "factory": FACTORY,
        "settings": foreign.settings,
    }
    return register_ode_classifier(
        foreign.parts,
        FACTORY,
        dataset,
        tol,
        name or f"{format}-{info.slug}",
        factory_kwargs=foreign.factory_kwargs,
        mean=mean,
        std=std,
        t_end=t_end,
        source=source,
        registry=registry,
        data_dir=data_dir,
        device=device,
        test_limit=test_limit,
        progress=progress,
    )
