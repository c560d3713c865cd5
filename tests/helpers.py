"""Small helpers the tests share: read raw Ali-CCP lines the slow, obvious way, and rebuild them."""

from __future__ import annotations

from pathlib import Path

import duckdb

# Real Ali-CCP bytes (two common lines), kept in the repository: see its PROVENANCE.md.
REAL_COMMON = (
    Path(__file__).resolve().parent
    / "data"
    / "aliccp_raw_sample"
    / "common_features_train.head2.csv"
)


def raw_structures(feature_list: str) -> list[tuple[str, int, float]]:
    """The reference parser: a plain Python split, no shortcuts."""
    out = []
    for item in feature_list.split("\x01"):
        field, rest = item.split("\x02")
        fid, value = rest.split("\x03")
        out.append((field, int(fid), float(value)))
    return out


def read_raw(path: Path, kind: str) -> dict[str, tuple[int, str]]:
    """key -> (declared feature_num, feature_list) of every line of a raw file."""
    lines = {}
    with path.open(encoding="utf-8", newline="\n") as f:
        for line in f:
            cols = line.rstrip("\n").split(",")
            if kind == "skeleton":
                lines[cols[0]] = (int(cols[4]), cols[5])
            else:
                lines[cols[0]] = (int(cols[1]), cols[2])
    return lines


def rebuild(con: duckdb.DuckDBPyConnection, split: str, kind: str) -> dict[str, str]:
    """Rebuild each raw feature list from the 3NF tables: join the field back, keep positions."""
    if kind == "skeleton":
        table, key = "sample_feature", "CAST(sample_id AS VARCHAR)"
    else:
        table, key = "common_feature", "common_feature_index"
    rows = con.execute(
        f"SELECT {key}, position, f.field_id, t.feature_id, t.value FROM {table} t "
        f"JOIN feature f USING (feature_id) WHERE split = ? ORDER BY 1, 2",
        [split],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for k, _pos, field, fid, value in rows:
        out.setdefault(k, []).append(f"{field}\x02{fid}\x03{value!r}")
    return {k: "\x01".join(v) for k, v in out.items()}
