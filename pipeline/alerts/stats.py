"""Statistics for spike detection: tail probabilities and the negative-share spike test.

Pure functions, no I/O. A spike test compares the share of negative stories in a window (k of n) with
the trailing baseline of the same dimension value (k0 of n0) and asks how surprising k is if the window
followed the baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from scipy.special import gammainc

TestName = Literal["binomial", "beta_binomial", "z", "poisson_count", "poisson_volume"]
# Tests on counts against a rate (news activity matters to them; they take expected negatives).
COUNT_TESTS = ("poisson_count", "poisson_volume")

# Summation stops once a term adds less than this fraction of the running total.
_REL_EPS = 1e-17


def _log_binom(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _tail_sum(log_first: float, ratio, start: int, stop: int, step: int) -> float:
    """Return sum of exp(log pmf) from ``start`` towards ``stop``; ``ratio(i)`` = pmf(i+step)/pmf(i)."""
    term = math.exp(log_first)
    total = term
    i = start
    while i != stop:
        term *= ratio(i)
        total += term
        i += step
        if term <= total * _REL_EPS:
            break
    return total


def binomial_sf(k: int, n: int, p: float) -> float:
    """Return P(X >= k) for X ~ Binomial(n, p): the exact one-sided binomial p-value."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    odds = p / (1.0 - p)
    log_pmf = _log_binom(n, k) + k * math.log(p) + (n - k) * math.log1p(-p)
    if k >= n * p:
        # Above the mean the pmf falls monotonically: sum upwards from k.
        return min(1.0, _tail_sum(log_pmf, lambda i: (n - i) / (i + 1) * odds, k, n, 1))
    # Below the mean the upper tail is most of the mass: 1 - P(X <= k-1), summed downwards.
    log_prev = _log_binom(n, k - 1) + (k - 1) * math.log(p) + (n - k + 1) * math.log1p(-p)
    lower = _tail_sum(log_prev, lambda i: i / (n - i + 1) / odds, k - 1, 0, -1)
    return max(0.0, 1.0 - lower)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def beta_binomial_sf(k: int, n: int, a: float, b: float) -> float:
    """Return P(X >= k) for X ~ BetaBinomial(n, a, b).

    With ``a``/``b`` the negative/other story counts of the baseline (plus a prior), this is the chance
    of k or more negatives out of n when the baseline share itself is only known from those counts.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if a <= 0 or b <= 0:
        raise ValueError(f"beta-binomial needs a > 0 and b > 0, got a={a}, b={b}")

    def log_pmf(i: int) -> float:
        return _log_binom(n, i) + _log_beta(i + a, n - i + b) - _log_beta(a, b)

    def up(i: int) -> float:
        return (n - i) / (i + 1) * (i + a) / (n - i - 1 + b)

    mean = n * a / (a + b)
    if k >= mean:
        return min(1.0, _tail_sum(log_pmf(k), up, k, n, 1))
    lower = _tail_sum(log_pmf(k - 1), lambda i: 1.0 / up(i - 1), k - 1, 0, -1)
    return max(0.0, 1.0 - lower)


def poisson_sf(k: float, mu: float) -> float:
    """Return P(X >= k) for X ~ Poisson(mu).

    A ``k`` that is not a whole number (a sum of probabilities, see ``Rule.negatives``) takes the
    continuous extension P(Gamma(k) <= mu), the regularized incomplete gamma function, which equals the
    Poisson tail at whole numbers and rises smoothly between them.
    """
    if k <= 0:
        return 1.0
    if mu <= 0.0:
        return 0.0
    if not float(k).is_integer():
        return float(gammainc(k, mu))
    k = int(k)
    log_pmf = -mu + k * math.log(mu) - math.lgamma(k + 1)
    if k >= mu:
        # Above the mean the pmf falls: sum upwards from k until the terms stop counting.
        return min(1.0, _tail_sum(log_pmf, lambda i: mu / (i + 1), k, k + 10_000, 1))
    lower = _tail_sum(log_pmf - math.log(mu / k), lambda i: i / mu, k - 1, 0, -1)
    return max(0.0, 1.0 - lower)


def expected_negatives(
    base_neg: float, baseline_hours: float, window_hours: float, activity: float = 1.0
) -> float:
    """Return the negative stories a window of ``window_hours`` expects at the baseline's hourly rate,
    scaled by how busy the news is in the window compared with the baseline (``activity``).

    One pseudo-story keeps a ticker whose baseline saw no negative story from expecting none at all.
    """
    return (base_neg + 1.0) / max(baseline_hours, 1.0) * window_hours * activity


def dispersion(neg_expected: float, neg_expected_sq: float) -> float:
    """Return how much a sum of story probabilities varies against a count of whole stories, in [0.2, 1].

    A story adds p(negative) to expected negatives; over many stories the sum has mean sum(p) and, since
    p**2 <= p, a variance of at most sum(p**2). A count of whole stories (p = 0 or 1) is Poisson, variance
    equal to mean: ratio 1. Probabilities spread between 0 and 1 vary less (quasi-Poisson): the count test
    divides the observed and the expected sums by this ratio before taking the Poisson tail. Measured on
    the baseline of every value of the dimension; clipped so a thin baseline cannot make one story decisive.
    """
    if neg_expected <= 0.0:
        return 1.0
    return min(1.0, max(0.2, neg_expected_sq / neg_expected))


def market_activity(stories: int, window_hours: float, base_stories: int, baseline_hours: float) -> float:
    """Return the window's story rate over the baseline's, across all news, clipped to [0.25, 4].

    News runs three times busier on a weekday afternoon than at night: a ticker's negative stories are
    expected at the rate of the hour, not of the fortnight, or every busy afternoon looks like a storm.
    One ticker's storm hardly moves the count of all stories, so it does not explain itself away.
    """
    if base_stories <= 0 or window_hours <= 0:
        return 1.0
    ratio = (stories / window_hours) / (base_stories / max(baseline_hours, 1.0))
    return min(4.0, max(0.25, ratio))


def count_value(count: float) -> float:
    """Return a count as JSON should carry it: whole stories as an int, expected negatives to 2 places."""
    return int(count) if float(count).is_integer() else round(count, 2)


def count_text(count: float) -> str:
    """Return a story count as people read it: whole stories as "4", expected negatives as "4.3"."""
    return f"{int(count)}" if float(count).is_integer() else f"{count:.1f}"


def normal_sf(z: float) -> float:
    """Return P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportion_z(k1: float, n1: float, k0: float, n0: float) -> tuple[float, float]:
    """Return (z, one-sided p-value) of the pooled two-proportion z-test that k1/n1 exceeds k0/n0."""
    if n1 <= 0 or n0 <= 0:
        return 0.0, 1.0
    pooled = (k1 + k0) / (n1 + n0)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n0)
    diff = k1 / n1 - k0 / n0
    if var <= 0.0:
        # Both samples all-negative or all-other: no evidence either way unless the shares differ.
        return (math.inf, 0.0) if diff > 0 else (0.0, 1.0)
    z = diff / math.sqrt(var)
    return z, normal_sf(z)


