"""Benchmark the load (3NF Parquet -> database) per table and target, against raw bulk paths.

    python benchmarks/load.py [--samples 200000] [--targets duckdb,mariadb,postgres]
                              [--repeat 2] [--executemany-rows 200000] [--keys-after]

1. End to end: `deepcvr load` into each target (a scratch database on the servers): rows/s per
   table of the bulk load, and including the key build; the run's total with staging,
   verification and swap.
2. Bulk path, paired: per table, into identical fresh tables (the staging DDL), alternating
   --repeat times and keeping the best of each (the machine may be shared: alternation and
   best-of keep load spikes from deciding the ratio):
     deepcvr     Parquet -> TSV batches -> LOAD DATA LOCAL INFILE through a pipe / COPY;
     raw         LOAD DATA LOCAL INFILE of a prepared TSV file (MariaDB) / COPY FROM STDIN
                 of a prepared file in 1 MB writes (PostgreSQL), the same bytes;
     executemany PyMySQL / psycopg executemany, 5,000-row batches, on the first
                 --executemany-rows rows (it is slow; its rate does not grow with size).
   Targets: >= 0.85x raw, >= 3x executemany.
--keys-after also runs MariaDB end to end with the primary key added after the load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from measure import ROOT

sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy.engine import make_url

from deepcvr.load import tsv
from deepcvr.load.database import connect_server, load
from deepcvr.load.mysql_target import LOAD_SQL, MySQLTarget
from deepcvr.load.parquet_input import ParquetInput, inspect_parquet
from deepcvr.schema import MODEL, Table

DEFAULT_MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BATCH = 5_000
Rates = dict[str, tuple[float, ...]]


def make_parquet(data_dir: Path, samples: int) -> Path:
    """Generated train split -> 3NF Parquet, cached by size."""
    from deepcvr.synth import generate
    from deepcvr.transform.engine import TransformOptions, transform

    out = data_dir / f"load-parquet-{samples}"
    if not (out / "train" / "_manifest.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        raw = data_dir / f"load-raw-{samples}"
        shutil.rmtree(raw, ignore_errors=True)
        generate(raw / "train", samples, "train", seed=11)
        transform(raw, out, None, TransformOptions())
        shutil.rmtree(raw)
    return out


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def scratch(admin_url: str) -> Iterator[str]:
    """The URL of a new database on the admin URL's server; dropped afterwards."""
    name = f"deepcvr_bench_{uuid.uuid4().hex[:8]}"
    u = make_url(admin_url)
    admin = connect_server(admin_url)
    if admin.dialect == "postgresql":
        admin.con.autocommit = True  # type: ignore[attr-defined]  # CREATE DATABASE needs it
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield u.set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if admin.dialect == "postgresql" else ""
        admin.execute(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.close()


# --- 1. end to end ------------------------------------------------------------------------------


def end_to_end(parquet: Path, url: str) -> Rates:
    """table -> (rows/s of the load, rows/s with keys); "all": (load, whole run)."""
    summary = load(parquet, url)
    assert all(c["ok"] for c in summary["checks"])
    out: Rates = {}
    rows_all = seconds_all = 0.0
    for name, info in summary["tables"].items():
        if name == "rejects" or not info["parquet_rows"]:
            continue
        rows, seconds = info["parquet_rows"], info["seconds"]
        out[name] = (rows / seconds, rows / (seconds + info.get("keys_seconds", 0.0)))
        rows_all, seconds_all = rows_all + rows, seconds_all + seconds
    out["all"] = (rows_all / seconds_all, rows_all / summary["seconds"])
    return out


# --- 2. bulk path, paired -----------------------------------------------------------------------


def paired(url: str, inp: ParquetInput, work: Path, repeat: int, many_rows: int) -> Rates:
    """table -> (deepcvr, raw, executemany) rows/s, best of `repeat` alternating runs."""
    target = connect_server(url)
    target.prepare()
    con = target.con  # type: ignore[attr-defined]
    pg = target.dialect == "postgresql"

    def commit() -> None:
        if pg:  # the MySQL connection is in autocommit mode
            con.commit()

    out: Rates = {}
    try:
        for table in MODEL:
            files, rows = inp.tables[table.name].files, inp.tables[table.name].rows
            prepared = work / f"{table.name}.tsv"
            with prepared.open("wb") as f:  # the very bytes the loader streams
                for data, _n in tsv.tsv_chunks(files, table):
                    f.write(data)
            sample = _rows(files, table, many_rows)
            best = [0.0, 0.0, 0.0]
            for _ in range(repeat):
                runs: list[tuple[int, Callable[[str], Any]]] = [
                    (rows, lambda n, t=table, f=files: target.bulk_load(n, t, f, lambda _r: None)),
                    (rows, lambda n, t=table, p=prepared: _raw(pg, con, n, t, p)),
                    (len(sample), lambda n, t=table, s=sample: _executemany(con, n, t, s)),
                ]
                for i, (count, run) in enumerate(runs):
                    name = f"b_{table.name}_{i}"
                    target.execute(f"DROP TABLE IF EXISTS {name}")
                    target.execute(target.create_sql(table, name, target.pk_inline))
                    commit()
                    seconds = timed(lambda run=run, name=name: (run(name), commit()))
                    best[i] = max(best[i], count / seconds)
                    target.execute(f"DROP TABLE {name}")
                    commit()
            out[table.name] = tuple(best)
            prepared.unlink()
    finally:
        target.close()
    total = sum(inp.tables[t.name].rows for t in MODEL)
    out["all"] = tuple(
        total / sum(inp.tables[t.name].rows / out[t.name][i] for t in MODEL) for i in range(3)
    )
    return out


def _rows(files: Any, table: Table, limit: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for batch in tsv.parquet_batches(files, table):
        rows += zip(*(c.to_pylist() for c in batch.columns), strict=True)
        if len(rows) >= limit:
            break
    return rows[:limit]


def _raw(pg: bool, con: Any, name: str, table: Table, path: Path) -> None:
    if not pg:
        with con.cursor() as cur:
            cur.execute(
                LOAD_SQL.format(name=name, cols=", ".join(table.column_names)), (str(path),)
            )
        return
    with con.cursor() as cur, cur.copy(f"COPY {name} FROM STDIN") as cp, path.open("rb") as f:
        while chunk := f.read(1 << 20):
            cp.write(chunk)


def _executemany(con: Any, name: str, table: Table, rows: list[tuple[Any, ...]]) -> None:
    sql = f"INSERT INTO {name} VALUES ({', '.join(['%s'] * len(table.columns))})"
    with con.cursor() as cur:
        for i in range(0, len(rows), BATCH):
            cur.executemany(sql, rows[i : i + BATCH])


# --- report ------------------------------------------------------------------------------------


def report(title: str, e2e: Rates, pairs: Rates | None) -> None:
    print(f"\n{title}")
    head = f"{'table':<22}{'load rows/s':>12}{'with keys':>11}"
    if pairs:
        head += f" |{'bulk path':>11}{'raw':>11}{'vs raw':>8}{'executemany':>13}{'vs many':>9}"
    print(head)
    print("-" * len(head))
    for name, (load_rate, keyed) in e2e.items():
        line = f"{name:<22}{load_rate:>12,.0f}{keyed:>11,.0f}"
        if pairs and name in pairs:
            ours, raw, many = pairs[name]
            line += f" |{ours:>11,.0f}{raw:>11,.0f}{ours / raw:>7.2f}x{many:>13,.0f}"
            line += f"{ours / many:>8.1f}x"
        print(line)
    print("('all', with keys = the whole run: staging, keys, verification, swap)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000, help="impressions (train split)")
    parser.add_argument("--targets", default="duckdb,mariadb,postgres")
    parser.add_argument("--mysql-url", default=os.environ.get("DEEPCVR_TEST_MYSQL", DEFAULT_MYSQL))
    parser.add_argument(
        "--postgres-url", default=os.environ.get("DEEPCVR_TEST_POSTGRES", DEFAULT_POSTGRES)
    )
    parser.add_argument("--repeat", type=int, default=2, help="paired runs per table (best of)")
    parser.add_argument("--executemany-rows", type=int, default=200_000)
    parser.add_argument("--keys-after", action="store_true", help="also MariaDB, PK after load")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "deepcvr-bench"
    )
    args = parser.parse_args()
    targets = args.targets.split(",")

    parquet = make_parquet(args.data_dir, args.samples)
    inp = inspect_parquet(parquet)
    total = sum(inp.tables[t.name].rows for t in MODEL)
    print(f"input: {args.samples:,} impressions, {total:,} rows in 6 tables; {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="deepcvr-bench-load-"))
    servers = {"mariadb": args.mysql_url, "postgres": args.postgres_url}
    try:
        if "duckdb" in targets:
            report("DuckDB", end_to_end(parquet, f"duckdb:///{work / 'b.duckdb'}"), None)
        for name in ("mariadb", "postgres"):
            if name not in targets:
                continue
            with scratch(servers[name]) as url:
                e2e = end_to_end(parquet, url)
                pairs = paired(url, inp, work, args.repeat, args.executemany_rows)
            bulk = "LOAD DATA LOCAL INFILE via a pipe" if name == "mariadb" else "COPY, text"
            report(f"{name} ({bulk})", e2e, pairs)
        if args.keys_after and "mariadb" in targets:
            MySQLTarget.pk_inline = False
            with scratch(servers["mariadb"]) as url:
                report("mariadb, primary key added after the load", end_to_end(parquet, url), None)
            MySQLTarget.pk_inline = True
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
