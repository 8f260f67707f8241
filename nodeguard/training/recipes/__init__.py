"""Training recipes as YAML files: the shipped ones (``default``, ``paper``) and the user's.

A recipe is a mapping of :class:`nodeguard.training.train.TrainConfig` settings, with three
reserved keys: ``description`` (free text), ``datasets`` (per-data-set settings that
apply on top when training that data set) and, in a user's file only, ``recipe`` (the
shipped recipe it starts from). The settings a model is trained with resolve, each
layer overriding the one before::

    TrainConfig defaults < shipped recipe < its datasets[DATASET]
                         < the --config file < its datasets[DATASET] < command-line options

The resolved settings are the model's identity (its ``training`` section); where they
came from is kept beside them (:func:`resolve_training` returns both).
"""

from __future__ import annotations

from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from nodeguard.errors import ConfigError

DEFAULT_RECIPE = "default"
DEFAULT_DATASET = "mnist5k"
RESERVED_KEYS = ("description", "datasets", "recipe")


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship with nodeguard."""
    folder = resources.files(__package__)
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """A recipe file's mapping (a ConfigError, not a traceback, when it is not one)."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of training settings, got {type(loaded).__name__}")
    return loaded


def shipped_recipe(name: str) -> dict[str, Any]:
    """The shipped recipe ``name``; an unknown name lists the valid ones."""
    names = shipped_recipes()
    if name not in names:
        raise ConfigError(f"unknown recipe {name!r}; valid: {', '.join(names)}")
    with resources.as_file(resources.files(__package__) / f"{name}.yaml") as path:
        return read_recipe_file(path)


def _setting_types() -> dict[str, type]:
    from nodeguard.training.train import TrainConfig

    hints = get_type_hints(TrainConfig)
    types: dict[str, type] = {}
    for field in fields(TrainConfig):
        if not field.init:
            continue
        types[field.name] = _plain_type(hints[field.name])
    return types


def _plain_type(hint: Any) -> type:
    """The YAML-facing type of a setting: bool, int, float or str (a Literal of strings is str)."""
    if get_origin(hint) is Literal:
        return type(get_args(hint)[0])
    if isinstance(hint, type) and hint in (bool, int, float, str):
        return hint
    for part in get_args(hint):  # X | None
        if part is not type(None):
            return _plain_type(part)
    raise TypeError(f"setting type {hint!r} has no YAML form")


def _coerce(setting: str, value: Any, kind: type, source: str) -> Any:
    """``value`` as the setting's type (YAML reads 1e-3 as a string)."""
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if not isinstance(value, bool):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
    elif isinstance(value, str):
        return value
    raise ConfigError(f"{source}: {setting} must be {kind.__name__}, got {value!r}")


def _layer(recipe: dict[str, Any], dataset: str, source: str) -> dict[str, Any]:
    """The settings one recipe sets for ``dataset``: its top level, then its datasets[dataset]."""
    types = _setting_types()
    per_dataset = recipe.get("datasets") or {}
    if not isinstance(per_dataset, dict):
        raise ConfigError(f"{source}: datasets must map data-set names to settings")
    layers = [(recipe, source), (per_dataset.get(dataset) or {}, f"{source} (datasets.{dataset})")]
    values: dict[str, Any] = {}
    for mapping, where in layers:
        for setting, value in mapping.items():
            if setting in RESERVED_KEYS and mapping is recipe:
                continue
            if setting not in types:
                valid = ", ".join(sorted(types))
                raise ConfigError(f"{where}: unknown setting {setting!r}; valid: {valid}")
            values[setting] = _coerce(setting, value, types[setting], where)
    return values


def resolve_training(
    dataset: str | None = None,
    recipe: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
):
    """(TrainConfig, provenance): the settings to train with, and where they came from.

    ``overrides`` are the options given on the command line (None values are ignored,
    so an option left out never overrides a file).
    """
    from nodeguard.training.train import TrainConfig

    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    user = read_recipe_file(config_file) if config_file is not None else {}
    base_name = recipe or user.get("recipe") or DEFAULT_RECIPE
    base = shipped_recipe(str(base_name))
    dataset = dataset or overrides.pop("dataset", None) or user.get("dataset") or base.get("dataset") or DEFAULT_DATASET
    values = _layer(base, dataset, f"recipe {base_name!r}")
    from_file = _layer(user, dataset, str(config_file)) if config_file is not None else {}
    values.update(from_file)
    values.update(overrides)
    values["dataset"] = dataset
    config = TrainConfig(**values)
    provenance = {
        "name": str(base_name),
        "file": str(config_file) if config_file is not None else None,
        "from_file": from_file,
        "overrides": overrides,
    }
    return config, provenance
