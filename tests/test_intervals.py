"""nodeguard.intervals: the 95% Clopper-Pearson intervals every reported rate carries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import beta

from nodeguard.experiments.roc import RocCurve, roc_from_scores
from nodeguard.experiments.security import SecurityRow
from nodeguard.intervals import (
    INTERVAL_LABEL,
    Rate,
    format_interval,
    format_optional_rate,
    format_rate,
    lower_confidence_bound,
    rate_interval,
)
from nodeguard.plain import from_plain, to_plain

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
        share = Rate.of(successes, trials)
        rate, interval = share.value, share.interval_list()
        assert rate == successes / trials and interval == rate_interval(successes, trials)
        assert (share.count, share.total) == (successes, trials)
        low, high = interval
        assert 0.0 <= low <= rate <= high <= 1.0
        wider = rate_interval(successes, trials, confidence=0.99)
        assert wider[0] <= low and high <= wider[1]  # more confidence, a wider interval


def test_no_trials_gives_no_rate_and_no_interval():
    assert rate_interval(0, 0) is None
    empty = Rate.of(0, 0)
    assert empty.value is None and empty.interval is None and empty.format() == "n/a"


@pytest.mark.parametrize(("successes", "trials"), [(11, 10), (-1, 10), (1, -1), (1, 0)])
def test_counts_out_of_range_are_refused(successes, trials):
    with pytest.raises(ValueError, match="successes <= trials"):
        rate_interval(successes, trials)
    with pytest.raises(ValueError, match="successes <= trials"):
        Rate.of(successes, trials)
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


def test_a_rate_is_one_value_with_its_count_total_and_interval():
    rate = Rate.of(93, 100)
    assert rate.to_dict() == {"value": 0.93, "count": 93, "total": 100, "interval": rate_interval(93, 100)}
    assert Rate.from_dict(rate.to_dict()) == rate
    assert rate.format() == "93.0% [86%, 97%]" == format_optional_rate(rate)
    assert format_optional_rate(None) == "n/a"
    other = rate.complement()  # the other trials, with their own interval
    assert (other.count, other.total) == (7, 100) and other.interval_list() == rate_interval(7, 100)
    low, high = other.interval
    assert low == pytest.approx(1 - rate.interval[1]) and high == pytest.approx(1 - rate.interval[0])
    with pytest.raises(ValueError, match="successes <= trials"):
        Rate.of(5, 4)


def test_typed_reports_go_to_plain_data_and_back_unchanged():
    curve = roc_from_scores(np.array([3, 3, 2, 3]), np.array([0, 3, 1]), votes=3)
    data = to_plain(curve)
    assert data["points"][0]["tpr"] == {"value": 1.0, "count": 4, "total": 4, "interval": rate_interval(4, 4)}
    assert from_plain(RocCurve, data) == curve
    assert json.loads(json.dumps(data)) == data  # JSON-ready as it is
    row = SecurityRow("cw", "cw k=0", 0.0, "set", 4, None, None, Rate.of(3, 4), Rate.of(0, 0), Rate.of(1, 4), None)
    assert from_plain(SecurityRow, to_plain(row)) == row
    with pytest.raises(TypeError):
        from_plain(SecurityRow, {**to_plain(row), "not_a_field": 1})
