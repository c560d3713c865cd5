"""What the parser produces besides rows: reason codes, reject schema, and a chunk's context.

The reason codes are a contract: they appear in the `rejects` table of every target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

Kind = Literal["common", "skeleton"]

RAW_TEXT_LIMIT = 1000  # characters of raw text kept in a reject row
MAX_POSITION = 32767  # positions are SMALLINT in every target

_TOKEN = r"[^\x01\x02\x03]+"
_STRUCT = f"{_TOKEN}\x02{_TOKEN}\x03{_TOKEN}"
# A feature list whose every structure is well formed; lines failing it take the slow path.
WELL_FORMED_LIST = f"^{_STRUCT}(?:\x01{_STRUCT})*$"
WELL_FORMED_STRUCT = f"^{_STRUCT}$"
INDEX16 = r"^[0-9a-f]{16}$"

# Reason codes (the contract of the rejects table).
INVALID_UTF8 = "invalid_utf8"
TRUNCATED_LAST_LINE = "truncated_last_line"
WRONG_COLUMN_COUNT = "wrong_column_count"
BAD_SAMPLE_ID = "bad_sample_id"
BAD_LABEL = "bad_label"
LABEL_OUT_OF_RANGE = "label_out_of_range"
BAD_COMMON_INDEX = "bad_common_index"
BAD_FEATURE_NUM = "bad_feature_num"
EMPTY_FEATURE_LIST = "empty_feature_list"
TOO_MANY_STRUCTURES = "too_many_structures"
DUPLICATE_SAMPLE_ID = "duplicate_sample_id"
DUPLICATE_COMMON_INDEX = "duplicate_common_index"
ORPHAN_COMMON_INDEX = "orphan_common_index"
FEATURE_NUM_MISMATCH = "feature_num_mismatch"
MALFORMED_STRUCTURE = "malformed_structure"
UNKNOWN_FIELD = "unknown_field"
BAD_FEATURE_ID = "bad_feature_id"
BAD_VALUE = "bad_value"
FEATURE_FIELD_CONFLICT = "feature_field_conflict"

REJECTED = "rejected"
FLAGGED = "flagged"

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "rejects": {
        "split": pl.String(),
        "file": pl.String(),
        "line": pl.Int64(),
        "byte_offset": pl.Int64(),
        "position": pl.Int16(),
        "reason": pl.String(),
        "action": pl.String(),
        "structures": pl.Int32(),
        "detail": pl.String(),
        "raw": pl.String(),
    },
    "features": {"feature_id": pl.Int32(), "field_code": pl.UInt8()},
}


@dataclass
class ChunkContext:
    """What a chunk is and what earlier passes decided about it."""

    split: str
    kind: Kind
    file_name: str
    first_line: int  # 1-based number of the chunk's first line
    byte_offset: int  # offset of the chunk's first byte in the file
    # The split's accepted group keys as sorted 64-bit numbers (parse.sorted_index_numbers), for the
    # orphan check: a binary search per line instead of a hash set of every key per chunk.
    common_indexes: np.ndarray | None = None
    reject_lines: dict[int, str] = field(default_factory=dict)  # line -> reason, from post-passes
    field_of: dict[int, str] = field(default_factory=dict)  # feature_id -> field, from post-passes
