"""The local transform engine: raw CSVs -> 3NF Parquet, chunked, parallel, resumable.

Per split: the common file first (its keys are needed for the orphan check), then the skeleton;
then cross-chunk post-passes (duplicate keys, feature/field conflicts) re-parse only the chunks
they affect; then the feature table, accounting and a manifest that marks the split complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from deepcvr import __version__
from deepcvr.aliccp import (
    FIELDS,
    SPLITS,
    archive_name,
    common_name,
    raw_files,
    skeleton_name,
    split_dir,
    splits_present,
)
from deepcvr.errors import DataError
from deepcvr.fsutil import atomic_file, remove_temp_leftovers
from deepcvr.progress import progress
from deepcvr.schema import MANIFEST
from deepcvr.transform.chunks import (
    ChunkSpec,
    RawSource,
    plan_chunks,
    read_manifest,
    write_arrow,
    write_frame,
)
from deepcvr.transform.postpass import merge_features, redo_duplicates, resolve_feature_conflicts
from deepcvr.transform.reasons import Kind
from deepcvr.transform.registry import FeatureRegistry
from deepcvr.transform.state import SETTINGS, SplitState, TransformOptions
from deepcvr.transform.workers import ChunkRunner

log = logging.getLogger("deepcvr")


def transform(
    raw_dir: Path,
    out_dir: Path,
    splits: list[str] | None = None,
    options: TransformOptions | None = None,
    runner: ChunkRunner | None = None,
) -> dict[str, Any]:
    """Transform every requested split found in `raw_dir`; returns a summary per split.

    `runner`: workers the caller started early, `options.workers` of them; closed when the
    transform ends (the caller closes them if it fails before it starts)."""
    options = options or TransformOptions()
    sources = find_sources(raw_dir, splits, options.stage_raw)
    _writable(out_dir)
    wanted = list(sources)
    start = time.monotonic()
    runner = runner or ChunkRunner(options.workers, options.chunk_bytes)
    registry = FeatureRegistry()
    _preload_other_splits(registry, out_dir, wanted)
    states = []
    try:
        for split in wanted:
            states.append(
                _transform_split(split, sources[split], out_dir, options, runner, registry)
            )
        resolve_feature_conflicts(states, options, runner, registry)
        runner.release()  # the workers exit, freeing their memory, while feature tables start
        _write_field_table(out_dir, options)
        # The splits' feature tables and accounts are independent, and the workers are going:
        # one thread per split (Polars and Arrow release the GIL) keeps both cores busy.
        with ThreadPoolExecutor(max(1, min(len(states), options.workers))) as pool:
            finished = list(pool.map(lambda s: _finish_split(s, registry, options), states))
        runner.close()
        summary = {s.split: done for s, done in zip(states, finished, strict=True)}
    except BaseException:
        runner.close(cancel=True)
        remove_temp_leftovers(out_dir)
        raise
    seconds = time.monotonic() - start
    total = sum(v["accounting"]["bytes"] for v in summary.values())
    return {
        "splits": summary,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / 1e6 / seconds, 1) if seconds else None,
        "workers": options.workers,
    }


def _writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise DataError(
            f"{out_dir}: output directory is not writable ({err.strerror}); choose another"
        ) from None


def _settings(state_files: dict[Kind, RawSource], options: TransformOptions) -> dict[str, Any]:
    return {
        "version": __version__,
        "chunk_bytes": options.chunk_bytes,
        "files": {kind: source.fingerprint() for kind, source in state_files.items()},
    }


def _prepare(out: Path, settings: dict[str, Any], force: bool) -> None:
    """Keep completed chunks only when they came from the same input and settings (resume)."""
    settings_file = out / SETTINGS
    same = False
    if settings_file.exists() and not force:
        try:
            same = json.loads(settings_file.read_text()) == settings
        except ValueError:
            same = False
    if not same and out.exists():
        shutil.rmtree(out)
    remove_temp_leftovers(out)
    (out / MANIFEST).unlink(missing_ok=True)
    with atomic_file(settings_file) as tmp:
        tmp.write_text(json.dumps(settings))


def find_sources(
    raw_dir: Path, splits: list[str] | None, stage_raw: bool
) -> dict[str, dict[Kind, RawSource]]:
    """The raw CSVs of each wanted split: files in `raw_dir` (or `raw_dir/{split}/`), or with
    `stage_raw` off, members of the `sample_{split}.tar.gz` archives in `raw_dir`."""
    if not raw_dir.is_dir():
        what = "archive" if not stage_raw else "raw"
        raise DataError(f"{raw_dir}: {what} directory not found; check the path")
    if stage_raw:
        present = splits_present(raw_dir)
    else:
        present = [s for s in SPLITS if (raw_dir / archive_name(s)).is_file()]
    wanted = splits or present
    missing = [s for s in wanted if s not in present]
    if missing or not wanted:
        if stage_raw:
            names = ", ".join(
                f"{c.name} + {k.name}"
                for s in (missing or SPLITS)
                for c, k in [raw_files(raw_dir, s)]
            )
        else:
            names = ", ".join(archive_name(s) for s in (missing or SPLITS))
        raise DataError(
            f"{raw_dir}: no raw files for {', '.join(missing) or 'any split'} "
            f"(expected {names}); check the path or run decompress"
        )
    sources: dict[str, dict[Kind, RawSource]] = {}
    for split in wanted:
        if stage_raw:
            common, skeleton = raw_files(split_dir(raw_dir, split), split)
            sources[split] = {
                "common": RawSource(str(common)),
                "skeleton": RawSource(str(skeleton)),
            }
        else:
            archive = str(raw_dir / archive_name(split))
            sources[split] = {
                "common": RawSource(archive, common_name(split)),
                "skeleton": RawSource(archive, skeleton_name(split)),
            }
    return sources


def _transform_split(
    split: str,
    files: dict[Kind, RawSource],
    out_dir: Path,
    options: TransformOptions,
    runner: ChunkRunner,
    registry: FeatureRegistry,
) -> SplitState:
    state = SplitState(split, out_dir / split, files)
    _prepare(state.out, _settings(state.files, options), options.force)
    _run_kind(state, "common", options, runner, registry, common_index=None)
    redo_duplicates(state, "common", options, runner, registry, common_index=None)
    index_file = _write_common_index(state)
    _run_kind(state, "skeleton", options, runner, registry, common_index=index_file)
    redo_duplicates(state, "skeleton", options, runner, registry, common_index=index_file)
    return state


def _run_kind(
    state: SplitState,
    kind: Kind,
    options: TransformOptions,
    runner: ChunkRunner,
    registry: FeatureRegistry,
    common_index: str | None,
) -> None:
    source = state.files[kind]
    args = (str(state.out), common_index, None, options.compression)
    # An archive member's size is known only once the stream reaches it.
    total = None if source.member else os.path.getsize(source.path)

    def jobs(advance: Callable[[int], None]) -> Iterator[tuple[ChunkSpec, tuple[Any, ...]]]:
        planned = plan_chunks(source, state.split, kind, options.chunk_bytes, runner.slots)
        for spec, data in planned:
            state.specs[kind].append(spec)
            done = read_manifest(state.out, spec)
            if done is not None:
                runner.give_back(data)
                state.stats[spec.name] = done
                state.resumed += 1
                merge_features(state, spec, registry)
                advance(spec.length)
                continue
            yield spec, (*args, data)

    with progress(f"transform {source.name}", total, unit="B") as advance:
        for spec, stats in runner.run(jobs(advance)):
            state.stats[spec.name] = stats
            merge_features(state, spec, registry)
            advance(spec.length)


def _write_common_index(state: SplitState) -> str:
    """The split's accepted common-feature indexes, read by skeleton chunks for the orphan check."""
    target = state.out / "_common_index.parquet"
    keys = pl.scan_parquet(state.out / "_keys" / "part-c*.parquet").select("key").collect()
    with atomic_file(target) as tmp:
        keys.write_parquet(tmp)
    return str(target)


