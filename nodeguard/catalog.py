"""One registry style for everything nodeguard looks up by name.

A :class:`Catalog` maps a name to a small spec object (a model class, a data set's
description, an augmentation, an attack). ``register`` adds one, usable as a decorator;
``get`` returns it or fails with one message that lists the valid names (torchdiffeq's
habit). Models, data sets, augmentations and attacks all use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from nodeguard.errors import unknown_name_error

T = TypeVar("T")


class Catalog(Generic[T]):
    """Named specs of one kind (``kind`` names them in error messages, e.g. "attack")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._specs: dict[str, T] = {}

    def register(self, name: str, spec: T | None = None):
        """``register(name, spec)``, or ``@register(name)`` above a class or function."""
        if spec is not None:
            self._add(name, spec)
            return spec

        def decorator(item: T) -> T:
            self._add(name, item)
            return item

        return decorator

    def _add(self, name: str, spec: T) -> None:
        if name in self._specs:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._specs[name] = spec

    def get(self, name: str) -> T:
        """The spec registered as ``name``; an unknown name lists the valid ones."""
        if name not in self._specs:
            raise unknown_name_error(self.kind, name, self.names())
        return self._specs[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)
