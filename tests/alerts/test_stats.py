"""pipeline.alerts.stats: tail probabilities against scipy and by hand, and the spike test's gates."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as sps

from pipeline.alerts import stats


def test_binomial_tail_matches_hand_computed_values() -> None:
    # P(X >= 3) for 3 fair coin flips is 1/8; P(X >= 1) = 1 - (1/2)^3.
    assert stats.binomial_sf(3, 3, 0.5) == pytest.approx(0.125)
    assert stats.binomial_sf(1, 3, 0.5) == pytest.approx(0.875)
    assert stats.binomial_sf(0, 10, 0.2) == 1.0
    assert stats.binomial_sf(11, 10, 0.2) == 0.0
    # 6 negative of 6 at a 25% baseline: 0.25^6.
    assert stats.binomial_sf(6, 6, 0.25) == pytest.approx(0.25**6)


def test_binomial_tail_matches_scipy_over_random_cases() -> None:
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(1, 5000)
        p = rng.uniform(0.001, 0.999)
        k = rng.randint(0, n)
        expected = sps.binom.sf(k - 1, n, p)
        got = stats.binomial_sf(k, n, p)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-300), (k, n, p)


def test_binomial_tail_keeps_precision_far_in_the_tail() -> None:
    assert stats.binomial_sf(1000, 2000, 0.3) == pytest.approx(sps.binom.sf(999, 2000, 0.3), rel=1e-9)
    assert 0 < stats.binomial_sf(1000, 2000, 0.3) < 1e-70


def test_beta_binomial_tail_matches_scipy_pmf_sums() -> None:
    # Compared with the summed pmf: scipy's own betabinom.sf loses digits far in the tail.
    rng = random.Random(11)
    for _ in range(300):
        n = rng.randint(1, 400)
        a, b = rng.uniform(0.5, 300), rng.uniform(0.5, 300)
        k = rng.randint(0, n)
        expected = float(sps.betabinom.pmf(range(k, n + 1), n, a, b).sum()) if k <= n else 0.0
        got = stats.beta_binomial_sf(k, n, a, b)
        assert got == pytest.approx(min(expected, 1.0), rel=1e-7, abs=1e-15), (k, n, a, b)


def test_beta_binomial_is_wider_than_binomial_for_an_uncertain_baseline() -> None:
    # Same 25% baseline; estimated from 40 stories it leaves more room for chance than a known 25%.
    assert stats.beta_binomial_sf(6, 6, 10, 30) > stats.binomial_sf(6, 6, 0.25)
    # With a huge baseline sample the two agree.
    assert stats.beta_binomial_sf(6, 6, 25_000, 75_000) == pytest.approx(
        stats.binomial_sf(6, 6, 0.25), rel=1e-3
    )


def test_two_proportion_z_matches_the_textbook_formula_and_normal_tail() -> None:
    z, p = stats.two_proportion_z(30, 50, 100, 400)
    pooled = 130 / 450
    expected_z = (0.6 - 0.25) / math.sqrt(pooled * (1 - pooled) * (1 / 50 + 1 / 400))
    assert z == pytest.approx(expected_z)
    assert p == pytest.approx(sps.norm.sf(expected_z))
    assert stats.two_proportion_z(0, 0, 5, 10) == (0.0, 1.0)


def test_spike_test_needs_minimum_stories() -> None:
    result = stats.spike_test(4, 4, 100, 400, min_stories=5)
    assert not result.breach
    assert "only 4 stories" in result.reason


def test_spike_test_needs_a_minimum_absolute_rise_even_when_significant() -> None:
    # 33% vs 30% over thousands of stories is significant but not a storm.
    result = stats.spike_test(3300, 10_000, 30_000, 100_000, test="binomial", min_rise=0.1)
    assert not result.breach
    assert "rise" in result.reason


def test_spike_test_flags_a_clear_storm_with_every_test() -> None:
    for test in ("binomial", "beta_binomial", "z"):
        result = stats.spike_test(18, 20, 250, 1000, test=test, alpha=0.001, min_rise=0.2)
        assert result.breach, test
        assert result.neg_share == pytest.approx(0.9)
        assert result.p_value < 1e-6


def test_spike_test_is_not_significant_for_ordinary_noise() -> None:
    # 4 of 10 against a 25% baseline: a rise, but p ~ 0.2.
    result = stats.spike_test(4, 10, 250, 1000, alpha=0.001, min_rise=0.1)
    assert not result.breach
    assert result.p_value > 0.05


def test_thin_baseline_is_shrunk_towards_the_prior_share() -> None:
    # A ticker with 0 negatives in 5 baseline stories does not get a 0% baseline.
    assert stats.baseline_share(0, 5, prior_share=0.3, prior_stories=20) == pytest.approx(6 / 25)
    assert stats.baseline_share(250, 1000, prior_share=0.3, prior_stories=0) == pytest.approx(0.25)


def test_spike_test_survives_a_baseline_that_never_saw_a_negative_story() -> None:
    # A new deployment: every ticker's baseline (and so the pooled prior) holds no negative story yet.
    # The beta-binomial would need Beta(0, b); the test falls back to the binomial, which is exact there.
    for test in ("binomial", "beta_binomial", "z"):
        storm = stats.spike_test(8, 8, 0, 96, test=test, alpha=0.001, prior_share=0.0)
        assert storm.breach and storm.baseline == 0.0, test
        calm = stats.spike_test(0, 8, 0, 96, test=test, alpha=0.001, prior_share=0.0)
        assert not calm.breach, test
    assert stats.baseline_share(0, 0, prior_share=0.3, prior_stories=0) == 0.3


def test_unknown_test_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown test"):
        stats.spike_test(9, 10, 1, 10, test="chi2")  # type: ignore[arg-type]


def test_ewma_and_cusum_known_values() -> None:
    assert stats.ewma([1.0, 0.0, 0.0], 0.5) == [1.0, 0.5, 0.25]
    assert stats.cusum([0.3, 0.5, 0.1, 0.6], target=0.25, slack=0.05) == pytest.approx([0.0, 0.2, 0.0, 0.3])
    with pytest.raises(ValueError):
        stats.ewma([1.0], 0.0)


@pytest.mark.parametrize(
    ("k", "mu"), [(0, 1.0), (1, 0.1), (3, 0.1), (4, 0.3), (5, 10.0), (20, 10.0), (2, 5.0)]
)
def test_poisson_tail_matches_scipy(k: int, mu: float) -> None:
    assert stats.poisson_sf(k, mu) == pytest.approx(sps.poisson.sf(k - 1, mu), rel=1e-9, abs=1e-15)


def test_count_test_fires_on_a_thin_tickers_burst_of_negative_stories() -> None:
    # A ticker that sees ~1 negative story every two days (7 in a fortnight), then 3 within 2 hours.
    common = {"test": "poisson_count", "alpha": 1e-4, "min_stories": 3, "min_negative": 3, "min_rise": 0.15}
    burst = stats.spike_test(3, 3, 7, 35, window_hours=2, baseline_hours=336, **common)
    assert burst.breach and "3 negative stories vs 0.05 expected" in burst.reason
    assert burst.expected == pytest.approx(8 / 336 * 2)
    # The same three stories in a fortnight's busiest hour (4x the usual news) are less surprising.
    busy = stats.spike_test(3, 3, 7, 35, window_hours=2, baseline_hours=336, activity=4.0, **common)
    assert busy.p_value > burst.p_value
    # Two negative stories are not enough, whatever their share; nor is good news in volume.
    assert not stats.spike_test(2, 2, 7, 35, window_hours=2, baseline_hours=336, **common).breach
    assert not stats.spike_test(1, 9, 7, 35, window_hours=2, baseline_hours=336, **common).breach


def test_expected_negatives_and_market_activity() -> None:
    assert stats.expected_negatives(13, 336, 6) == pytest.approx(14 / 336 * 6)
    assert stats.expected_negatives(0, 336, 6) > 0  # a baseline with no negative story still expects some
    assert stats.market_activity(30, 6, 336, 336) == 4.0  # five times the usual rate, clipped at 4
    assert stats.market_activity(6, 6, 336, 336) == pytest.approx(1.0)
    assert stats.market_activity(0, 6, 336, 336) == 0.25
    assert stats.market_activity(5, 6, 0, 336) == 1.0


def test_poisson_tail_runs_smoothly_between_whole_counts() -> None:
    # Expected negatives are sums of probabilities: the tail at 2.5 lies between those at 2 and 3.
    mu = 0.4
    low, mid, high = stats.poisson_sf(2, mu), stats.poisson_sf(2.5, mu), stats.poisson_sf(3, mu)
    assert high < mid < low
    assert stats.poisson_sf(3.0, mu) == pytest.approx(sps.poisson.sf(2, mu), rel=1e-9)


def test_dispersion_is_one_for_whole_stories_and_less_for_spread_probabilities() -> None:
    assert stats.dispersion(5.0, 5.0) == 1.0  # five stories at p = 1
    assert stats.dispersion(5.0, 2.5) == pytest.approx(0.5)  # ten stories at p = 0.5
    assert stats.dispersion(1.0, 0.01) == 0.2  # clipped: a thin spread cannot make one story decisive
    assert stats.dispersion(0.0, 0.0) == 1.0


def test_a_sum_of_probabilities_is_more_surprising_when_it_varies_less() -> None:
    common = dict(test="poisson_count", alpha=1e-3, min_stories=3, min_rise=0.1, window_hours=2.0)
    as_counts = stats.spike_test(3.6, 8, 10.0, 300, **common)
    spread = stats.spike_test(3.6, 8, 10.0, 300, dispersion=0.5, **common)
    assert spread.p_value < as_counts.p_value
    assert "3.6 negative stories" in spread.reason


def test_volume_test_fires_on_a_burst_that_leans_negative_and_not_on_good_news() -> None:
    common = dict(test="poisson_volume", alpha=1e-4, min_stories=4, min_negative=1.0, min_rise=0.05)
    common |= dict(window_hours=3.0, baseline_hours=336.0, prior_share=0.2)
    # 12 stories in 3 h where about 1.4 are usual, 4.8 of them negative in expectation.
    storm = stats.spike_test(4.8, 12, 30.0, 150, **common)
    assert storm.breach and "12 stories vs" in storm.reason
    assert storm.expected is not None and storm.expected < 1.0  # negatives its usual rate expects
    good_news = stats.spike_test(1.2, 12, 30.0, 150, **common)  # 0.1 of 12: under the usual 0.2
    assert not good_news.breach and "rise" in good_news.reason
    usual_day = stats.spike_test(1.0, 2, 30.0, 150, **common)
    assert not usual_day.breach


def test_share_tests_refuse_expected_negatives() -> None:
    with pytest.raises(ValueError, match="whole stories"):
        stats.spike_test(2.5, 10, 3, 100, test="beta_binomial")
