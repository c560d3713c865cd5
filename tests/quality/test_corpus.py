"""The bad-file corpus: every reason code, mixed with good lines, through the real transform and
load. Each bad line is in rejects (Parquet and database) with its reason and line number, the
good lines are loaded exactly, and the accounting identity holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from deepcvr.cli import app
from deepcvr.errors import DataError
from deepcvr.metadata import MetadataStore
from deepcvr.transform import parse as R
from deepcvr.transform.engine import TransformOptions, transform
from tests.quality.conftest import CORPUS, Loaded, expected_rejects, transform_and_load

KEY = ["file", "line", "position", "reason", "action"]
FILES = ("common_features_train.csv", "sample_skeleton_train.csv")
LINE_REASONS = {
    R.INVALID_UTF8, R.TRUNCATED_LAST_LINE, R.WRONG_COLUMN_COUNT, R.BAD_SAMPLE_ID, R.BAD_LABEL,
    R.LABEL_OUT_OF_RANGE, R.BAD_COMMON_INDEX, R.BAD_FEATURE_NUM, R.EMPTY_FEATURE_LIST,
    R.DUPLICATE_SAMPLE_ID, R.DUPLICATE_COMMON_INDEX, R.ORPHAN_COMMON_INDEX,
}  # fmt: skip
STRUCTURE_REASONS = {
    R.MALFORMED_STRUCTURE, R.UNKNOWN_FIELD, R.BAD_FEATURE_ID, R.BAD_VALUE,
    R.FEATURE_FIELD_CONFLICT,
}  # fmt: skip
IDX = "0d0000000000000a"


def _sorted(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=lambda r: (r[0], r[1], -1 if r[2] is None else r[2], r[3]))


def parquet_rejects(out: Path) -> list[tuple]:
    frame = pl.read_parquet(out / "train" / "rejects" / "*.parquet")
    return _sorted(frame.select(KEY).rows())


def db_rejects(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return _sorted(con.execute(f"SELECT {', '.join(KEY)} FROM rejects").fetchall())


def raw_lines(path: Path) -> list[bytes]:
    """Lines without terminators, split the slow obvious way."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def test_corpus_exercises_every_reason_code() -> None:
    reasons = {r[3] for r in expected_rejects()}
    # too_many_structures needs a 400 kB line: built by its own test below.
    assert reasons | {R.TOO_MANY_STRUCTURES} == LINE_REASONS | STRUCTURE_REASONS | {
        R.FEATURE_NUM_MISMATCH,
        R.TOO_MANY_STRUCTURES,
    }
    assert {r[4] for r in expected_rejects() if r[3] == R.FEATURE_NUM_MISMATCH} == {R.FLAGGED}
    data = (CORPUS / "sample_skeleton_train.csv").read_bytes()
    assert b"\r\n" in data and not data.endswith(b"\n")


def test_each_bad_line_is_rejected_with_its_reason_and_line(corpus: Loaded) -> None:
    expected = _sorted(expected_rejects())
    assert parquet_rejects(corpus.parquet) == expected
    assert db_rejects(corpus.db) == expected
    for _file, _line, position, reason, _action in expected:
        assert (position is None) == (reason not in STRUCTURE_REASONS), reason


def test_raw_text_and_byte_offset_point_at_the_line(corpus: Loaded) -> None:
    frame = pl.read_parquet(corpus.parquet / "train" / "rejects" / "*.parquet")
    for name in FILES:
        data = (CORPUS / name).read_bytes()
        lines = raw_lines(CORPUS / name)
        starts = [0] + [i + 1 for i, b in enumerate(data) if b == 10]
        for row in frame.filter(pl.col("file") == name).iter_rows(named=True):
            assert row["byte_offset"] == starts[row["line"] - 1], row
            text = lines[row["line"] - 1].decode("utf-8", "replace")
            if row["position"] is None:
                assert row["raw"] == text, row
            else:
                assert row["raw"] == text.split(",")[-1].split("\x01")[row["position"]], row


