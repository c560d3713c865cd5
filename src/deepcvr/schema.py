"""The one definition of the 3NF model: Parquet schemas and every dialect's DDL come from here."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a logical type, a key of ARROW_TYPES / SQL_TYPES
    nullable: bool = False
    description: str = ""
    # Values come in long runs (a parent's key down its child rows): a storage hint.
    runs: bool = False


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    per_split: bool = True  # stored under parquet/{split}/{name}/ (field is global)
    description: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def keyable(self) -> bool:
        """Has a primary key that can be a constraint (no nullable key column; `rejects` has
        none)."""
        key = set(self.primary_key)
        return bool(key) and not any(c.nullable for c in self.columns if c.name in key)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable) for c in self.columns]
        )


ARROW_TYPES: dict[str, pa.DataType] = {
    "split": pa.string(),
    "field_id": pa.string(),
    "text": pa.string(),
    "index16": pa.string(),
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float64": pa.float64(),
}

# Per-dialect SQL types. Values stay DOUBLE everywhere: Ali-CCP's log-scaled counts must not be
# rounded (the original DeepCVR used DOUBLE(8,2) and lost digits).
SQL_TYPES: dict[str, dict[str, str]] = {
    "duckdb": {
        "split": "ENUM('test', 'train')",
        "field_id": "VARCHAR",
        "text": "VARCHAR",
        "index16": "VARCHAR",
        "bool": "BOOLEAN",
        "int8": "TINYINT",
        "int16": "SMALLINT",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "float64": "DOUBLE",
    },
    "mysql": {
        "split": "VARCHAR(5)",
        "field_id": "VARCHAR(16)",
        "text": "TEXT",
        "index16": "CHAR(16)",
        "bool": "BOOLEAN",
        "int8": "TINYINT",
        "int16": "SMALLINT",
        "int32": "INT",
        "int64": "BIGINT",
        "float64": "DOUBLE",
    },
    "postgresql": {
        "split": "VARCHAR(5)",
        "field_id": "VARCHAR(16)",
        "text": "TEXT",
        "index16": "CHAR(16)",
        "bool": "BOOLEAN",
        "int8": "SMALLINT",
        "int16": "SMALLINT",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "float64": "DOUBLE PRECISION",
    },
}

# Storage hints, by dialect: DuckDB chooses a compression for each column segment by trying
# every method on its data; naming the one it picks anyway on Ali-CCP (checked with
# pragma_storage_info) skips the trials: the long tables' bulk inserts take 10-15 % less time
# for the same file size. Text is left to DuckDB.
COMPRESSION: dict[str, dict[str, str]] = {
    "duckdb": {
        "split": "rle",
        "int8": "bitpacking",
        "int16": "bitpacking",
        "int32": "bitpacking",
        "int64": "bitpacking",
        "float64": "alp",
    },
}
# A column in runs gets RLE where the type would get bitpacking: sample_feature's sample_id
# (~22 rows per sample) inserts 10 % faster (2.9-3.4 s against 3.3-3.7 s at 4 M impressions),
# for a 13 % larger table (bitpacking's delta mode packs the runs tighter).
RUNS_COMPRESSION: dict[str, str] = {"duckdb": "rle"}


def compression_of(column: Column, dialect: str) -> str | None:
    """The compression to name for `column` in `dialect`, or None to leave it to the database."""
    by_type = COMPRESSION.get(dialect, {}).get(column.type)
    if by_type == "bitpacking" and column.runs:
        return RUNS_COMPRESSION.get(dialect, by_type)
    return by_type


FIELD = Table(
    "field",
    (
        Column("field_id", "field_id", description="raw field id, e.g. 150_14"),
        Column("name", "text"),
        Column("entity", "text", description="user / item / combination / context"),
        Column("multi_valued", "bool"),
        Column("description", "text"),
    ),
    primary_key=("field_id",),
    per_split=False,
    description="the 23 Ali-CCP fields",
)

FEATURE = Table(
    "feature",
    (Column("feature_id", "int32"), Column("field_id", "field_id")),
    primary_key=("feature_id",),
    foreign_keys=(ForeignKey(("field_id",), "field", ("field_id",)),),
    description="every feature id seen, with the one field it belongs to",
)

COMMON_FEATURE_GROUP = Table(
    "common_feature_group",
    (
        Column("split", "split"),
        Column("common_feature_index", "index16"),
        Column("num_features", "int32", description="declared feature_num of the raw line"),
    ),
    primary_key=("split", "common_feature_index"),
    description="a row of common_features_{split}.csv: a user-side feature snapshot",
)

COMMON_FEATURE = Table(
    "common_feature",
    (
        Column("split", "split"),
        Column("common_feature_index", "index16"),
        Column("position", "int16", description="0-based place of the structure in its raw list"),
        Column("feature_id", "int32"),
        Column("value", "float64"),
    ),
    primary_key=("split", "common_feature_index", "position"),
    foreign_keys=(
        ForeignKey(
            ("split", "common_feature_index"),
            "common_feature_group",
            ("split", "common_feature_index"),
        ),
        ForeignKey(("feature_id",), "feature", ("feature_id",)),
    ),
)

SAMPLE = Table(
    "sample",
    (
        Column("split", "split"),
        Column("sample_id", "int64"),
        Column("click", "int8"),
        Column("conversion", "int8"),
        Column("common_feature_index", "index16"),
        Column("num_features", "int32", description="declared feature_num of the raw line"),
    ),
    primary_key=("split", "sample_id"),
    foreign_keys=(
        ForeignKey(
            ("split", "common_feature_index"),
            "common_feature_group",
            ("split", "common_feature_index"),
        ),
    ),
    description="an ad impression of sample_skeleton_{split}.csv",
)

SAMPLE_FEATURE = Table(
    "sample_feature",
    (
        Column("split", "split"),
        Column("sample_id", "int64", runs=True),
        Column("position", "int16", description="0-based place of the structure in its raw list"),
        Column("feature_id", "int32"),
        Column("value", "float64"),
    ),
    primary_key=("split", "sample_id", "position"),
    foreign_keys=(
        ForeignKey(("split", "sample_id"), "sample", ("split", "sample_id")),
        ForeignKey(("feature_id",), "feature", ("feature_id",)),
    ),
)

REJECTS = Table(
    "rejects",
    (
        Column("split", "split"),
        Column("file", "text"),
        Column("line", "int64", description="1-based line number in the raw file"),
        Column("byte_offset", "int64", description="offset of the line's first byte"),
        Column("position", "int16", nullable=True, description="structure place, if one"),
        Column("reason", "text"),
        Column("action", "text", description="rejected (not loaded) or flagged (loaded)"),
        Column("structures", "int32", description="raw structures this reject accounts for"),
        Column("detail", "text", nullable=True),
        Column("raw", "text", nullable=True, description="the raw text, truncated"),
    ),
    primary_key=("split", "file", "line", "reason", "position"),
    description="every line or structure that was not loaded as is, with the reason",
)

# Load order: referenced tables first.
MODEL: tuple[Table, ...] = (
    FIELD,
    FEATURE,
    COMMON_FEATURE_GROUP,
    COMMON_FEATURE,
    SAMPLE,
    SAMPLE_FEATURE,
)
TABLES: dict[str, Table] = {t.name: t for t in (*MODEL, REJECTS)}
# Each raw file's tables (its kind: aliccp's common or skeleton file): a row per line, a row
# per loaded structure.
ROW_TABLE = {"common": COMMON_FEATURE_GROUP.name, "skeleton": SAMPLE.name}
FEATURE_TABLE = {"common": COMMON_FEATURE.name, "skeleton": SAMPLE_FEATURE.name}
# Written last into a split's Parquet directory by either engine: the sign of a complete split
# (its accounting), which loaders and the quality report read.
MANIFEST = "_manifest.json"


def primary_key_clause(table: Table) -> str:
    return f"PRIMARY KEY ({', '.join(table.primary_key)})"


def foreign_key_clause(fk: ForeignKey, ref_name: str | None = None) -> str:
    return (
        f"FOREIGN KEY ({', '.join(fk.columns)}) "
        f"REFERENCES {ref_name or fk.ref_table} ({', '.join(fk.ref_columns)})"
    )


def create_table_sql(
    table: Table,
    dialect: str,
    name: str | None = None,
    with_keys: bool = False,
    foreign_keys: tuple[ForeignKey, ...] = (),
) -> str:
    """CREATE TABLE for `dialect`; keys are normally added after the bulk load (DuckDB, which
    cannot add foreign keys later, passes the ones to enforce here)."""
    types = SQL_TYPES[dialect]
    cols = [
        f"{c.name} {types[c.type]}{'' if c.nullable else ' NOT NULL'}"
        + (f" USING COMPRESSION {method}" if (method := compression_of(c, dialect)) else "")
        for c in table.columns
    ]
    if with_keys and table.keyable:
        cols.append(primary_key_clause(table))
    cols += [foreign_key_clause(fk) for fk in foreign_keys]
    return f"CREATE TABLE {name or table.name} ({', '.join(cols)})"