@dataclass(frozen=True)
class SpikeResult:
    """The outcome of one spike test: the shares compared, the p-value, and whether it breaches."""

    stories: int
    neg_stories: float  # whole stories, or expected negatives (a sum of p(negative))
    base_stories: int
    base_neg: float
    neg_share: float
    baseline: float
    p_value: float
    breach: bool
    reason: str
    expected: float | None = None  # negative stories the window expected (count tests only)


def baseline_share(base_neg: float, base_stories: int, prior_share: float, prior_stories: float) -> float:
    """Return the baseline negative share, shrunk towards ``prior_share`` by ``prior_stories`` pseudo-counts.

    A ticker seen in 12 stories over two weeks has a very rough baseline of its own; the prior (usually the
    share across all stories) keeps one lucky quiet fortnight from making every later story look alarming.
    """
    if base_stories + prior_stories <= 0:
        return prior_share
    return (base_neg + prior_share * prior_stories) / (base_stories + prior_stories)


def spike_test(
    neg_stories: float,
    stories: int,
    base_neg: float,
    base_stories: int,
    *,
    test: TestName = "beta_binomial",
    alpha: float = 0.001,
    min_stories: int = 5,
    min_rise: float = 0.15,
    prior_share: float = 0.3,
    prior_stories: float = 20.0,
    min_negative: float = 0,
    window_hours: float = 1.0,
    baseline_hours: float = 336.0,
    activity: float = 1.0,
    dispersion: float = 1.0,
) -> SpikeResult:
    """Return whether ``neg_stories`` of ``stories`` is a significant rise over the baseline counts.

    A breach needs all of: at least ``min_stories`` stories and ``min_negative`` negative ones in the
    window, a negative share at least ``min_rise`` above the baseline share, and a one-sided p-value
    at most ``alpha``. The share tests (binomial, beta_binomial, z) ask whether the window's share is
    surprising; ``poisson_count`` asks whether its *number* of negative stories is, at the baseline's
    hourly rate of them (times ``activity``, see :func:`market_activity`): a storm is more stories as
    well as sourer ones, and counting catches it hours before enough stories pile up for a share to be
    significant. Only ``poisson_count`` takes expected negatives (sums of p(negative)), with their
    ``dispersion`` (see :func:`dispersion`); the share tests count whole stories.
    """
    share = neg_stories / stories if stories else 0.0
    base = baseline_share(base_neg, base_stories, prior_share, prior_stories)

    def result(p_value: float, breach: bool, reason: str) -> SpikeResult:
        return SpikeResult(stories, neg_stories, base_stories, base_neg, share, base, p_value, breach, reason)

    if stories < min_stories:
        return result(1.0, False, f"only {stories} stories (< {min_stories})")
    if neg_stories < min_negative:
        return result(1.0, False, f"only {count_text(neg_stories)} negative stories (< {min_negative:g})")
    if share - base < min_rise:
        return result(1.0, False, f"rise {share - base:+.3f} below {min_rise:.3f}")
    if test not in COUNT_TESTS and not (float(neg_stories).is_integer() and float(base_neg).is_integer()):
        raise ValueError(f"the {test} test counts whole stories; expected negatives need poisson_count")
    if test == "binomial":
        p_value = binomial_sf(int(neg_stories), stories, base)
    elif test == "beta_binomial":
        weight = base_stories + prior_stories
        if base <= 0.0 or base >= 1.0 or weight <= 0:
            # A baseline (prior included) that never saw a negative story, or saw nothing else, is certain
            # of its share; the beta-binomial cannot express that, the binomial can.
            p_value = binomial_sf(int(neg_stories), stories, base)
        else:
            p_value = beta_binomial_sf(int(neg_stories), stories, base * weight, (1.0 - base) * weight)
    elif test == "poisson_count":
        expected = expected_negatives(base_neg, baseline_hours, window_hours, activity)
        p_value = poisson_sf(neg_stories / dispersion, expected / dispersion)
        verdict = "<=" if p_value <= alpha else ">"
        reason = f"{count_text(neg_stories)} negative stories vs {expected:.2f} expected: p={p_value:.2g}"
        reason += f" {verdict} alpha={alpha:g}"
        return replace(result(p_value, p_value <= alpha, reason), expected=expected)
    elif test == "poisson_volume":
        expected_stories = (base_stories + 1.0) / max(baseline_hours, 1.0) * window_hours * activity
        p_value = poisson_sf(stories, expected_stories)
        verdict = "<=" if p_value <= alpha else ">"
        reason = f"{stories} stories vs {expected_stories:.2f} expected, {count_text(neg_stories)} negative:"
        reason += f" p={p_value:.2g} {verdict} alpha={alpha:g}"
        return replace(result(p_value, p_value <= alpha, reason), expected=expected_stories * base)
    elif test == "z":
        # The prior enters as pseudo-stories of the baseline sample so both tests see the same baseline.
        weight = base_stories + prior_stories
        _, p_value = two_proportion_z(neg_stories, stories, base * weight, weight)
    else:
        raise ValueError(f"unknown test {test!r}; use binomial, beta_binomial, z or poisson_count")
    if p_value > alpha:
        return result(p_value, False, f"p={p_value:.2g} > alpha={alpha:g}")
    return result(p_value, True, f"p={p_value:.2g} <= alpha={alpha:g}")


def ewma(values: list[float], weight: float) -> list[float]:
    """Return the exponentially weighted moving average of ``values`` (``weight`` on the newest value)."""
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"EWMA weight must be in (0, 1], got {weight}")
    out: list[float] = []
    level: float | None = None
    for value in values:
        level = value if level is None else weight * value + (1.0 - weight) * level
        out.append(level)
    return out


def cusum(values: list[float], target: float, slack: float) -> list[float]:
    """Return the one-sided upper CUSUM statistic S_t = max(0, S_{t-1} + x_t - target - slack)."""
    total = 0.0
    out: list[float] = []
    for value in values:
        total = max(0.0, total + value - target - slack)
        out.append(total)
    return out
