"""Pipeline op `extract.decompress`: `sample_{split}.tar.gz` archives -> `raw/{split}/*.csv`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from deepcvr import aliccp
from deepcvr.errors import DataError
from deepcvr.pipeline.ops import OpContext, OpParams, op

log = logging.getLogger("deepcvr")


class DecompressParams(OpParams):
    source: str | None = Field(
        None, description="directory holding sample_{split}.tar.gz (default: WORKSPACE/external)"
    )
    output: str | None = Field(
        None,
        description="raw directory; each split goes to OUTPUT/{split}/ (default: WORKSPACE/raw)",
    )
    split: list[Literal["train", "test"]] | None = Field(
        None, description="splits to unpack (default: every split whose archive is present)"
    )


@op("extract.decompress", DecompressParams)
def decompress_op(ctx: OpContext, params: DecompressParams) -> dict[str, Any]:
    """Unpack the Ali-CCP archives safely (streamed, checked, atomic) into the raw directory."""
    from deepcvr.extract.decompress import decompress, find_archives

    source = ctx.path(params.source) if params.source else ctx.workspace / "external"
    raw_root = ctx.path(params.output) if params.output else ctx.workspace / "raw"
    found = find_archives(source) if source.is_dir() else {}
    wanted = list(dict.fromkeys(params.split)) if params.split else sorted(found)
    missing = [s for s in wanted if s not in found]
    if not wanted or missing:
        names = " or ".join(aliccp.archive_name(s) for s in (missing or aliccp.SPLITS))
        where = source if source.is_dir() else f"{source} (no such directory)"
        raise DataError(f"no archive to decompress in {where}: expected {names}")

    summary: dict[str, Any] = {"output": str(raw_root), "splits": {}}
    for split in wanted:
        archive = found[split]
        if not ctx.force and _up_to_date(archive, raw_root / split, split):
            log.info("%s: raw files are newer than the archive; skipped (use --force)", split)
            summary["splits"][split] = {"archive": str(archive), "skipped": "up to date"}
            continue
        res = decompress(archive, raw_root, split)
        if ctx.store is not None:
            for path in res.files:
                ctx.store.add_asset(
                    str(path),
                    "raw_csv",
                    bytes=path.stat().st_size,
                    run_id=ctx.run_id,
                    task=ctx.task,
                )
        summary["splits"][split] = {
            "archive": str(archive),
            "files": [str(p) for p in res.files],
            "bytes_out": res.bytes_out,
        }
    summary["bytes_out"] = sum(s.get("bytes_out", 0) for s in summary["splits"].values())
    return summary


def _up_to_date(archive: Path, split_dir: Path, split: str) -> bool:
    """Like make: both raw CSVs exist and are newer than the archive they came from."""
    files = aliccp.raw_files(split_dir, split)
    try:
        return min(p.stat().st_mtime_ns for p in files) >= archive.stat().st_mtime_ns
    except FileNotFoundError:
        return False
