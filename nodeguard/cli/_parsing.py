"""Parsing comma-separated option values, with one clear error."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from nodeguard.defense.randomization import ToleranceRange
from nodeguard.errors import ConfigError

T = TypeVar("T")


def parse_list(text: str, convert: Callable[[str], T], option: str, example: str) -> tuple[T, ...]:
    """``"1e-5,1e-1"`` -> ``(1e-05, 0.1)``; a bad item is a ConfigError naming the option."""
    try:
        return tuple(convert(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{option} takes values separated by commas, like {example}; got {text!r}") from None


def parse_tol_range(text: str) -> ToleranceRange:
    """``--tol-range LOW,HIGH``: the range, checked here, where it enters.

    Raises:
        ConfigError: not two numbers, or not a range of tolerances.
    """
    values = parse_list(text, float, "--tol-range", "1e-5,1e-1")
    if len(values) != 2:
        raise ConfigError(f"--tol-range takes two numbers, like 1e-5,1e-1; got {text!r}")
    return ToleranceRange(values[0], values[1])
