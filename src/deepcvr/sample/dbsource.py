"""Sampling a loaded database (DuckDB) instead of raw files, with the same selection.

The population is streamed from the `sample` table in Arrow batches and goes through the same
keys, histograms, allocation and boundary resolution as raw files, so the same seed selects the
same sample_ids from a database as from the raw files it was loaded from. The raw layout is
rebuilt from the tables: `field_id 0x02 feature_id 0x03 value` joined by 0x01 in position order,
values printed by DuckDB's shortest round-trip formatting (as Python's repr).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from deepcvr.aliccp import SPLITS, common_name, skeleton_name
from deepcvr.errors import ConfigError, DataError
from deepcvr.fsutil import atomic_dir
from deepcvr.sample.keys import StrataHistogram, key_base, resolve_candidates, with_keys
from deepcvr.sample.lines import by_column
from deepcvr.sample.raw import strata_columns
from deepcvr.sample.report import print_report, write_report
from deepcvr.sample.sampler import (
    SampleOptions,
    SplitDesign,
    check_output,
    design,
    fingerprint,
    report_head,
    split_entry,
    up_to_date,
)
from deepcvr.secrets import mask_url

log = logging.getLogger("deepcvr")
BATCH_ROWS = 1 << 17
_STRUCT = (
    "f.field_id || chr(2) || CAST({t}.feature_id AS VARCHAR) || chr(3) || "
    "CAST({t}.value AS VARCHAR)"
)


def database_path(url: str) -> Path:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"--source {mask_url(url)!r} is not a database URL") from None
    if parsed.get_backend_name() != "duckdb" or not parsed.database:
        raise ConfigError(f"--source {mask_url(url)!r}: only duckdb:///PATH can be sampled")
    path = Path(parsed.database)
    if not path.is_file():
        raise DataError(f"--source {mask_url(url)}: database file {path} not found")
    return path


def _population_sql(by: list[str]) -> str:
    """sample_id, click, conversion and the first feature of each --by field (-1 if absent)."""
    cols, joins = [], []
    for i, f in enumerate(by):
        cols.append(f"coalesce(b{i}.v, -1)::BIGINT AS {by_column(f)}")
        joins.append(
            f"LEFT JOIN (SELECT sf.sample_id, arg_min(sf.feature_id, sf.position) AS v "
            f"FROM sample_feature sf JOIN feature f USING (feature_id) "
            f"WHERE sf.split = $split AND f.field_id = '{f}' GROUP BY sf.sample_id) b{i} "
            f"ON b{i}.sample_id = s.sample_id"
        )
    extra = "".join(f", {c}" for c in cols)
    return (
        f"SELECT s.sample_id, s.click, s.conversion{extra} FROM sample s {' '.join(joins)} "
        "WHERE s.split = $split"
    )


def _batches(con: duckdb.DuckDBPyConnection, sql: str, split: str) -> Iterator[pl.DataFrame]:
    rel = con.sql(sql, params={"split": split})
    # DuckDB 2 renamed fetch_record_batch (deprecated) to to_arrow_reader.
    fetch = getattr(rel, "to_arrow_reader", None) or rel.fetch_record_batch
    reader = fetch(BATCH_ROWS)
    for batch in reader:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        yield frame


def _scan(con: duckdb.DuckDBPyConnection, split: str, by: list[str], base: int) -> StrataHistogram:
    hist = StrataHistogram(strata_columns(by))
    for frame in _batches(con, _population_sql(by), split):
        hist.add(with_keys(frame, base).group_by([*hist.columns, "bucket"]).len())
    return hist


def _select(
    con: duckdb.DuckDBPyConnection, d: SplitDesign, by: list[str], base: int
) -> tuple[np.ndarray, np.ndarray]:
    """The selected sample_ids (sorted) and the count per stratum."""
    plan = d.plan
    sure: list[np.ndarray] = []
    cands: list[pl.DataFrame] = []
    for frame in _batches(con, _population_sql(by), d.split):
        keyed = with_keys(frame, base)
        sid, is_sure, is_cand = plan.classify(keyed)
        sure.append(np.stack([keyed.get_column("sample_id").to_numpy()[is_sure], sid[is_sure]]))
        cands.append(
            keyed.filter(pl.Series(is_cand)).select(
                pl.col("sample_id").alias("ident"), "key", sid=pl.Series(sid[is_cand])
            )
        )
    all_cands = pl.concat(cands) if cands else pl.DataFrame()
    drop = resolve_candidates(all_cands, plan.need)
    kept = all_cands.join(drop, on="ident", how="anti") if cands else None
    pairs = np.concatenate(sure, axis=1) if sure else np.zeros((2, 0), dtype=np.int64)
    if kept is not None and kept.height:
        extra = np.stack([kept.get_column("ident").to_numpy(), kept.get_column("sid").to_numpy()])
        pairs = np.concatenate([pairs, extra], axis=1)
    ids = np.sort(pairs[0])
    counts = np.bincount(pairs[1], minlength=len(plan.target)) if pairs.size else plan.target * 0
    return ids, counts


def _write_lines(con: duckdb.DuckDBPyConnection, sql: str, split: str, target: Path) -> int:
    lines = 0
    with open(target, "wb") as out:
        for frame in _batches(con, sql, split):
            frame.write_csv(out, include_header=False, quote_style="never")
            lines += frame.height
    return lines


def _write_split(
    con: duckdb.DuckDBPyConnection, split: str, ids: np.ndarray, out: Path
) -> dict[str, Any]:
    con.register("selected_ids", pa.table({"sample_id": pa.array(ids, type=pa.int64())}))
    skeleton_sql = f"""
        SELECT concat_ws(',', s.sample_id, s.click, s.conversion, s.common_feature_index,
            s.num_features, coalesce(l.list, '')) AS line
        FROM selected_ids x JOIN sample s ON s.split = $split AND s.sample_id = x.sample_id
        LEFT JOIN (
            SELECT sf.sample_id,
                string_agg({_STRUCT.format(t="sf")}, chr(1) ORDER BY sf.position) AS list
            FROM selected_ids y JOIN sample_feature sf
                ON sf.split = $split AND sf.sample_id = y.sample_id
            JOIN feature f ON f.feature_id = sf.feature_id
            GROUP BY sf.sample_id
        ) l ON l.sample_id = s.sample_id
        ORDER BY s.sample_id"""
    common_sql = f"""
        WITH used AS (SELECT DISTINCT s.common_feature_index AS idx FROM selected_ids x
            JOIN sample s ON s.split = $split AND s.sample_id = x.sample_id)
        SELECT concat_ws(',', g.common_feature_index, g.num_features, coalesce(l.list, ''))
            AS line
        FROM used JOIN common_feature_group g
            ON g.split = $split AND g.common_feature_index = used.idx
        LEFT JOIN (
            SELECT cf.common_feature_index AS idx,
                string_agg({_STRUCT.format(t="cf")}, chr(1) ORDER BY cf.position) AS list
            FROM used JOIN common_feature cf
                ON cf.split = $split AND cf.common_feature_index = used.idx
            JOIN feature f ON f.feature_id = cf.feature_id
            GROUP BY cf.common_feature_index
        ) l ON l.idx = g.common_feature_index
        ORDER BY g.common_feature_index"""
    used_sql = """SELECT count(DISTINCT s.common_feature_index) FROM selected_ids x
        JOIN sample s ON s.split = $split AND s.sample_id = x.sample_id"""
    try:
        skeleton_lines = _write_lines(con, skeleton_sql, split, out / skeleton_name(split))
        common_lines = _write_lines(con, common_sql, split, out / common_name(split))
        rows = con.execute(used_sql, {"split": split}).fetchall()
    finally:
        con.unregister("selected_ids")
    used = int(rows[0][0])
    return {
        "skeleton_lines": skeleton_lines,
        "common_lines": common_lines,
        "missing_common_rows": used - common_lines,
    }


def sample_database(
    url: str,
    out_dir: Path,
    opts: SampleOptions,
    splits: list[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Sample the splits of a loaded DuckDB database into OUT_DIR (raw layout)."""
    opts.check()
    path = database_path(url)
    check_output(out_dir, [path])
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as err:
        raise DataError(f"--source {mask_url(url)}: cannot open ({err})") from None
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        need = {"sample", "sample_feature", "feature", "common_feature_group", "common_feature"}
        if not need <= tables:
            raise DataError(f"--source {mask_url(url)}: not a deepcvr database (no sample table)")
        rows = con.execute("SELECT DISTINCT split FROM sample").fetchall()
        present = [s for s in SPLITS if (s,) in rows]
        wanted = list(dict.fromkeys(splits)) if splits else present
        missing = [s for s in wanted if s not in present]
        if missing or not wanted:
            raise DataError(
                f"--source {mask_url(url)}: no rows for split {', '.join(missing) or 'any'}"
            )
        fp = fingerprint([path], opts, wanted)
        if not opts.dry_run and not force and (old := up_to_date(out_dir, fp)) is not None:
            log.info("%s: sample is up to date (same database and settings); skipped", out_dir)
            return {**old, "skipped": "up to date"}
        designs = {}
        for split in wanted:
            hist = _scan(con, split, opts.by, key_base(opts.seed, split))
            designs[split] = design(split, hist.finish(), 0, opts)
        report = report_head(mask_url(url), out_dir, opts, fp)
        if opts.dry_run:
            report["splits"] = {s: split_entry(d, None, {}) for s, d in designs.items()}
            print_report(report)
            return report
        with atomic_dir(out_dir) as tmp:
            for split, d in designs.items():
                ids, counts = _select(con, d, opts.by, key_base(opts.seed, split))
                (tmp / split).mkdir()
                extra = _write_split(con, split, ids, tmp / split)
                report["splits"][split] = split_entry(d, counts, extra)
            write_report(report, tmp)
    finally:
        con.close()
    print_report(report)
    return report
