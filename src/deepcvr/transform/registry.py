"""Which field each feature id belongs to, decided across all chunks in file order.

`field_id` depends on `feature_id` alone (3NF), so a feature id seen under a second field is a
data error: the first occurrence (common file before skeleton, then by line) wins and the later
structures are rejected. A dense array indexed by feature id keeps this O(pairs) per chunk.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from deepcvr.aliccp import FIELDS
from deepcvr.schema import FEATURE

FIELD_ORDER = [f.field_id for f in FIELDS]
CODE_OF = {f: i for i, f in enumerate(FIELD_ORDER)}
UNSEEN = -1


class FeatureRegistry:
    def __init__(self) -> None:
        self.code = np.full(1 << 20, UNSEEN, dtype=np.int8)
        # split -> how many chunks reference each feature id (uint16: a chunk holds ~1/1000 of a
        # split, and the arrays stay small: they grow with the largest id, not with the input)
        self.refs: dict[str, np.ndarray] = {}

    def _grow(self, max_id: int) -> None:
        if max_id < len(self.code):
            return
        size = len(self.code)
        while size <= max_id:
            size *= 2
        grown = np.full(size, UNSEEN, dtype=np.int8)
        grown[: len(self.code)] = self.code
        self.code = grown
        for split, refs in self.refs.items():
            more = np.zeros(size, dtype=np.uint16)
            more[: len(refs)] = refs
            self.refs[split] = more

    def _split_refs(self, split: str) -> np.ndarray:
        if split not in self.refs:
            self.refs[split] = np.zeros(len(self.code), dtype=np.uint16)
        return self.refs[split]

    @staticmethod
    def _arrays(pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Feature ids and field codes of chunk pairs (codes) or a feature table (names)."""
        ids = pairs.get_column("feature_id").to_numpy().astype(np.int64)
        if "field_code" in pairs.columns:
            return ids, pairs.get_column("field_code").to_numpy().astype(np.int8)
        codes = (
            pairs.get_column("field_id")
            .replace_strict(FIELD_ORDER, list(range(len(FIELD_ORDER))), return_dtype=pl.Int8)
            .to_numpy()
        )
        return ids, codes

    def merge(self, split: str, pairs: pl.DataFrame) -> dict[int, str]:
        """Add a chunk's distinct (feature_id, field_code) pairs, in file order.

        Returns the feature ids that lose to an earlier field, with the winning field."""
        if pairs.is_empty():
            return {}
        ids, codes = self._arrays(pairs)
        self._grow(int(ids.max()))
        current = self.code[ids]
        fresh = current == UNSEEN
        self.code[ids[fresh]] = codes[fresh]
        self._split_refs(split)[ids] += 1
        winners = self.code[ids]
        lost = np.flatnonzero(winners != codes)
        return {int(ids[i]): FIELD_ORDER[winners[i]] for i in lost}  # rare: conflicts only

    def forget(self, split: str, pairs: pl.DataFrame) -> None:
        """Undo a chunk's references before it is parsed again (its winners stay decided)."""
        if pairs.is_empty():
            return
        ids, _ = self._arrays(pairs)
        self._split_refs(split)[ids] -= 1

    def preload(self, pairs: pl.DataFrame) -> None:
        """Decisions made earlier (another split's feature table) win over anything new."""
        if pairs.is_empty():
            return
        ids, codes = self._arrays(pairs)
        self._grow(int(ids.max()))
        fresh = self.code[ids] == UNSEEN
        self.code[ids[fresh]] = codes[fresh]

    def feature_table(self, split: str, ids_per_block: int = 1 << 21) -> pa.Table:
        """Every feature id the split's loaded structures reference, with its field, in id order,
        in the model's Arrow types; `field_id` is dictionary-coded over the 23 fields, so it is
        neither spelled out per row nor hashed again by the Parquet writer (a third of the
        time of a feature table).

        Built a block of the id space at a time, each block one record batch: no temporary
        array spans the whole id space."""
        refs = self._split_refs(split)
        model = FEATURE.arrow_schema()
        at = model.get_field_index("field_id")
        schema = model.set(at, model.field(at).with_type(pa.dictionary(pa.int32(), pa.string())))
        # Arrays come through Polars: pyarrow's own constructors would import pandas.
        fields = pl.Series(FIELD_ORDER, dtype=pl.String).to_arrow().cast(pa.string())
        batches = []
        for start in range(0, len(self.code), ids_per_block):
            ids = np.flatnonzero(refs[start : start + ids_per_block]).astype(np.int32) + start
            if not len(ids):
                continue
            codes = pl.Series(self.code[ids]).cast(pl.Int32).to_arrow()
            batches.append(
                pa.RecordBatch.from_arrays(
                    [pl.Series(ids).to_arrow(), pa.DictionaryArray.from_arrays(codes, fields)],
                    schema=schema,
                )
            )
        return pa.Table.from_batches(batches, schema)
