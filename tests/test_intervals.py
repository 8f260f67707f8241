"""nodeguard.intervals: the 95% Clopper-Pearson intervals every reported rate carries."""

from __future__ import annotations

import pytest
from scipy.stats import beta

from nodeguard.intervals import (
    INTERVAL_LABEL,
    format_interval,
    format_rate,
    lower_confidence_bound,
    rate_interval,
    rate_with_interval,
)

KNOWN = [(0, 10), (93, 100), (100, 100), (1, 1), (0, 1), (5, 7), (50, 200), (199, 200)]


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The textbook form: quantiles of Beta(k, n - k + 1) and Beta(k + 1, n - k)."""
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else beta.ppf(alpha / 2, successes, trials - successes + 1)
    high = 1.0 if successes == trials else beta.ppf(1 - alpha / 2, successes + 1, trials - successes)
    return float(low), float(high)


@pytest.mark.parametrize(("successes", "trials"), KNOWN)
def test_the_interval_is_clopper_pearsons_from_beta_quantiles(successes, trials):
    assert rate_interval(successes, trials) == pytest.approx(clopper_pearson(successes, trials), abs=1e-9)
    assert rate_interval(successes, trials, confidence=0.99) == pytest.approx(
        clopper_pearson(successes, trials, 0.99), abs=1e-9
    )


def test_the_documented_example_and_the_ends():
    low, high = rate_interval(93, 100)
    assert low == pytest.approx(0.861, abs=5e-4) and high == pytest.approx(0.971, abs=5e-4)
    assert rate_interval(0, 10)[0] == 0.0 and rate_interval(0, 10)[1] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert rate_interval(100, 100)[1] == 1.0 and rate_interval(100, 100)[0] == pytest.approx(0.025 ** (1 / 100))


@pytest.mark.parametrize("trials", [1, 2, 7, 10, 100, 1000])
def test_every_interval_holds_its_point_estimate_and_stays_in_0_1(trials):
    for successes in range(0, trials + 1, max(1, trials // 25)):
        rate, interval = rate_with_interval(successes, trials)
        assert rate == successes / trials and interval == rate_interval(successes, trials)
        low, high = interval
        assert 0.0 <= low <= rate <= high <= 1.0
        wider = rate_interval(successes, trials, confidence=0.99)
        assert wider[0] <= low and high <= wider[1]  # more confidence, a wider interval


def test_no_trials_gives_no_rate_and_no_interval():
    assert rate_interval(0, 0) is None
    assert rate_with_interval(0, 0) == (None, None)


@pytest.mark.parametrize(("successes", "trials"), [(11, 10), (-1, 10), (1, -1), (1, 0)])
def test_counts_out_of_range_are_refused(successes, trials):
    with pytest.raises(ValueError, match="successes <= trials"):
        rate_interval(successes, trials)
    with pytest.raises(ValueError, match="successes <= trials"):
        rate_with_interval(successes, trials)
    with pytest.raises(ValueError, match="successes <= trials"):
        lower_confidence_bound(successes, trials, 0.05)


@pytest.mark.parametrize(("successes", "trials"), [(1, 10), (93, 100), (100, 100), (5, 7), (999, 1000)])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.2])
def test_the_one_sided_bound_is_the_beta_quantile(successes, trials, alpha):
    bound = lower_confidence_bound(successes, trials, alpha)
    assert bound == pytest.approx(float(beta.ppf(alpha, successes, trials - successes + 1)), abs=1e-9)
    assert 0.0 <= bound <= successes / trials


def test_the_one_sided_bound_at_half_alpha_is_the_two_sided_lower_end():
    for successes, trials in KNOWN:
        assert lower_confidence_bound(successes, trials, 0.025) == pytest.approx(rate_interval(successes, trials)[0])


def test_the_one_sided_bound_of_no_success_is_zero_and_bad_arguments_are_refused():
    assert lower_confidence_bound(0, 10, 0.05) == 0.0
    with pytest.raises(ValueError, match="trials >= 1"):
        lower_confidence_bound(0, 0, 0.05)
    for alpha in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha in"):
            lower_confidence_bound(5, 10, alpha)


def test_rates_and_intervals_are_written_in_percent():
    interval = rate_interval(93, 100)
    assert format_interval(interval) == "[86%, 97%]"
    assert format_interval(interval, ".1%") == "[86.1%, 97.1%]"
    assert format_interval(None) == ""
    assert format_rate(0.93, interval) == "93.0% [86%, 97%]"
    assert format_rate(0.93, None) == "93.0%"
    assert format_rate(None, None) == "n/a"
    assert INTERVAL_LABEL == "95% Clopper-Pearson"
