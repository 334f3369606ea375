"""The always-valid paired interval `ab` stops on: its levels, and its coverage under repeated looks, by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from attnbench.report.sequential import ALPHA, look_alpha, sequential_interval

FIRST_LOOK, CAP = 4, 30


def test_the_levels_spend_alpha_once_over_every_look():
    spent = sum(look_alpha(n, FIRST_LOOK) for n in range(FIRST_LOOK, 100_000))
    assert spent == pytest.approx(ALPHA, rel=1e-4) and spent <= ALPHA
    assert look_alpha(FIRST_LOOK, FIRST_LOOK) == ALPHA / 2
    assert look_alpha(FIRST_LOOK + 2, FIRST_LOOK) == ALPHA / 12
    with pytest.raises(ValueError, match="no look before 4 pairs"):
        look_alpha(3, FIRST_LOOK)


def test_one_look_is_the_student_t_interval_of_the_mean_log_ratio():
    ratios = [1.1, 0.95, 1.2, 1.05, 1.0, 1.15]
    got = sequential_interval(ratios, first_look=6)
    logs = np.log(ratios)
    half = stats.t.ppf(1 - ALPHA / 4, 5) * logs.std(ddof=1) / math.sqrt(6)      # level α/2 at the first look
    assert got.ratio == pytest.approx(math.exp(logs.mean()))
    assert (got.low, got.high) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert got.decides([0.5]) and not got.decides([1.05])


def _ever_misses(log_ratios: np.ndarray, true_log: float) -> np.ndarray:
    """Per simulated sequence: whether any look's interval (FIRST_LOOK..CAP pairs) excludes the true ratio."""
    missed = np.zeros(log_ratios.shape[0], dtype=bool)
    for n in range(FIRST_LOOK, CAP + 1):
        x = log_ratios[:, :n]
        half = stats.t.ppf(1 - look_alpha(n, FIRST_LOOK) / 2, n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
        missed |= np.abs(x.mean(axis=1) - true_log) > half
    return missed


@pytest.mark.parametrize("noise", ["normal", "student-t, 4 degrees of freedom"])
def test_repeated_looks_miss_the_true_ratio_at_most_alpha_of_the_time(noise):
    rng = np.random.default_rng(20261206)
    sequences, true_log = 4000, math.log(1.2)
    draws = rng.normal(size=(sequences, CAP)) if noise == "normal" else rng.standard_t(4, size=(sequences, CAP))
    miss = _ever_misses(true_log + 0.08 * draws, true_log).mean()
    # 4000 sequences: a true rate of 5% would show above 5.8% less than 1 time in 100
    assert miss <= ALPHA + 0.008, f"{noise}: missed {miss:.3%} of the time over {CAP - FIRST_LOOK + 1} looks"


def test_a_fixed_level_interval_looked_at_every_pair_would_not_hold():
    """Why the levels are spent: the same looks at a fixed 95% level miss far more often than 5%."""
    rng = np.random.default_rng(7)
    logs = 0.08 * rng.normal(size=(2000, CAP))
    missed = np.zeros(2000, dtype=bool)
    for n in range(FIRST_LOOK, CAP + 1):
        x = logs[:, :n]
        missed |= np.abs(x.mean(axis=1)) > stats.t.ppf(0.975, n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
    assert missed.mean() > 0.15
