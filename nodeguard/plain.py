"""One serializer for every report: typed values to plain JSON data and back.

Reports are dataclasses whose fields are numbers, strings, :class:`~nodeguard.intervals.Rate`
values, other dataclasses, and lists, tuples or dicts of these. :func:`to_plain` makes the
data that ``--json``, the result store and the model card write; :func:`from_plain` rebuilds
the typed report from it, led by the dataclass's own field types, so a report needs no
hand-written loader.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

from nodeguard.intervals import Rate

T = TypeVar("T")
PLAIN_TYPES = (int, float, str, bool, Any)  # kinds JSON holds as they are


def to_plain(value: Any) -> Any:
    """``value`` as JSON-ready data: a dataclass becomes a dict of its fields (in their
    order), a :class:`Rate` its :meth:`Rate.to_dict`, a tuple a list; other values stay."""
    if isinstance(value, Rate):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: to_plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    return value


def from_plain(cls: type[T], data: Any) -> T:
    """The typed value of type ``cls`` from its :func:`to_plain` data.

    Fields missing from ``data`` take their defaults (values saved before a field existed).
    Dict keys stay strings (as JSON has them).

    Raises:
        TypeError: ``data`` names a field ``cls`` does not have, or lacks one without a
            default; or a field's type is a union of several kinds that need rebuilding
            (a dataclass, a Rate, a container), which the data cannot tell apart.
    """
    return typing.cast(T, _convert(cls, data))


def _convert(kind: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        if len(options) == 1:
            return _convert(options[0], data)
        if all(option in PLAIN_TYPES for option in options):  # a number or a string: as it is
            return data
        raise TypeError(f"cannot tell which of {kind} this data is: {data!r}")
    if kind is Rate:
        return Rate.from_dict(data)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{key: _convert(hints.get(key, Any), value) for key, value in data.items()})
    if origin is list:
        (item,) = typing.get_args(kind) or (Any,)
        return [_convert(item, value) for value in data]
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], value) for value in data)
        return tuple(_convert(arg, value) for arg, value in zip(args, data, strict=True)) if args else tuple(data)
    if origin is dict:
        _, item = typing.get_args(kind) or (Any, Any)
        return {key: _convert(item, value) for key, value in data.items()}
    return data
