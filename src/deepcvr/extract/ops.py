"""Pipeline ops `extract.download` (source -> `external/*.tar.gz`, verified) and
`extract.decompress` (`sample_{split}.tar.gz` archives -> `raw/{split}/*.csv`)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from deepcvr import aliccp
from deepcvr.errors import DataError
from deepcvr.pipeline.ops import OpContext, OpParams, op
from deepcvr.progress import progress

log = logging.getLogger("deepcvr")

SOURCE_SCHEMES = ("s3", "http", "https", "file", "")


class DownloadParams(OpParams):
    # populate_by_name: YAML says `force:`, the CLI field is --force-download (--force is the
    # run-wide flag every command has).
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(
        ...,
        description="s3://BUCKET/PREFIX/, https://HOST/DIR/ (or one file's URL), "
        "file:///DIR or a local path",
    )
    output: str | None = Field(
        None, description="directory for the files (default: WORKSPACE/external)"
    )
    files: list[str] | None = Field(
        None,
        description="names or glob patterns relative to the source "
        "(default: sample_train.tar.gz and sample_test.tar.gz, those present)",
    )
    keys: list[str] | None = Field(
        None, description="S3 only: exact object keys (no listing needed), saved by base name"
    )
    sha256: dict[str, str] | None = Field(
        None, description="expected SHA-256 per file name; beats a SHA256SUMS file at the source"
    )
    force_download: bool = Field(
        False, alias="force", description="download even if the files verify (as --force)"
    )
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint, e.g. MinIO (default: AWS, or the "
        "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL environment variable)",
    )
    region: str | None = Field(None, description="AWS region (default: the AWS config chain)")
    anonymous: bool = Field(False, description="S3: unsigned requests, for public buckets")
    part_size_mb: int = Field(8, ge=1, le=5120, description="S3: MiB per ranged GET")
    concurrency: int = Field(8, ge=1, le=64, description="S3: parallel ranged GETs per file")
    link: bool = Field(
        True, description="local sources: hard-link instead of copying on the same filesystem"
    )
    timeout: float = Field(60.0, gt=0, description="seconds to wait to connect or for data")
    max_retry_seconds: float = Field(
        300.0, ge=0, description="give up on a file after retrying this long without progress"
    )

    @field_validator("source")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.lower()
        if scheme not in SOURCE_SCHEMES and len(scheme) != 1:  # 1: a Windows drive letter
            raise ValueError(
                f"unsupported scheme {scheme!r}: use s3://, https://, file:// or a path"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        from deepcvr.extract.verify import check_sha256_param

        return {k: check_sha256_param(v) for k, v in value.items()} if value else value

    @model_validator(mode="after")
    def _keys(self) -> DownloadParams:
        if self.keys and urlsplit(self.source).scheme.lower() != "s3":
            raise ValueError("keys: is for s3:// sources; use files:")
        if self.keys and self.files:
            raise ValueError("give files: or keys:, not both")
        return self


@op("extract.download", DownloadParams)
def download_op(ctx: OpContext, params: DownloadParams) -> dict[str, Any]:
    """Fetch the archives from S3, HTTP(S) or disk, verified (size + checksum) and resumable."""
    from deepcvr.extract.download import FileResult, download
    from deepcvr.extract.sources import Options

    output = ctx.path(params.output) if params.output else ctx.workspace / "external"
    options = Options(
        endpoint_url=params.endpoint_url,
        region=params.region,
        anonymous=params.anonymous,
        part_size=params.part_size_mb * 1024 * 1024,
        concurrency=params.concurrency,
        link=params.link,
        timeout=params.timeout,
        max_retry_seconds=params.max_retry_seconds,
    )

    def record(res: FileResult) -> None:  # as each file is verified, so a failure keeps them
        if ctx.store is None:
            return
        ctx.store.add_asset(
            res.uri,
            "archive",
            bytes=res.bytes,
            checksum=f"sha256:{res.sha256}",
            run_id=ctx.run_id,
            task=ctx.task,
        )
        ctx.store.record(ctx.run_id, ctx.task, "download", res.name, res.as_dict())

    result = download(
        params.source,
        output,
        files=params.files,
        keys=params.keys,
        sha256=params.sha256,
        force=ctx.force or params.force_download,
        options=options,
        on_file=record,
    )
    summary = result.summary()
    log.info(
        "download: %d downloaded, %d skipped (verified), %.1f MB in %.1f s (%.1f MB/s)",
        summary["downloaded"],
        summary["skipped"],
        summary["bytes"] / 1e6,
        summary["seconds"],
        summary["mb_per_s"],
    )
    return summary


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


def _decompress_plan(
    ctx: OpContext, params: DecompressParams
) -> tuple[Path, Path, dict[str, Path], list[str]]:
    from deepcvr.extract.decompress import find_archives

    source = ctx.path(params.source) if params.source else ctx.workspace / "external"
    raw_root = ctx.path(params.output) if params.output else ctx.workspace / "raw"
    found = find_archives(source) if source.is_dir() else {}
    wanted = list(dict.fromkeys(params.split)) if params.split else sorted(found)
    return source, raw_root, found, wanted


def _decompress_inputs(ctx: OpContext, params: DecompressParams) -> list[str]:
    _, _, found, wanted = _decompress_plan(ctx, params)
    return [str(found[s].resolve()) for s in wanted if s in found]


def _decompress_outputs(ctx: OpContext, params: DecompressParams) -> list[str]:
    _, raw_root, _, wanted = _decompress_plan(ctx, params)
    return [str((raw_root / s).resolve()) for s in wanted]


@op(
    "extract.decompress",
    DecompressParams,
    inputs=_decompress_inputs,
    outputs=_decompress_outputs,
)
def decompress_op(ctx: OpContext, params: DecompressParams) -> dict[str, Any]:
    """Unpack the Ali-CCP archives safely (streamed, checked, atomic) into the raw directory."""
    from deepcvr.extract.decompress import decompress

    source, raw_root, found, wanted = _decompress_plan(ctx, params)
    missing = [s for s in wanted if s not in found]
    if not wanted or missing:
        names = " or ".join(aliccp.archive_name(s) for s in (missing or aliccp.SPLITS))
        where = source if source.is_dir() else f"{source} (no such directory)"
        raise DataError(f"no archive to decompress in {where}: expected {names}")

    # Whether a split needs unpacking again is the runner's call (fingerprints of archive and
    # raw files), so every split asked for is unpacked here. The splits unpack at the same time,
    # a core each (inflating is one thread per stream): 0.41-0.45 s instead of 0.73-1.18 s for
    # the two archives of 1 M impressions.
    summary: dict[str, Any] = {"output": str(raw_root), "splits": {}}
    total = sum(found[s].stat().st_size for s in wanted)
    threads = max(1, min(len(wanted), os.cpu_count() or 1))
    with (
        progress(f"decompress {len(wanted)} archives", total or None, unit="B") as advance,
        ThreadPoolExecutor(threads, thread_name_prefix="decompress") as pool,
    ):
        futures = [pool.submit(decompress, found[s], raw_root, s, advance) for s in wanted]
        # The first split's error wins; the pool lets the other split finish (or stop at
        # Ctrl-C) before the op returns, so no thread writes after it.
        results = [f.result() for f in futures]
    for split, res in zip(wanted, results, strict=True):
        archive = found[split]
        summary["splits"][split] = {
            "archive": str(archive),
            "files": [str(p) for p in res.files],
            "bytes_out": res.bytes_out,
        }
    summary["bytes_out"] = sum(s.get("bytes_out", 0) for s in summary["splits"].values())
    return summary
