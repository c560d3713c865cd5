"""The size calculator and Wilson intervals against hand-computed values."""

from __future__ import annotations

import pytest

from deepcvr.errors import ConfigError, DataError
from deepcvr.sample.size import compute_size, corrected_size, initial_size, wilson, z_value


@pytest.mark.parametrize(
    ("confidence", "z"), [(0.90, 1.644854), (0.95, 1.959964), (0.99, 2.575829)]
)
def test_z_values(confidence, z):
    assert z_value(confidence) == pytest.approx(z, abs=1e-6)


def test_textbook_size_with_and_without_fpc():
    # z² p(1−p)/e² = 1.959964² x 0.25 / 0.05² = 384.146; FPC for N = 1000: 384.146 / 1.383146
    n0 = initial_size(0.5, 0.05, 0.95)
    assert n0 == pytest.approx(384.1459, abs=1e-4)
    assert corrected_size(n0, 1000) == 278  # 277.733 rounded up
    assert corrected_size(n0, 10**12) == 385  # no correction left: ceil(n0)


def test_99_percent_with_fpc():
    # 2.575829² x 0.1 x 0.9 / 0.01² = 5971.407; / (1 + 5970.407 / 5000) = 2721.598
    res = compute_size(5000, 0, confidence=0.99, margin=0.01, proportion=0.1)
    assert res.n0 == pytest.approx(5971.407, abs=1e-3)
    assert res.n_calculated == res.n == 2722
    assert res.method == "calculator" and res.p_source == "given"


def test_90_percent():
    # 1.644854² x 0.02 x 0.98 / 0.005² = 2121.146
    res = compute_size(10**9, 0, confidence=0.90, margin=0.005, proportion=0.02)
    assert res.n0 == pytest.approx(2121.146, abs=1e-3)
    assert res.n == 2122


def test_default_is_the_population_conversion_rate_within_ten_percent():
    # Ali-CCP train: p = 9032 / 42300135, e = 0.1 p -> n0 = 1,798,710.5, n = 1,725,344.4
    res = compute_size(42_300_135, 9032)
    assert res.p == pytest.approx(2.1352e-4, rel=1e-4)
    assert res.p_source == "population conversion rate"
    assert res.relative_margin == 0.1 and res.margin == pytest.approx(0.1 * res.p)
    assert res.n0 == pytest.approx(1_798_710.5, abs=0.5)
    assert res.n == 1_725_345


def test_relative_and_absolute_margin_agree():
    a = compute_size(100_000, 50, relative_margin=0.2)
    b = compute_size(100_000, 50, margin=0.2 * 50 / 100_000)
    assert a.n == b.n and a.n0 == pytest.approx(b.n0)


def test_fraction_and_size_override_the_calculator():
    res = compute_size(1000, 5, fraction=0.1234)
    assert (res.method, res.n) == ("fraction", 124)  # rounded up
    assert res.n_calculated is not None  # still shown
    assert compute_size(1000, 5, size=17).n == 17
    assert compute_size(1000, 5, fraction=1.0).n == 1000


def test_no_conversion_asks_for_p_or_a_size():
    with pytest.raises(DataError, match="--proportion, --fraction or --size"):
        compute_size(1000, 0)
    assert compute_size(1000, 0, size=10).n == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": 0}, "margin must be greater than 0"),
        ({"margin": -0.1}, "margin must be greater than 0"),
        ({"relative_margin": 0}, "relative margin must be greater than 0"),
        ({"confidence": 1.0}, "confidence must be between 0 and 1"),
        ({"confidence": 0}, "confidence must be between 0 and 1"),
        ({"fraction": 0}, "fraction must be in"),
        ({"fraction": 1.5}, "fraction must be in"),
        ({"size": 1001}, "size 1001 is larger than the population"),
        ({"margin": 0.1, "relative_margin": 0.1}, "not both"),
        ({"fraction": 0.1, "size": 3}, "not both"),
    ],
)
def test_bad_inputs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        compute_size(1000, 10, **kwargs)


def test_wilson():
    low, high = wilson(5, 10, 0.95)  # the textbook (0.2366, 0.7634)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    low, high = wilson(0, 10, 0.95)  # upper bound z²/(n+z²)
    assert low == pytest.approx(0, abs=1e-12)
    assert high == pytest.approx(3.841459 / 13.841459, abs=1e-6)
    assert wilson(0, 0, 0.95) is None
