"""Any ODE classifier as three parts, rebuilt later by a factory the user named.

A model that nodeguard did not define enters the registry as three ``nn.Module`` parts,
``features`` (image -> h(0)), ``odefunc`` (f(t, h)) and ``head`` (h(T) -> logits), made
by a *parts factory*: a function decorated with :func:`ode_parts_factory` in a module the
user can import, called with keyword arguments that config.yaml records. The registry
stores the factory's name and arguments (YAML) and the weights (``torch.load`` with
``weights_only=True``), never pickled code. Loading the model imports that module (its
top-level code runs, as on any import) and calls that function only if it carries the
decorator's mark: a config.yaml that names, say, ``os:system`` runs nothing. A
config.yaml can still name any importable module, so a cache root is to be trusted as
far as the modules importable where it is used.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from nodeguard.errors import ConfigError, setting_error

FACTORY_MARK = "__nodeguard_parts_factory__"
FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

Factory = TypeVar("Factory", bound=Callable[..., Any])


@dataclass
class ODEParts:
    """The three parts of an ODE classifier.

    Attributes:
        features: (N, C, H, W) normalised images -> (N, ...) states h(0).
        odefunc: f(t, h) -> dh/dt shaped like h; called by the per-sample solver with
            t shaped (B, 1, ..., 1) (one time per sample), by torchdiffeq with a scalar t.
        head: (N, ...) states h(T) -> (N, num_classes) logits.
    """

    features: nn.Module
    odefunc: nn.Module
    head: nn.Module


def _marked(function: object) -> bool:
    return inspect.isfunction(function) and function.__dict__.get(FACTORY_MARK) is True


def ode_parts_factory(function: Factory) -> Factory:
    """Mark ``function`` as a parts factory that a registered model may name.

    The function takes keyword arguments (plain YAML values: numbers, strings, booleans,
    lists, dicts) and returns :class:`ODEParts` with freshly initialised weights; the
    registry loads the stored weights into them.

    Returns:
        ``function`` itself, marked.
    """
    setattr(function, FACTORY_MARK, True)
    return function


def factory_name(function: Callable[..., Any]) -> str:
    """``"module:function"`` of a marked parts factory, as config.yaml records it.

    Raises:
        ConfigError: ``function`` is not marked with :func:`ode_parts_factory`, or is not
            reachable by that name (a nested function, a lambda, a ``__main__`` script).
    """
    if not _marked(function):
        raise ConfigError(f"{function!r} is not a function marked with @nodeguard.ode_parts_factory")
    module, name = getattr(function, "__module__", ""), getattr(function, "__qualname__", "")
    spec = f"{module}:{name}"
    if module == "__main__" or not FACTORY_SPEC.match(spec):
        raise ConfigError(
            f"the parts factory {spec!r} cannot be imported by name later; define it at the top level "
            "of a module that stays importable (not in a script run as __main__)"
        )
    return spec


def resolve_factory(spec: str) -> Callable[..., Any]:
    """The marked parts factory named ``"module:function"`` (the module is imported).

    Raises:
        ConfigError: a malformed name, a module that cannot be imported, no such function,
            or a function not marked with :func:`ode_parts_factory`.
    """
    if not isinstance(spec, str) or not FACTORY_SPEC.match(spec):
        raise setting_error("factory", f"must read 'module:function', not {spec!r}")
    module_name, function_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"the model's parts factory {spec!r} cannot be imported ({exc}); install the package that defines it"
        ) from None
    except Exception as exc:  # the module's own code failed on import
        raise ConfigError(f"importing the parts factory's module {module_name!r} failed ({exc!r})") from None
    function = module.__dict__.get(function_name)
    if function is None or not _marked(function):
        raise ConfigError(f"{spec!r} is not a function marked with @nodeguard.ode_parts_factory; it was not called")
    return function


def build_parts(spec: str, kwargs: dict[str, Any]) -> ODEParts:
    """Call the parts factory named ``spec`` with ``kwargs`` and check what it returns.

    Returns:
        The :class:`ODEParts` (a 3-tuple of modules is accepted too).

    Raises:
        ConfigError: see :func:`resolve_factory`; or the factory returned something else.
    """
    factory = resolve_factory(spec)
    try:
        parts = factory(**dict(kwargs or {}))
    except Exception as exc:
        raise ConfigError(f"the parts factory {spec!r} failed on its arguments {kwargs!r} ({exc!r})") from None
    if isinstance(parts, tuple) and len(parts) == 3:
        parts = ODEParts(*parts)
    if not isinstance(parts, ODEParts) or not all(
        isinstance(part, nn.Module) for part in (parts.features, parts.odefunc, parts.head)
    ):
        raise ConfigError(f"the parts factory {spec!r} must return ODEParts(features, odefunc, head) of nn.Modules")
    return parts
