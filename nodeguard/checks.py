"""Every number a user gives, checked before any work starts: finite and in its range.

Each check raises one :class:`~nodeguard.errors.ConfigError` about the setting (its
``settings`` field; the CLI shows the option that sets it) and the range it must lie in.

Solver tolerances (tau, used as rtol = atol) have a floor and a ceiling that follow from
the solver's float type: the ODE block runs in float32, whose relative precision is
``torch.finfo(torch.float32).eps`` = 1.2e-7, so an error estimate cannot be held below
about that; ``TOL_MIN`` = 1e-6, about ten times that, is the tightest tolerance allowed
(and the tightest reference nodeguard uses: a test solves the tiny model at it within
the solver's step budget); a tighter one asks for errors float32 rounding cannot tell
apart and is refused. Above
``TOL_MAX`` = 10 dopri5's error control no longer limits the step at all (at tau = 1 it
already takes the fewest steps it can), so a larger tolerance would not be another
operating point and is refused as a likely typo.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from nodeguard.errors import setting_error

TOL_MIN = 1e-6
TOL_MAX = 10.0


def require_finite(setting: str, value: float) -> float:
    """``value`` as a float, or a ConfigError when it is NaN, infinite or not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise setting_error(setting, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise setting_error(setting, f"must be a finite number, got {value!r}")
    return number


def require_range(
    setting: str,
    value: float,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float when finite and within [low, high] (an open end excludes it).

    Raises:
        ConfigError: naming ``setting`` and the range.
    """
    number = require_finite(setting, value)
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (above and below):
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise setting_error(setting, f"must be in {left}{low:g}, {high:g}{right}, got {value!r}")
    return number


def require_positive(setting: str, value: float) -> float:
    """A finite number above 0."""
    return require_range(setting, value, 0.0, math.inf, low_open=True)


def require_non_negative(setting: str, value: float) -> float:
    """A finite number of at least 0."""
    return require_range(setting, value, 0.0)


MAX_SEED = 2**63 - 1  # what torch.manual_seed takes


def require_count(setting: str, value: int | None, low: int = 1) -> int | None:
    """An integer count of at least ``low`` (None passes: "all" or "the default")."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise setting_error(setting, f"must be an integer of at least {low}, got {value!r}")
    return value


def require_seed(setting: str, value: int | None) -> int | None:
    """A seed in [0, 2^63 - 1] (None passes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise setting_error(setting, f"must be an integer in [0, 2^63 - 1], got {value!r}")
    return value


def require_time(setting: str, value: float) -> float:
    """An integration time: finite and above 0 (the end time T of an ODE block)."""
    return require_range(setting, value, 0.0, math.inf, low_open=True, high_open=True)


def require_tol(setting: str, value: float) -> float:
    """A solver tolerance tau in [TOL_MIN, TOL_MAX] (see the module docstring)."""
    return require_range(setting, value, TOL_MIN, TOL_MAX)


def require_tols(setting: str, values: Iterable[float]) -> tuple[float, ...]:
    """Every tolerance of a list (at least one)."""
    checked = tuple(dict.fromkeys(require_tol(setting, value) for value in values))  # once each, in order
    if not checked:
        raise setting_error(setting, "needs at least one tolerance")
    return checked


def require_tol_range(setting: str, low: float, high: float) -> tuple[float, float]:
    """A tolerance range [low, high]: both ends tolerances, and low <= high."""
    low, high = require_tol(setting, low), require_tol(setting, high)
    if low > high:
        raise setting_error(setting, f"must be low <= high, got [{low:g}, {high:g}]")
    return low, high
