"""Sampling raw Ali-CCP files: pass 1 counts strata, pass 2 writes the selected lines verbatim.

The main thread reads line-aligned chunks sequentially; a thread pool (Polars and NumPy release
the GIL) parses them, at most 2 x workers in flight, and results are consumed in file order. So
output order and content never depend on the number of workers or the chunk size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl

from deepcvr.aliccp import raw_files, split_dir
from deepcvr.progress import progress
from deepcvr.sample.keys import (
    Population,
    SelectionPlan,
    StrataHistogram,
    bucket_counts,
    resolve_candidates,
    with_keys,
)
from deepcvr.sample.lines import (
    by_column,
    common_indexes,
    gather,
    iter_chunks,
    line_offsets,
    skeleton_frame,
)

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(func: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """map() on a thread pool, results in input order, at most 2 x workers items in flight."""
    if workers <= 1:
        yield from map(func, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="deepcvr-sample") as pool:
        pending: list[Future[R]] = []
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) > 2 * workers:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def strata_columns(by: list[str]) -> list[str]:
    return ["click", "conversion", *(by_column(f) for f in by)]


def split_files(raw_dir: Path, split: str) -> tuple[Path, Path]:
    """(common, skeleton) of a split, in `raw_dir` or `raw_dir/{split}/`."""
    return raw_files(split_dir(raw_dir, split), split)


def scan_skeleton(
    path: Path, by: list[str], base: int, workers: int, chunk_bytes: int
) -> tuple[Population, int]:
    """Pass 1: strata counts and key histograms, and the number of invalid lines left out."""
    columns = strata_columns(by)

    def work(data: bytes) -> tuple[pl.DataFrame, int, int]:
        frame, bad = skeleton_frame(data, by)
        return bucket_counts(with_keys(frame, base), columns), bad, len(data)

    hist = StrataHistogram(columns)
    invalid = 0
    with progress(f"sample: scan {path.name}", path.stat().st_size) as advance:
        for counts, bad, nbytes in ordered_map(work, iter_chunks(path, chunk_bytes), workers):
            hist.add(counts)
            invalid += bad
            advance(nbytes)
    return hist.finish(), invalid


@dataclass
class _Piece:
    nbytes: int
    data: bytes  # the selected lines, verbatim
    lines: int
    counts: np.ndarray
    sure_index: pl.Series  # common indexes of the lines taken for sure
    cands: pl.DataFrame  # ident (line number in this piece), key, sid, common_feature_index


def write_skeleton(
    path: Path,
    by: list[str],
    base: int,
    plan: SelectionPlan,
    target: Path,
    workers: int,
    chunk_bytes: int,
) -> tuple[np.ndarray, int, pl.Series]:
    """Pass 2 over the skeleton: write the selected lines in file order to `target`.

    Boundary candidates are written too; the losers are removed afterwards by copying the
    (sample-sized) output once. Returns per-stratum counts, lines written and the sorted common
    indexes the written lines reference.
    """
    strata = len(plan.target)

    def work(data: bytes) -> _Piece:
        frame, _ = skeleton_frame(data, by)
        frame = with_keys(frame, base)
        sid, sure, cand = plan.classify(frame)
        take = sure | cand
        rows = frame.get_column("row").to_numpy()[take]
        picked = frame.filter(pl.Series(take)).with_columns(
            ident=pl.int_range(pl.len(), dtype=pl.Int64), sid=pl.Series(sid[take])
        )
        is_cand = pl.Series(cand[take])
        return _Piece(
            nbytes=len(data),
            data=gather(data, line_offsets(data), rows),
            lines=len(rows),
            counts=np.bincount(sid[take], minlength=strata),
            sure_index=picked.filter(~is_cand).get_column("common_feature_index").unique(),
            cands=picked.filter(is_cand).select("ident", "key", "sid", "common_feature_index"),
        )

    counts = np.zeros(strata, dtype=np.int64)
    sure: list[pl.Series] = []
    cands: list[pl.DataFrame] = []
    written = 0
    tmp = target.with_name(f".{target.name}.all")
    with (
        progress(f"sample: write {path.name}", path.stat().st_size) as advance,
        open(tmp, "wb") as out,
    ):
        for piece in ordered_map(work, iter_chunks(path, chunk_bytes), workers):
            out.write(piece.data)
            counts += piece.counts
            sure.append(piece.sure_index)
            cands.append(piece.cands.with_columns(pl.col("ident") + written))
            written += piece.lines
            if len(sure) > 64:  # keep the index list compact: bounded by the sample's groups
                sure = [pl.concat(sure).unique()]
            advance(piece.nbytes)
    all_cands = pl.concat(cands)
    drop = resolve_candidates(all_cands, plan.need)
    if drop.is_empty():
        os.replace(tmp, target)
    else:
        _drop_lines(tmp, target, drop.get_column("ident").sort().to_numpy(), chunk_bytes)
        tmp.unlink()
        counts -= np.bincount(drop.get_column("sid").to_numpy(), minlength=strata)
    kept = all_cands.join(drop.select("ident"), on="ident", how="anti")
    indexes = pl.concat([*sure, kept.get_column("common_feature_index")]).unique().sort()
    return counts, written - drop.height, indexes


def _drop_lines(src: Path, dst: Path, drop: np.ndarray, chunk_bytes: int) -> None:
    """Copy `src` to `dst` without the lines numbered `drop` (0-based, sorted)."""
    first = 0
    with open(dst, "wb") as out:
        for data in iter_chunks(src, chunk_bytes):
            offsets = line_offsets(data)
            n = len(offsets) - 1
            lo, hi = np.searchsorted(drop, [first, first + n])
            keep = np.ones(n, dtype=bool)
            keep[drop[lo:hi] - first] = False
            out.write(gather(data, offsets, np.flatnonzero(keep)))
            first += n


def write_common(
    path: Path, wanted: pl.Series, target: Path, workers: int, chunk_bytes: int
) -> tuple[int, int]:
    """Write the common lines whose index is in `wanted`, first occurrence only, in file order.
    Returns (lines written, wanted indexes not found in the file)."""

    def work(data: bytes) -> tuple[bytes, np.ndarray, np.ndarray, pl.Series]:
        offsets = line_offsets(data)
        rows, idx = common_indexes(data, offsets)
        hit = idx.is_in(wanted.implode()) & idx.is_first_distinct()
        return data, offsets, rows[hit.to_numpy()], idx.filter(hit)

    seen = pl.Series("common_feature_index", [], dtype=pl.String)
    lines = 0
    with (
        progress(f"sample: write {path.name}", path.stat().st_size) as advance,
        open(target, "wb") as out,
    ):
        for data, offsets, rows, idx in ordered_map(work, iter_chunks(path, chunk_bytes), workers):
            if seen.len():  # an index seen in an earlier chunk: the first line wins (transform)
                again = idx.is_in(seen.implode()).to_numpy()
                rows, idx = rows[~again], idx.filter(pl.Series(~again))
            out.write(gather(data, offsets, rows))
            seen = pl.concat([seen, idx])
            lines += len(rows)
            advance(len(data))
    return lines, wanted.len() - seen.n_unique()
