"""Confidence intervals for the rates nodeguard reports, computed with SciPy.

Every rate nodeguard prints (attack success, rejected, accepted, defended success,
robust accuracy, test error, certified accuracy) is a share of k successes in n
independent trials (images). Its 95% interval is the Clopper–Pearson ("exact")
interval: the binomial proportions p that neither one-sided binomial test at level 2.5%
rejects (beta quantiles of k and n - k + 1). It never covers less than its confidence,
whatever n and p, at the price of being a little wider than Wilson's; with 100 images
and k = 93 it is [0.861, 0.971]. SciPy is imported on first use (a command that reports
no rate never loads it).
Randomized smoothing's certificate (Cohen et al. 2019) uses the one-sided version,
:func:`lower_confidence_bound`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95
METHOD = "Clopper-Pearson"
INTERVAL_LABEL = f"95% {METHOD}"


def _binomtest(successes: int, trials: int, **options: Any) -> Any:
    from scipy.stats import binomtest  # here: importing SciPy takes a noticeable part of a second

    return binomtest(int(successes), int(trials), **options)


def _check(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")


def rate_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> list[float] | None:
    """The two-sided Clopper–Pearson interval of a binomial rate.

    Args:
        successes: k, the number of successes (0 <= k <= trials).
        trials: n, the number of independent trials (images).
        confidence: the interval's confidence level, in (0, 1).

    Returns:
        ``[low, high]`` with 0 <= low <= k/n <= high <= 1, or None when ``trials`` is 0
        (no rate to bound).

    Raises:
        ValueError: ``successes`` is negative or above ``trials``.
    """
    _check(successes, trials)
    if trials == 0:
        return None
    interval = _binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return [float(interval.low), float(interval.high)]


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """The one-sided Clopper–Pearson lower bound on a binomial proportion at level ``alpha``.

    With probability at least 1 - alpha over the trials, the true proportion is at least
    this bound (Cohen, Rosenfeld & Kolter, ICML 2019, ``LowerConfBound``).

    Args:
        successes: k (0 <= k <= trials).
        trials: n (>= 1).
        alpha: the probability of a wrong bound, in (0, 1).

    Returns:
        The bound in [0, 1]; 0 when k = 0.

    Raises:
        ValueError: k out of [0, n], n < 1, or alpha outside (0, 1).
    """
    _check(successes, trials)
    if trials < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need trials >= 1 and alpha in (0, 1), got {trials} and {alpha}")
    interval = _binomtest(successes, trials, alternative="greater").proportion_ci(
        confidence_level=1.0 - alpha, method="exact"
    )
    return float(interval.low)


def format_interval(interval: list[float] | None, spec: str = ".0%") -> str:
    """``"[low, high]"`` in ``spec`` (percent by default); ``""`` for None."""
    if interval is None:
        return ""
    return f"[{format(interval[0], spec)}, {format(interval[1], spec)}]"


def format_number(value: float | None, spec: str) -> str:
    """A number as ``spec`` formats it; ``"n/a"`` for None (as :func:`format_rate`)."""
    return "n/a" if value is None else format(value, spec)


def format_rate(rate: float | None, interval: list[float] | None, spec: str = ".1%", interval_spec: str = ".0%") -> str:
    """A rate and its interval in one cell, e.g. ``"93.0% [86%, 97%]"``; ``"n/a"`` for None."""
    if rate is None:
        return "n/a"
    text = format(rate, spec)
    return f"{text} {format_interval(interval, interval_spec)}" if interval is not None else text


@dataclass(frozen=True)
class Rate:
    """A share of k successes in n trials (images), with its 95% Clopper–Pearson interval.

    Every rate nodeguard reports is one of these: attack success, rejected, accepted,
    defended success, robust accuracy, certified accuracy, an ROC point's TPR and FPR.
    Build it with :meth:`of`, which computes the interval; the stored form
    (:meth:`to_dict`) keeps the count and total beside the share, so a reader can check
    the figure and recompute its interval.

    Attributes:
        count: k, the successes (0 <= count <= total).
        total: n, the trials: the images the share is counted over.
        interval: ``(low, high)`` with low <= k/n <= high, or None when ``total`` is 0.
    """

    count: int
    total: int
    interval: tuple[float, float] | None

    @classmethod
    def of(cls, count: int, total: int) -> Rate:
        """``count`` of ``total`` with its interval (:func:`rate_interval`).

        Raises:
            ValueError: ``count`` is negative or above ``total``.
        """
        interval = rate_interval(int(count), int(total))
        return cls(int(count), int(total), None if interval is None else (interval[0], interval[1]))

    @property
    def value(self) -> float | None:
        """k / n, in [0, 1]; None when ``total`` is 0."""
        return self.count / self.total if self.total else None

    def complement(self) -> Rate:
        """The share of the other trials: n - k of n, with its own interval."""
        return Rate.of(self.total - self.count, self.total)

    def format(self, spec: str = ".1%", interval_spec: str = ".0%") -> str:
        """The share and its interval in one cell, e.g. ``"93.0% [86%, 97%]"``; ``"n/a"`` for n = 0."""
        return format_rate(self.value, self.interval_list(), spec, interval_spec)

    def interval_list(self) -> list[float] | None:
        """The interval as ``[low, high]`` (None when ``total`` is 0)."""
        return None if self.interval is None else [self.interval[0], self.interval[1]]

    def to_dict(self) -> dict[str, Any]:
        """``{"value", "count", "total", "interval"}``: the stored and ``--json`` form."""
        return {"value": self.value, "count": self.count, "total": self.total, "interval": self.interval_list()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Rate:
        """The rate from its :meth:`to_dict` (``value`` is recomputed, not read)."""
        interval = values.get("interval")
        return cls(int(values["count"]), int(values["total"]), None if interval is None else (interval[0], interval[1]))


def format_optional_rate(rate: Rate | None, spec: str = ".1%", interval_spec: str = ".0%") -> str:
    """:meth:`Rate.format`, or ``"n/a"`` for a missing rate (an operating point never reached)."""
    return "n/a" if rate is None else rate.format(spec, interval_spec)


def union_of_intervals(rates: list[Rate]) -> tuple[float, float] | None:
    """The union of the rates' 95% intervals, (lowest low end, highest high end), in [0, 1]:
    the interval over several runs' digits and the runs together (``examples/``' variation
    tables); None when no rate has an interval (every total 0)."""
    intervals = [rate.interval for rate in rates if rate.interval is not None]
    if not intervals:
        return None
    return min(low for low, _ in intervals), max(high for _, high in intervals)
