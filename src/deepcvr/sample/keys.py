"""Selection keys: a seeded hash of each impression's id, and per-stratum key histograms.

Every impression gets key = splitmix64(sample_id XOR base(seed, split)); a stratum's sample is
its n_h impressions with the smallest keys. The key depends on the impression alone, never on
where a chunk starts or which worker read it, so the selection cannot depend on either.

The first pass cannot keep the keys (that is the input's size) and does not yet know n_h (it
depends on N and p, known only at the end), so it keeps a histogram of each stratum's keys over
their top bits. That fixes, per stratum, the buckets taken whole and the one boundary bucket
whose keys are candidates: the second pass keeps the candidates and then the n_h − (taken
below) smallest of them. Memory: strata x buckets counters plus the candidates (≈ N_h / buckets).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from deepcvr.errors import ConfigError, DataError

MASK64 = (1 << 64) - 1
_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
KEY_BITS = 16  # workers report buckets at this resolution; the histogram may be coarser
CELL_BUDGET = 1 << 22  # histogram counters (int64): 32 MB at most
MIN_BITS = 6
MAX_STRATA = 10_000  # beyond this a --by field is too fine to stratify on (and to report)
LABELS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (1, 1), (0, 1))  # report order
ABSENT = -1  # a --by field missing from the impression


def mix_int(x: int) -> int:
    """splitmix64's finaliser on a Python int (a bijection of 64-bit words)."""
    z = (x + _GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def mix64(x: np.ndarray) -> np.ndarray:
    """The same finaliser on a uint64 array; NumPy array arithmetic wraps modulo 2**64."""
    z = x.astype(np.uint64) + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def key_base(seed: int, split: str) -> int:
    """Per (seed, split) constant; crc32, unlike hash(), is stable across processes."""
    return mix_int((mix_int(seed & MASK64) + zlib.crc32(split.encode())) & MASK64)


def sample_keys(sample_id: np.ndarray, base: int) -> np.ndarray:
    """Distinct ids give distinct keys: XOR with a constant and the finaliser are bijections."""
    return mix64(sample_id.astype(np.int64).view(np.uint64) ^ np.uint64(base))


def with_keys(frame: pl.DataFrame, base: int) -> pl.DataFrame:
    """Add `key` (UInt64) and `bucket` (top KEY_BITS bits) to a frame holding `sample_id`."""
    keys = sample_keys(frame.get_column("sample_id").to_numpy(), base)
    return frame.with_columns(
        key=pl.Series(keys, dtype=pl.UInt64),
        bucket=pl.Series(keys >> np.uint64(64 - KEY_BITS), dtype=pl.UInt32),
    )


def bucket_counts(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Impressions per (stratum, bucket) of one chunk: what pass 1 sends back from a worker."""
    return frame.group_by([*columns, "bucket"]).len()


class StrataHistogram:
    """Accumulates per-stratum key histograms; strata appear as the data shows them."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.strata = pl.DataFrame(schema={**dict.fromkeys(columns, pl.Int64), "sid": pl.Int64})
        self.bits = KEY_BITS
        self.hist = np.zeros((0, 1 << KEY_BITS), dtype=np.int64)

    def add(self, counts: pl.DataFrame) -> None:
        counts = counts.with_columns(pl.col(self.columns).cast(pl.Int64))
        new = counts.select(self.columns).unique().join(self.strata, on=self.columns, how="anti")
        if new.height:
            first = self.strata.height
            new = new.sort(self.columns).with_row_index("sid", offset=first)
            new = new.with_columns(pl.col("sid").cast(pl.Int64)).select(self.strata.columns)
            self.strata = pl.concat([self.strata, new])
            if self.strata.height > MAX_STRATA:
                raise ConfigError(
                    f"more than {MAX_STRATA} strata: the --by field(s) have too many values; "
                    "choose a coarser field (e.g. --by 301)"
                )
            while self.strata.height << self.bits > CELL_BUDGET and self.bits > MIN_BITS:
                rows, width = self.hist.shape
                self.hist = self.hist.reshape(rows, width // 2, 2).sum(axis=2)  # merge pairs
                self.bits -= 1
            grown = np.zeros((self.strata.height, 1 << self.bits), dtype=np.int64)
            grown[: self.hist.shape[0]] = self.hist
            self.hist = grown
        joined = counts.join(self.strata, on=self.columns, how="left")
        width = 1 << self.bits
        cell = joined.get_column("sid").to_numpy() * width + (
            joined.get_column("bucket").to_numpy().astype(np.int64) >> (KEY_BITS - self.bits)
        )
        np.add.at(self.hist.reshape(-1), cell, joined.get_column("len").to_numpy())

    def finish(self) -> Population:
        """Strata in report order: labels (0,0), (1,0), (1,1), (0,1), then --by values."""
        codes = {c * 2 + v: i for i, (c, v) in enumerate(LABELS)}
        label_rank = (pl.col("click") * 2 + pl.col("conversion")).replace_strict(codes)
        ordered = (
            self.strata.with_columns(rank=label_rank).sort(["rank", *self.columns[2:]]).drop("rank")
        )
        old = ordered.get_column("sid").to_numpy()
        hist = self.hist[old] if len(old) else self.hist
        strata = ordered.with_columns(
            sid=pl.int_range(pl.len(), dtype=pl.Int64), N=pl.Series(hist.sum(axis=1))
        )
        return Population(self.columns, strata, hist, self.bits)


@dataclass
class Population:
    columns: list[str]  # click, conversion, then one by_<field> column per --by field
    strata: pl.DataFrame  # columns + sid (0..S-1, report order) + N (impressions)
    hist: np.ndarray  # (S, 2**bits) impressions per key bucket
    bits: int

    @property
    def sizes(self) -> np.ndarray:
        return self.strata.get_column("N").to_numpy()


@dataclass
class SelectionPlan:
    """Per stratum: buckets below `whole` are taken whole; bucket `cand` (or -1) is the boundary,
    of whose keys the `need` smallest are taken."""

    strata: pl.DataFrame  # columns + sid
    columns: list[str]
    bits: int
    whole: np.ndarray
    cand: np.ndarray
    need: np.ndarray
    target: np.ndarray  # n_h

    def classify(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sid, taken for sure, boundary candidate) for a frame holding the strata and `key`."""
        joined = frame.select(pl.col(self.columns).cast(pl.Int64)).join(
            self.strata.select([*self.columns, "sid"]),
            on=self.columns,
            how="left",
            maintain_order="left",
        )
        sid_s = joined.get_column("sid")
        if sid_s.null_count():
            raise DataError("the input changed between the two passes (a new stratum appeared)")
        sid = sid_s.to_numpy()
        bucket = (frame.get_column("key").to_numpy() >> np.uint64(64 - self.bits)).astype(np.int64)
        return sid, bucket < self.whole[sid], bucket == self.cand[sid]


def plan_selection(pop: Population, target: np.ndarray) -> SelectionPlan:
    """Find each stratum's whole buckets and boundary bucket for n_h = target[h]."""
    hist = pop.hist
    sizes = hist.sum(axis=1)
    rows, width = hist.shape
    whole = np.zeros(rows, dtype=np.int64)
    cand = np.full(rows, -1, dtype=np.int64)
    need = np.zeros(rows, dtype=np.int64)
    cum = np.cumsum(hist, axis=1)
    partial = (target > 0) & (target < sizes)
    whole[target >= sizes] = width
    if partial.any():
        h = np.flatnonzero(partial)
        b = np.argmax(cum[h] >= target[h, None], axis=1)  # first bucket reaching n_h
        below = np.where(b > 0, cum[h, np.maximum(b - 1, 0)], 0)
        left = target[h] - below
        exact = left == hist[h, b]  # the boundary bucket is taken whole
        whole[h] = np.where(exact, b + 1, b)
        cand[h] = np.where(exact, -1, b)
        need[h] = np.where(exact, 0, left)
    return SelectionPlan(
        pop.strata.select([*pop.columns, "sid"]), pop.columns, pop.bits, whole, cand, need, target
    )


def resolve_candidates(cands: pl.DataFrame, need: np.ndarray) -> pl.DataFrame:
    """Candidates (ident, key, sid) to drop: all but the `need[sid]` smallest keys of each sid."""
    if cands.is_empty():
        return cands
    ranked = cands.sort(["sid", "key", "ident"])
    ranked = ranked.with_columns(
        rank=pl.int_range(pl.len(), dtype=pl.Int64).over("sid"),
        need=pl.Series(need[ranked.get_column("sid").to_numpy()]),
    )
    return ranked.filter(pl.col("rank") >= pl.col("need")).select(cands.columns)
