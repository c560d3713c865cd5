"""Allocation of a sample size n to strata: proportional, Neyman or explicit fractions.

Strata are the four (click, conversion) labels, crossed with the values of any --by fields.
Every stratum is kept (never dropped); `min_per_stratum` lifts rare ones (capped at N_h).

Neyman: inside a (click, conversion) stratum both labels are constant, so their variance is 0
and label-only Neyman would be degenerate. The variance used is that of the target label
(conversion by default) within the stratum's --by group g: S_g = sqrt(p_g (1 − p_g)). Stratum h
gets n_h ∝ N_h · S_g(h): Neyman across the --by groups, proportional across labels inside a
group. Without --by there is one group and Neyman equals proportional.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from deepcvr.errors import ConfigError
from deepcvr.sample.keys import LABELS, Population

Allocation = Literal["proportional", "neyman", "explicit"]
_EPS = 1e-9


def label_key(click: int, conversion: int) -> str:
    return f"{click},{conversion}"


def parse_fractions(fractions: dict[str, float]) -> dict[tuple[int, int], float]:
    """`{"0,0": 0.01, "(1,1)": 1}` -> {(0, 0): 0.01, (1, 1): 1.0}, checked."""
    out: dict[tuple[int, int], float] = {}
    for raw, value in fractions.items():
        text = raw.strip().strip("()").replace(" ", "")
        parts = text.split(",")
        if len(parts) != 2 or any(p not in ("0", "1") for p in parts):
            raise ConfigError(
                f"stratum fraction key {raw!r}: expected CLICK,CONVERSION such as 0,0 or 1,1"
            )
        if not 0 <= value <= 1:
            raise ConfigError(f"stratum fraction {raw}={value}: must be in [0, 1]")
        out[(int(parts[0]), int(parts[1]))] = float(value)
    missing = [label_key(*lab) for lab in LABELS if lab not in out]
    if missing:
        raise ConfigError(
            f"explicit allocation needs a fraction for every stratum; missing {', '.join(missing)}"
            " (e.g. --stratum-fraction 0,1=1)"
        )
    return out


def apportion(n: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Integers summing to min(n, sum(caps)), proportional to weights, each at most its cap.

    Strata whose quota reaches their cap get the cap and the rest is shared again; the final
    split uses largest remainders, ties going to the earlier stratum (deterministic).
    """
    out = np.zeros(len(weights), dtype=np.int64)
    free = (caps > 0) & (weights > 0)
    left = min(n, int(caps[free].sum()))
    while left > 0 and free.any():
        quota = np.zeros(len(weights))
        quota[free] = left * weights[free] / weights[free].sum()
        full = free & (quota >= caps)
        if not full.any():
            base = np.floor(quota + _EPS).astype(np.int64)
            out += base
            extra = left - int(base[free].sum())
            rest = np.where(free, quota - base, -1.0)
            order = np.argsort(-rest, kind="stable")
            out[order[:extra]] += 1
            break
        out[full] = caps[full]
        left -= int(caps[full].sum())
        free &= ~full
    return out


@dataclass
class AllocationResult:
    method: str
    target: np.ndarray  # n_h
    weights: np.ndarray  # what n was shared in proportion to (N_h, N_h·S_g), or fractions
    notes: list[str] = field(default_factory=list)


def allocate(
    pop: Population,
    n: int,
    method: Allocation,
    *,
    fractions: dict[str, float] | None = None,
    min_per_stratum: int = 1,
    neyman_target: Literal["conversion", "click"] = "conversion",
) -> AllocationResult:
    sizes = pop.sizes.astype(np.int64)
    strata = pop.strata
    notes: list[str] = []
    if method == "explicit":
        if not fractions:
            raise ConfigError("--allocation explicit needs --stratum-fraction CLICK,CONV=F each")
        by_label = parse_fractions(fractions)
        weights = np.array(
            [by_label[(c, v)] for c, v in strata.select("click", "conversion").iter_rows()]
        )
        target = np.array(
            [min(int(s), math.ceil(f * s - _EPS)) for f, s in zip(weights, sizes, strict=True)],
            dtype=np.int64,
        )
    else:
        if fractions:
            raise ConfigError("--stratum-fraction applies to --allocation explicit only")
        weights = sizes.astype(np.float64)
        if method == "neyman":
            weights = weights * _group_std(strata, pop.columns[2:], neyman_target)
            if not weights.any():
                notes.append(f"Neyman: no {neyman_target} variance in any group; proportional")
                weights = sizes.astype(np.float64)
            elif not pop.columns[2:]:
                notes.append("Neyman without --by: one group, so the same as proportional")
        target = apportion(n, weights, sizes)
        short = min(n, int(sizes.sum())) - int(target.sum())
        if short > 0:  # zero-variance groups absorb what the others cannot hold
            room = sizes - target
            target += apportion(short, room.astype(np.float64), room)
    if min_per_stratum > 0:
        floor = np.minimum(sizes, min_per_stratum)
        lifted = int((floor > target).sum())
        if lifted:
            notes.append(f"{lifted} stratum(s) lifted to the minimum of {min_per_stratum}")
        target = np.maximum(target, floor)
    if method != "proportional" or any("lifted" in note for note in notes):
        notes.append("shares differ from the population by design: use the weights N_h/n_h")
    empty = int(((target == 0) & (sizes > 0)).sum())
    if empty:
        notes.append(f"{empty} non-empty stratum(s) get no impression; raise --min-per-stratum")
    return AllocationResult(method, target, weights, notes)


def _group_std(strata: pl.DataFrame, by: list[str], target: str) -> np.ndarray:
    """S_g of the binary `target` within each stratum's --by group, one value per stratum."""
    keys = by or None
    frame = strata.with_columns(hit=pl.col(target).cast(pl.Float64) * pl.col("N"))
    grouped = frame.with_columns(
        p=(pl.col("hit").sum() / pl.col("N").sum()).over(keys)
        if keys
        else pl.col("hit").sum() / pl.col("N").sum()
    )
    p = grouped.get_column("p").fill_nan(0.0).to_numpy()
    return np.sqrt(p * (1 - p))
