"""Shared inputs of the quality tests: the bad-file corpus and a generated profile database,
each transformed and loaded once per session by the real functions."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deepcvr.load.database import load
from deepcvr.synth import generate
from deepcvr.transform.engine import TransformOptions, transform

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad"
EXPECTED_REJECTS = CORPUS / "expected_rejects.csv"


@dataclass(frozen=True)
class Loaded:
    raw: Path
    parquet: Path
    db: Path
    summary: dict[str, Any]

    @property
    def target(self) -> str:
        return f"duckdb:///{self.db}"


def expected_rejects() -> list[tuple[str, int, int | None, str, str]]:
    """(file, line, position, reason, action) rows of the corpus's expected-rejects table."""
    with EXPECTED_REJECTS.open(newline="") as f:
        return [
            (
                r["file"],
                int(r["line"]),
                int(r["position"]) if r["position"] else None,
                r["reason"],
                r["action"],
            )
            for r in csv.DictReader(f)
        ]


def transform_and_load(raw: Path, out: Path, chunk_bytes: int = 16 << 20, **load_kw: Any) -> Loaded:
    parquet, db = out / "parquet", out / "deepcvr.duckdb"
    options = TransformOptions(workers=1, chunk_bytes=chunk_bytes, max_reject_ratio=1.0)
    summary = transform(raw, parquet, None, options)
    load(parquet, f"duckdb:///{db}", **load_kw)
    return Loaded(raw, parquet, db, summary)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """The corpus, copied byte for byte, transformed and loaded into DuckDB."""
    raw = tmp_path_factory.mktemp("corpus-raw")
    for name in ("common_features_train.csv", "sample_skeleton_train.csv"):
        shutil.copyfile(CORPUS / name, raw / name)
    return transform_and_load(raw, tmp_path_factory.mktemp("corpus"))


BAD_LINES = (
    "999999,0,0,{idx},2,205\x02x\x031.0\x01206\x022\x030.5\n"  # bad feature id at position 0
    "bad line\n"  # wrong column count
    "999998,0,1,{idx},1,301\x0250\n"  # (0,1), its only structure malformed (no 0x03)
    "1,0,0,{idx},1,205\x021\x031.0\n"  # duplicate of line 1
)


@pytest.fixture(scope="session")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """Generated train and test splits with a few bad lines appended: a realistic database
    with rejects, for the report."""
    raw = tmp_path_factory.mktemp("profile-raw")
    for split, seed in (("train", 11), ("test", 12)):
        generate(raw / split, 3000, split, seed=seed)
    skeleton = raw / "train" / "sample_skeleton_train.csv"
    idx = (raw / "train" / "common_features_train.csv").read_text().split(",", 1)[0]
    with skeleton.open("a") as f:
        f.write(BAD_LINES.format(idx=idx))
    return transform_and_load(raw, tmp_path_factory.mktemp("profile"))
