"""Errors that nodeguard reports to its users as one line, without a traceback."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def _library_name(setting: str) -> str:
    return f"`{setting}`"


class NodeguardError(Exception):
    """Base class of every error meant for the user: its message is the whole story.

    The settings an error is about travel as a field, ``settings`` (library names such as
    ``"tol_attack"``); the message refers to each as a ``{name}`` placeholder. ``str()``
    shows a setting by its library name in backticks (`` `tol_attack` ``); the command line
    renders the same error with the option that sets it (``--tol-attack``), found from its
    own parameters (:mod:`nodeguard.cli._errors`).

    Args:
        message: the text; ``{name}`` for each name in ``settings``.
        settings: the settings the message is about, one name or several.
    """

    def __init__(self, message: str, *, settings: str | Sequence[str] = ()) -> None:
        self.template = message
        self.settings: tuple[str, ...] = (settings,) if isinstance(settings, str) else tuple(settings)
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = _library_name) -> str:
        """The message with each setting shown as ``name(setting)``."""
        text = self.template
        for setting in self.settings:
            text = text.replace("{" + setting + "}", name(setting))
        return text

    def renamed(self, names: dict[str, str]) -> NodeguardError:
        """The same error about other settings: each setting in ``names`` becomes its value
        (an attack's ``kappa`` is ``kappas`` in the security evaluation, say)."""
        template, settings = self.template, []
        for setting in self.settings:
            other = names.get(setting, setting)
            template = template.replace("{" + setting + "}", "{" + other + "}")
            settings.append(other)
        return _rebuild(type(self), template, tuple(settings))

    def __reduce__(self):  # pickled across ranks with its settings
        return (_rebuild, (type(self), self.template, self.settings))


def _rebuild(kind: type[NodeguardError], template: str, settings: tuple[str, ...]) -> NodeguardError:
    error = kind.__new__(kind)
    NodeguardError.__init__(error, template, settings=settings)
    return error


def setting_error(setting: str, problem: str) -> ConfigError:
    """``setting`` has a value nodeguard cannot use: "{setting} {problem}"."""
    return ConfigError("{" + setting + "} " + problem, settings=setting)


class DataUnavailableError(NodeguardError):
    """A data set is not on disk and cannot be downloaded."""


class RegistryError(NodeguardError):
    """The model registry or a file in it is missing, locked, damaged or foreign."""


class ModelNotFoundError(RegistryError):
    """No model of that name is registered."""


class NoModelYetError(ModelNotFoundError):
    """The registry holds no trained model yet (the first thing to do is to train one)."""


class UnfinishedModelError(RegistryError):
    """The model's training stopped before its last epoch (training it again continues it)."""


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