def test_good_lines_are_loaded_exactly(corpus: Loaded) -> None:
    rejected_lines = {
        (f, line)
        for f, line, pos, _r, act in expected_rejects()
        if pos is None and act == "rejected"
    }
    struct_rejects = {(f, line, pos) for f, line, pos, *_ in expected_rejects() if pos is not None}
    con = duckdb.connect(str(corpus.db), read_only=True)
    fields = dict(con.execute("SELECT feature_id, field_id FROM feature").fetchall())
    for name, table, key in (
        ("sample_skeleton_train.csv", "sample_feature", "sample_id"),
        ("common_features_train.csv", "common_feature", "common_feature_index"),
    ):
        good = [
            (n, text.decode())
            for n, text in enumerate(raw_lines(CORPUS / name), start=1)
            if (name, n) not in rejected_lines
        ]
        for n, text in good:
            cols = text.split(",")
            row_key = int(cols[0]) if key == "sample_id" else cols[0]
            flist = cols[-1].split("\x01")
            want = [
                (pos, item.split("\x02")[0], *item.split("\x02")[1].split("\x03"))
                for pos, item in enumerate(flist)
                if (name, n, pos) not in struct_rejects
            ]
            got = con.execute(
                f"SELECT position, feature_id, value FROM {table} WHERE {key} = ? ORDER BY 1",
                [row_key],
            ).fetchall()
            assert [(p, fields[f], str(f), v) for p, f, v in got] == [
                (p, field, fid, float(v)) for p, field, fid, v in want
            ], (name, n)
    samples = con.execute(
        "SELECT sample_id, click, conversion, num_features FROM sample"
    ).fetchall()
    assert sorted(s[0] for s in samples) == [1, 2, 3, 4, 11, 13, 14, 15, 16, 17, 21, 24]
    by_id = {s[0]: s[1:] for s in samples}
    assert by_id[4] == (0, 1, 2)  # (click 0, conversion 1): kept
    assert by_id[11] == (0, 0, 5)  # feature_num mismatch: kept with the declared count
    assert by_id[3] == (1, 1, 3)  # the CRLF line
    groups = dict(
        con.execute(
            "SELECT common_feature_index, num_features FROM common_feature_group"
        ).fetchall()
    )
    assert len(groups) == 6 and groups["0b00000000000008"] == 6 and "b000000000000002" in groups
    con.close()


def test_accounting_identity_holds(corpus: Loaded) -> None:
    manifest = json.loads((corpus.parquet / "train" / "_manifest.json").read_text())
    expected = expected_rejects()
    for name in FILES:
        acc = manifest["files"][name]
        lines = raw_lines(CORPUS / name)
        line_rejects = [r for r in expected if r[0] == name and r[2] is None and r[4] == "rejected"]
        assert acc["lines"] == len(lines)
        assert acc["rejected_lines"] == len(line_rejects)
        assert acc["lines"] == acc["loaded_lines"] + acc["rejected_lines"]
        assert acc["raw_structures"] == acc["loaded_structures"] + acc["rejected_structures"]
        assert acc["flagged_lines"] == 1 and acc["crlf_lines"] == 1
        assert all(acc["checks"].values())
    assert corpus.summary["splits"]["train"]["accounting"]["lines"] == 38


def test_same_rejects_whatever_the_chunk_size(corpus: Loaded, tmp_path: Path) -> None:
    """One line per chunk: duplicates, conflicts and orphans are found across chunks too."""
    small = transform_and_load(corpus.raw, tmp_path, chunk_bytes=1)
    assert parquet_rejects(small.parquet) == parquet_rejects(corpus.parquet)
    assert db_rejects(small.db) == db_rejects(corpus.db)
    acc = small.summary["splits"]["train"]["accounting"]
    assert acc == corpus.summary["splits"]["train"]["accounting"]


def test_default_reject_ratio_fails_after_writing_rejects(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"lines rejected .* see .*rejects") as err:
        transform(CORPUS, out, None, TransformOptions(workers=1))
    assert "\n" not in str(err.value)
    assert parquet_rejects(out) == _sorted(expected_rejects())


def _two_files(raw: Path, skeleton: str) -> None:
    raw.mkdir(parents=True)
    (raw / "common_features_train.csv").write_text(f"{IDX},1,101\x021\x031.0\n")
    (raw / "sample_skeleton_train.csv").write_text(skeleton)


