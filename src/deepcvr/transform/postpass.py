"""Cross-chunk post-passes: a key in two chunks, a feature id under two fields.

Chunks are parsed independently, so these are found after the fact (cheaply: key ranges, and
a dense feature-id array) and fixed by parsing again only the chunks they affect, with the
verdicts applied; the first occurrence in file order always wins.
"""

from __future__ import annotations

import itertools
import logging

import polars as pl

from deepcvr.transform.chunks import ChunkSpec, ChunkVerdicts, part_path
from deepcvr.transform.reasons import DUPLICATE_COMMON_INDEX, DUPLICATE_SAMPLE_ID, Kind
from deepcvr.transform.registry import FeatureRegistry
from deepcvr.transform.state import COMMON_INDEX, SplitState, TransformOptions
from deepcvr.transform.workers import ChunkRunner

log = logging.getLogger("deepcvr")


def merge_features(state: SplitState, spec: ChunkSpec, registry: FeatureRegistry) -> None:
    pairs = pl.read_parquet(part_path(state.out, "_features", spec))
    losers = registry.merge(state.split, pairs)
    if losers:
        state.verdicts.setdefault(spec.name, ChunkVerdicts()).field_of.update(losers)


def redo_duplicates(
    state: SplitState,
    kind: Kind,
    options: TransformOptions,
    runner: ChunkRunner,
    registry: FeatureRegistry,
    common_index: str | None,
) -> None:
    """A key in two chunks: the first line keeps it; later chunks are parsed again to reject."""
    specs = state.specs[kind]
    ranges = sorted(
        (state.stats[s.name]["key_min"], state.stats[s.name]["key_max"])
        for s in specs
        if state.stats[s.name]["key_min"] is not None
    )
    if all(prev[1] < nxt[0] for prev, nxt in itertools.pairwise(ranges)):
        return  # sorted file: no two chunks can share a key
    reason = DUPLICATE_SAMPLE_ID if kind == "skeleton" else DUPLICATE_COMMON_INDEX
    dups = (
        pl.scan_parquet(state.out / "_keys" / f"part-{kind[0]}*.parquet")
        .filter(pl.col("key").is_duplicated())
        .filter(pl.col("line") != pl.col("line").min().over("key"))
        .select("line")
        .collect()
        .get_column("line")
        .to_list()
    )
    if not dups:
        return
    by_chunk: dict[str, list[int]] = {}
    for spec in specs:
        end = spec.first_line + state.stats[spec.name]["lines"]
        hits = [line for line in dups if spec.first_line <= line < end]
        if hits:
            by_chunk[spec.name] = hits
    for name, lines in by_chunk.items():
        verdicts = state.verdicts.setdefault(name, ChunkVerdicts())
        verdicts.reject_lines.update(dict.fromkeys(lines, reason))
    _reparse(
        state, [s for s in specs if s.name in by_chunk], options, runner, registry, common_index
    )


def _reparse(
    state: SplitState,
    specs: list[ChunkSpec],
    options: TransformOptions,
    runner: ChunkRunner,
    registry: FeatureRegistry,
    common_index: str | None,
) -> None:
    for spec in specs:
        registry.forget(state.split, pl.read_parquet(part_path(state.out, "_features", spec)))
    jobs = [
        (
            spec,
            (
                str(state.out),
                common_index if spec.kind == "skeleton" else None,
                state.verdicts.get(spec.name),
                options.compression,
            ),
        )
        for spec in specs
    ]
    for spec, stats in runner.run(jobs):
        state.stats[spec.name] = stats
        merge_features(state, spec, registry)


def resolve_feature_conflicts(
    states: list[SplitState],
    options: TransformOptions,
    runner: ChunkRunner,
    registry: FeatureRegistry,
) -> None:
    """Parse again the chunks where a feature id showed up under a losing field."""
    for state in states:
        names = {name for name, v in state.verdicts.items() if v.field_of}
        if not names:
            continue
        specs = [s for kind in ("common", "skeleton") for s in state.specs[kind] if s.name in names]
        log.info(
            "%s: %d chunk(s) hold feature/field conflicts; parsing them again",
            state.split,
            len(specs),
        )
        _reparse(state, specs, options, runner, registry, str(state.out / COMMON_INDEX))
