"""Shared state of one transform: its options, the output layout, and each split's progress."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepcvr.transform.chunks import ChunkSpec, ChunkVerdicts, RawSource
from deepcvr.transform.reasons import Kind

SETTINGS = "_settings.json"
COMMON_INDEX = "_common_index.parquet"


@dataclass
class TransformOptions:
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    chunk_bytes: int = 8 << 20
    max_reject_ratio: float = 0.001
    compression: str = "snappy"
    force: bool = False
    stage_raw: bool = True  # False: read the CSVs straight from the archives in the input dir


@dataclass
class SplitState:
    split: str
    out: Path
    files: dict[Kind, RawSource]
    specs: dict[Kind, list[ChunkSpec]] = field(
        default_factory=lambda: {"common": [], "skeleton": []}
    )
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # chunk name -> stats
    verdicts: dict[str, ChunkVerdicts] = field(default_factory=dict)
    resumed: int = 0