def test_too_many_structures_is_rejected(tmp_path: Path) -> None:
    n = 32_769  # one more than a SMALLINT position can number
    items = "\x01".join(f"210\x02{i + 2}\x031.0" for i in range(n))
    _two_files(tmp_path / "raw", f"1,0,0,{IDX},1,205\x0299\x031.0\n2,0,0,{IDX},{n},{items}\n")
    run = transform_and_load(tmp_path / "raw", tmp_path)
    assert db_rejects(run.db) == [
        ("sample_skeleton_train.csv", 2, None, R.TOO_MANY_STRUCTURES, "rejected")
    ]
    acc = run.summary["splits"]["train"]["files"]["sample_skeleton_train.csv"]
    assert (acc["raw_structures"], acc["rejected_structures"], acc["loaded_lines"]) == (n + 1, n, 1)


def test_lone_structure_without_separators_is_one_malformed_structure(tmp_path: Path) -> None:
    """`205` alone (neither 0x02 nor 0x03) is one malformed structure of a kept line.

    Fails today: parse.raw_structures counts 0 structures for a line without any separator, so
    the line is also flagged feature_num_mismatch ("declared 1, found 0") and the accounting
    identity breaks (raw 1 != loaded 1 + rejected 1), failing the whole run."""
    _two_files(tmp_path / "raw", f"1,0,0,{IDX},1,205\n2,1,0,{IDX},1,205\x022\x031.0\n")
    run = transform_and_load(tmp_path / "raw", tmp_path)
    assert db_rejects(run.db) == [
        ("sample_skeleton_train.csv", 1, 0, R.MALFORMED_STRUCTURE, "rejected")
    ]
    acc = run.summary["splits"]["train"]["files"]["sample_skeleton_train.csv"]
    assert (acc["raw_structures"], acc["rejected_structures"], acc["flagged_lines"]) == (2, 1, 0)


PIPELINE = """
name: corpus
workspace: {ws}
tasks:
  transform:
    op: transform.aliccp
    with: {{input: {raw}, workers: 1, max_reject_ratio: 1.0}}
  load:
    op: load.database
    needs: [transform]
    with: {{target: "duckdb:///{ws}/deepcvr.duckdb"}}
  checks:
    op: quality.checks
    needs: [load]
    with: {{raw: {raw}}}
  report:
    op: quality.report
    needs: [load]
"""


def test_whole_run_through_the_cli(tmp_path: Path) -> None:
    raw, ws = tmp_path / "raw", tmp_path / "ws"
    shutil.copytree(CORPUS, raw)
    path = tmp_path / "corpus.yaml"
    path.write_text(PIPELINE.format(ws=ws, raw=raw))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "quality checks" in result.stdout and "accounting" in result.stdout
    assert db_rejects(ws / "deepcvr.duckdb") == _sorted(expected_rejects())
    assert (ws / "report.html").is_file()
    store = MetadataStore.for_workspace(ws, create=False)
    run_id = store.latest_run()["run_id"]  # type: ignore[index]
    checks = {r["key"]: r["value"] for r in store.records(run_id, "quality_check")}
    assert checks["train: accounting sample_skeleton_train.csv"]["ok"]
    assert checks["train: click 0, conversion 1 in raw"]["values"] == {
        "raw": 2, "loaded": 1, "rejected": 1,
    }  # fmt: skip
    assert {r["key"] for r in store.records(run_id, "accounting")} == {"train"}


def test_non_ascii_line_keeps_no_line_terminator(tmp_path: Path) -> None:
    """A valid UTF-8 line with a non-ASCII character: only its bad structure is rejected.

    Fails today: parse.split_lines cuts the terminator with a byte count passed to
    `str.slice`, which counts characters, so "\\n" (and "\\r") stay in the text of any line
    holding a multi-byte character; the last structure's value becomes "0.5\\n" and a good
    structure is rejected as bad_value (and every such reject's raw text ends in "\\n")."""
    _two_files(
        tmp_path / "raw",
        f"1,0,0,{IDX},2,205\x021\x031.0é\x01206\x022\x030.5\r\n2,0,0,{IDX},1,205\x023\x031.0\n",
    )
    run = transform_and_load(tmp_path / "raw", tmp_path)
    assert db_rejects(run.db) == [("sample_skeleton_train.csv", 1, 0, R.BAD_VALUE, "rejected")]
    with duckdb.connect(str(run.db), read_only=True) as con:
        raw = con.execute("SELECT raw FROM rejects").fetchone()
        kept = con.execute("SELECT sample_id, position, value FROM sample_feature ORDER BY 1, 2")
        assert kept.fetchall() == [(1, 1, 0.5), (2, 0, 1.0)]
    assert raw == ("205\x021\x031.0é",)
