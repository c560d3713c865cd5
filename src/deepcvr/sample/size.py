"""Sample size from the central limit theorem, and Wilson intervals for the report.

n0 = z² p (1 − p) / e² estimates a proportion p within ±e at confidence c; the finite population
correction n = n0 / (1 + (n0 − 1) / N) shrinks it for a population of N, rounded up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from deepcvr.errors import ConfigError, DataError

_EPS = 1e-9  # ceil() must not turn a float-noise 278.0000000001 into 279


def z_value(confidence: float) -> float:
    """Two-sided standard normal quantile: 1.6449 for 0.90, 1.9600 for 0.95, 2.5758 for 0.99."""
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def initial_size(p: float, margin: float, confidence: float) -> float:
    """n0 = z² p (1 − p) / e², unrounded (the FPC needs the exact value)."""
    if margin <= 0:
        raise ConfigError(f"margin must be greater than 0, got {margin}")
    z = z_value(confidence)
    return z * z * p * (1 - p) / (margin * margin)


def corrected_size(n0: float, population: int) -> int:
    """n = n0 / (1 + (n0 − 1) / N), rounded up and never above N."""
    if population <= 0:
        return 0
    n = n0 / (1 + (n0 - 1) / population)
    return min(population, max(0, math.ceil(n - _EPS)))


@dataclass(frozen=True)
class SizeResult:
    """Inputs and outputs of the calculator, as shown by --dry-run and kept in the report."""

    population: int  # N
    p: float | None  # the proportion the size is computed for
    p_source: str  # "population conversion rate" or "given"
    confidence: float
    z: float
    margin: float | None  # absolute e
    relative_margin: float | None  # e / p, when the margin was given relative
    n0: float | None  # before the finite population correction
    n_calculated: int | None  # after it
    method: str  # calculator | fraction | size
    n: int  # the sample size the allocation starts from

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_size(
    population: int,
    conversions: int,
    *,
    confidence: float = 0.95,
    margin: float | None = None,
    relative_margin: float | None = None,
    proportion: float | None = None,
    fraction: float | None = None,
    size: int | None = None,
) -> SizeResult:
    """The sample size for a split of `population` impressions holding `conversions`.

    `fraction` or `size` override the calculator; the calculator is still shown when it can run.
    """
    if margin is not None and relative_margin is not None:
        raise ConfigError("give --margin or --relative-margin, not both")
    if fraction is not None and size is not None:
        raise ConfigError("give --fraction or --size, not both")
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    if size is not None and size > population:
        raise ConfigError(f"size {size} is larger than the population ({population} impressions)")
    for name, value in (("margin", margin), ("relative margin", relative_margin)):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be greater than 0, got {value}")
    z = z_value(confidence)
    p = proportion if proportion is not None else conversions / population if population else 0.0
    p_source = "given" if proportion is not None else "population conversion rate"
    if margin is None and relative_margin is None:
        relative_margin = 0.1  # the default: the conversion rate within ±10 % of itself
    e = margin if margin is not None else (relative_margin or 0) * p
    n0 = n_calc = None
    if 0 < p < 1 and e > 0:
        n0 = initial_size(p, e, confidence)
        n_calc = corrected_size(n0, population)
    if size is not None:
        method, n = "size", size
    elif fraction is not None:
        method, n = "fraction", min(population, math.ceil(fraction * population - _EPS))
    elif n_calc is None:
        raise DataError(
            f"cannot size the sample: the proportion p is {p:g} (no conversions among "
            f"{population} impressions?); give --proportion, --fraction or --size"
        )
    else:
        method, n = "calculator", n_calc
    return SizeResult(
        population=population,
        p=p,
        p_source=p_source,
        confidence=confidence,
        z=z,
        margin=e if n0 is not None else margin,
        relative_margin=relative_margin if margin is None else (margin / p if p else None),
        n0=n0,
        n_calculated=n_calc,
        method=method,
        n=n,
    )


def wilson(successes: int, n: int, confidence: float) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion; None for an empty sample."""
    if n <= 0:
        return None
    z = z_value(confidence)
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no float dust
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high