def _preload_other_splits(registry: FeatureRegistry, out_dir: Path, wanted: list[str]) -> None:
    for split in SPLITS:
        table = out_dir / split / "feature"
        if split not in wanted and (out_dir / split / MANIFEST).exists() and table.exists():
            registry.preload(pl.read_parquet(table / "*.parquet"))


def _write_field_table(out_dir: Path, options: TransformOptions) -> None:
    frame = pl.DataFrame(
        {
            "field_id": [f.field_id for f in FIELDS],
            "name": [f.name for f in FIELDS],
            "entity": [f.entity for f in FIELDS],
            "multi_valued": [f.multi_valued for f in FIELDS],
            "description": [f.description for f in FIELDS],
        }
    )
    with atomic_file(out_dir / "field" / "part-00000.parquet") as tmp:
        write_frame(frame, "field", tmp, options.compression)


def _finish_split(
    state: SplitState, registry: FeatureRegistry, options: TransformOptions
) -> dict[str, Any]:
    from deepcvr.transform.accounting import account_split

    with atomic_file(state.out / "feature" / "part-00000.parquet") as tmp:
        write_arrow(registry.feature_table(state.split), tmp, options.compression)
    summary = account_split(state, options)
    with atomic_file(state.out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def run_transform(ctx: Any, params: Any, runner: ChunkRunner | None = None) -> dict[str, Any]:
    """Entry point of the `transform.aliccp` op and the `deepcvr transform` command; `runner`:
    workers already started for the local engine."""
    default_input = "raw" if params.stage_raw else "external"
    raw_dir = Path(params.input) if params.input else ctx.workspace / default_input
    out_dir = Path(params.output) if params.output else ctx.workspace / "parquet"
    if params.engine == "spark":
        from deepcvr.transform.spark_engine import run_spark_transform

        return run_spark_transform(raw_dir, out_dir, params, ctx=ctx)
    options = TransformOptions(
        workers=runner.workers if runner else params.workers or os.cpu_count() or 1,
        chunk_bytes=params.chunk_bytes,
        max_reject_ratio=params.max_reject_ratio,
        force=ctx.force,
        stage_raw=params.stage_raw,
    )
    summary = transform(raw_dir, out_dir, params.split, options, runner)
    summary["assets"] = parquet_assets(out_dir, list(summary["splits"]))
    if ctx.store is not None:
        for split, info in summary["splits"].items():
            ctx.store.record(ctx.run_id, ctx.task, "accounting", split, info["accounting"])
            ctx.store.record(ctx.run_id, ctx.task, "rejects", split, info["rejects"])
    return summary


def parquet_assets(out_dir: Path, splits: list[str]) -> list[dict[str, Any]]:
    """One asset per Parquet dataset written: rows and bytes from the footers, the schema."""
    from deepcvr.schema import MODEL, REJECTS
    from deepcvr.transform.accounting import parquet_rows

    assets = []
    for table in (*MODEL, REJECTS):
        dirs = (
            [out_dir / s / table.name for s in splits]
            if table.per_split
            else [out_dir / table.name]
        )
        for directory in dirs:
            files = sorted(directory.glob("*.parquet"))
            assets.append(
                {
                    "uri": str(directory.resolve()),
                    "kind": "parquet_dataset",
                    "rows": parquet_rows(files),
                    "bytes": sum(f.stat().st_size for f in files),
                    "schema": {c.name: c.type for c in table.columns},
                }
            )
    return assets
