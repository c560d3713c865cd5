"""The feature registry: first field wins, and the split's feature table in the model's types."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from deepcvr.schema import FEATURE
from deepcvr.transform.chunks import write_arrow
from deepcvr.transform.registry import FIELD_ORDER, FeatureRegistry


def _pairs(ids: list[int], fields: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"feature_id": ids, "field_id": fields},
        schema={"feature_id": pl.Int32, "field_id": pl.String},
    )


def test_feature_table_reads_back_as_the_model_table(tmp_path: Path) -> None:
    """Ids from several blocks of the id space (and past the registry's first size), each with
    the field that came first; the dictionary-coded field reads back as plain text."""
    registry = FeatureRegistry()
    ids = [5, 3, 70, 2_500_000, 9]
    fields = [FIELD_ORDER[0], FIELD_ORDER[22], FIELD_ORDER[7], FIELD_ORDER[3], FIELD_ORDER[0]]
    assert registry.merge("train", _pairs(ids, fields)) == {}
    assert registry.merge("train", _pairs([3], [FIELD_ORDER[1]])) == {3: FIELD_ORDER[22]}
    registry.merge("test", _pairs([4], [FIELD_ORDER[2]]))

    part = tmp_path / "feature.parquet"
    write_arrow(registry.feature_table("train", ids_per_block=64), part, "snappy")

    assert pq.read_schema(part) == FEATURE.arrow_schema()
    expected = _pairs(sorted(ids), [dict(zip(ids, fields, strict=True))[i] for i in sorted(ids)])
    assert pl.read_parquet(part).equals(expected)


def test_feature_table_of_a_split_without_features_is_empty(tmp_path: Path) -> None:
    part = tmp_path / "feature.parquet"
    write_arrow(FeatureRegistry().feature_table("train"), part, "snappy")
    assert pq.read_schema(part) == FEATURE.arrow_schema()
    assert pq.read_metadata(part).num_rows == 0
