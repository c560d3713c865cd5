"""Keys, histograms and allocation, on synthetic strata (no files)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from deepcvr.errors import ConfigError
from deepcvr.sample import keys
from deepcvr.sample.keys import (
    StrataHistogram,
    bucket_counts,
    key_base,
    mix64,
    mix_int,
    plan_selection,
    resolve_candidates,
    sample_keys,
    with_keys,
)
from deepcvr.sample.strata import allocate, apportion, parse_fractions


def _frame(n: int = 20_000, seed: int = 0, by: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.05).astype(np.int8)
    conv = np.where(click == 1, rng.random(n) < 0.1, rng.random(n) < 0.001).astype(np.int8)
    data = {"sample_id": np.arange(1, n + 1), "click": click, "conversion": conv}
    if by:
        data["by_301"] = rng.choice([10, 20, 30], size=n, p=[0.6, 0.3, 0.1])
    return pl.DataFrame(data)


def _population(frame: pl.DataFrame, base: int = 7) -> keys.Population:
    columns = [c for c in frame.columns if c != "sample_id"]
    hist = StrataHistogram(columns)
    for part in frame.iter_slices(3000):  # several chunks, as the sampler feeds them
        hist.add(bucket_counts(with_keys(part, base), columns))
    return hist.finish()


def test_vectorised_hash_matches_the_reference():
    ids = np.array([1, 2, 3, 42, 2**40 + 5])
    base = key_base(3, "train")
    expected = [mix_int(i ^ base) for i in ids.tolist()]
    assert sample_keys(ids, base).tolist() == expected
    assert mix64(np.array([0], dtype=np.uint64))[0] == mix_int(0)
    assert key_base(3, "train") != key_base(3, "test") != key_base(4, "test")


def test_keys_are_distinct():
    keys_ = sample_keys(np.arange(1, 200_001), key_base(0, "train"))
    assert len(np.unique(keys_)) == len(keys_)


def test_strata_in_report_order_with_counts():
    frame = _frame()
    pop = _population(frame)
    labels = pop.strata.select("click", "conversion").rows()
    assert labels == [(0, 0), (1, 0), (1, 1), (0, 1)]
    truth = frame.group_by("click", "conversion").len()
    got = pop.strata.join(truth, on=["click", "conversion"])
    assert (got["N"] == got["len"]).all() and pop.hist.sum() == frame.height


@pytest.mark.parametrize("budget", [keys.CELL_BUDGET, 256])
def test_selection_is_the_smallest_keys_per_stratum(monkeypatch, budget):
    """Whatever the histogram resolution (256 cells forces 64 buckets, so many candidates),
    the selection is exactly each stratum's n_h smallest keys."""
    monkeypatch.setattr(keys, "CELL_BUDGET", budget)
    frame = _frame(by=True)
    pop = _population(frame)
    if budget == 256:
        assert pop.bits == keys.MIN_BITS
    target = np.minimum(pop.sizes, np.array([500, 7, 3, 1] * 3)[: len(pop.sizes)])
    plan = plan_selection(pop, target)
    keyed = with_keys(frame, 7)
    sid, sure, cand = plan.classify(keyed)
    cands = keyed.filter(pl.Series(cand)).select(
        pl.col("sample_id").alias("ident"), "key", sid=pl.Series(sid[cand])
    )
    drop = resolve_candidates(cands, plan.need)
    if budget == 256:
        assert drop.height > 0  # the boundary resolution was really exercised
    chosen = set(keyed.filter(pl.Series(sure | cand))["sample_id"]) - set(drop["ident"])
    brute = (
        keyed.with_columns(sid=pl.Series(sid), limit=pl.Series(target[sid]))
        .sort("key")
        .with_columns(rank=pl.int_range(pl.len()).over("sid"))
        .filter(pl.col("rank") < pl.col("limit"))
    )
    assert chosen == set(brute["sample_id"])


def test_apportion_sums_and_caps():
    out = apportion(10, np.array([1.0, 1.0, 1.0]), np.array([100, 100, 100]))
    assert out.tolist() == [4, 3, 3]  # ties go to the earlier stratum
    out = apportion(10, np.array([8.0, 1.0, 1.0]), np.array([2, 100, 100]))
    assert out.tolist() == [2, 4, 4]  # capped stratum's excess shared again
    assert apportion(1000, np.array([1.0, 1.0]), np.array([3, 4])).tolist() == [3, 4]


def test_proportional_allocation_keeps_shares():
    pop = _population(_frame(100_000))
    res = allocate(pop, 5000, "proportional", min_per_stratum=0)
    assert res.target.sum() == 5000
    exact = 5000 * pop.sizes / pop.sizes.sum()
    assert np.all(np.abs(res.target - exact) < 1)


def test_minimum_per_stratum_is_capped_at_the_stratum():
    pop = _population(_frame(20_000))
    res = allocate(pop, 100, "proportional", min_per_stratum=50)
    assert np.all(res.target >= np.minimum(pop.sizes, 50))
    assert np.all(res.target <= pop.sizes)
    assert any("lifted" in note for note in res.notes)


def test_neyman_uses_the_by_groups_variance():
    frame = _frame(50_000, by=True)
    pop = _population(frame)
    res = allocate(pop, 2000, "neyman", min_per_stratum=0)
    assert res.target.sum() == 2000
    p = frame.group_by("by_301").agg(pl.col("conversion").mean())
    s = dict(zip(p["by_301"], np.sqrt(p["conversion"] * (1 - p["conversion"])), strict=True))
    weights = pop.sizes * np.array([s[g] for g in pop.strata["by_301"]])
    exact = 2000 * weights / weights.sum()
    assert np.all(np.abs(res.target - exact) < 1)
    # Without --by there is one group: Neyman is proportional.
    flat = _population(frame.drop("by_301"))
    same = allocate(flat, 2000, "neyman", min_per_stratum=0)
    assert (
        same.target.tolist()
        == allocate(flat, 2000, "proportional", min_per_stratum=0).target.tolist()
    )


def test_explicit_fractions():
    pop = _population(_frame(20_000))
    fractions = {"0,0": 0.01, "(1,0)": 0.1, "1,1": 1, "0, 1": 0.5}
    res = allocate(pop, 0, "explicit", fractions=fractions, min_per_stratum=0)
    expected = [math.ceil(f * n) for f, n in zip([0.01, 0.1, 1, 0.5], pop.sizes, strict=True)]
    assert res.target.tolist() == expected


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ({"0,0": 0.1}, "missing 1,0, 1,1, 0,1"),
        ({"2,0": 0.1}, "expected CLICK,CONVERSION"),
        ({"0,0": 1.5, "1,0": 1, "1,1": 1, "0,1": 1}, "must be in"),
    ],
)
def test_bad_fractions(fractions, message):
    with pytest.raises(ConfigError, match=message):
        parse_fractions(fractions)
