"""Parquet parts: the model's types whatever the writer's shortcuts."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from deepcvr.schema import TABLES
from deepcvr.transform.chunks import write_frame


def _sample_features(splits: list[str | None]) -> pl.DataFrame:
    n = len(splits)
    return pl.DataFrame(
        {
            "split": splits,
            "sample_id": list(range(1, n + 1)),
            "position": [0] * n,
            "feature_id": [7] * n,
            "value": [0.5] * n,
        },
        schema={
            "split": pl.String,
            "sample_id": pl.Int64,
            "position": pl.Int16,
            "feature_id": pl.Int32,
            "value": pl.Float64,
        },
    )


@pytest.mark.parametrize(
    "splits",
    [["train"] * 5, ["train", "test", "train"], []],
    ids=["one split (dictionary)", "mixed splits", "empty"],
)
def test_parts_read_back_with_the_model_schema(splits: list[str | None], tmp_path: Path) -> None:
    frame = _sample_features(splits)
    part = tmp_path / "part.parquet"
    write_frame(frame, "sample_feature", part, "snappy")
    assert pq.read_schema(part) == TABLES["sample_feature"].arrow_schema()
    assert pl.read_parquet(part).equals(frame)


def test_a_missing_split_is_not_hidden_by_the_dictionary_shortcut(tmp_path: Path) -> None:
    """A null among equal values must not be written as the value (the column is NOT NULL)."""
    with pytest.raises(Exception, match="with null values to non-nullable"):
        write_frame(_sample_features(["train", None]), "sample_feature", tmp_path / "p", "snappy")
