"""Errors that nodeguard reports to its users as one line, without a traceback."""

from __future__ import annotations


class NodeguardError(Exception):
    """Base class of every error meant for the user: its message is the whole story.

    A message names a setting by its library name in backticks (`` `tol_attack` ``); the
    command line shows the option that sets it instead (``--tol-attack``:
    :func:`nodeguard.cli._errors.with_flags`).
    """


class DataUnavailableError(NodeguardError):
    """A data set is not on disk and cannot be downloaded."""


class RegistryError(NodeguardError):
    """The model registry or a file in it is missing, locked, damaged or foreign."""


class ModelNotFoundError(RegistryError):
    """No model of that name is registered."""


class SolverError(NodeguardError):
    """The ODE solver cannot meet the tolerance asked for (step-size underflow or its step budget)."""


class ImageReadError(NodeguardError):
    """An image file (or path) nodeguard refuses to read, with the reason."""


class StorageError(NodeguardError):
    """A file cannot be written: a full disk, a read-only folder, no permission."""


class ConfigError(NodeguardError):
    """A setting has a value nodeguard cannot use."""


class CheckpointRefusedError(NodeguardError):
    """A checkpoint made by other code that nodeguard will not import, with the reason:
    it needs types beyond the weights (code), or its parameters do not fit the layout."""


def unknown_name_error(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> ConfigError:
    """One message that names the bad value and lists the valid ones (torchdiffeq's habit)."""
    return ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(valid))}")
