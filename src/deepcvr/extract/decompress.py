"""Unpack an Ali-CCP archive (`sample_{split}.tar.gz`) safely into `raw_root/{split}/`.

The tar is read in streaming mode (one pass, constant memory) into a temp directory that
replaces `raw_root/{split}` only once the whole archive has been read and checked, so a
corrupt or hostile archive leaves nothing behind.
"""

from __future__ import annotations

import errno
import logging
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from deepcvr import cancel
from deepcvr.aliccp import SPLITS, archive_name, common_name, skeleton_name
from deepcvr.errors import DataError
from deepcvr.extract.gz import GZIP_ERRORS, GZIP_MAGIC, compressed_position, open_gzip
from deepcvr.fsutil import atomic_dir
from deepcvr.progress import progress
from deepcvr.rawio import DirectWriter

log = logging.getLogger("deepcvr")

# 1 MiB, as tarfile reads: a larger read makes tarfile join and slice fresh buffers, and the
# page faults of those cost 4x the decompression itself (2.3 s against 0.6 s per 247 MB member).
BLOCK = 1024 * 1024
TAR_BUFSIZE = 1024 * 1024  # tarfile's stream read size; its default 10 KiB means many calls

Advance = Callable[[int], None]


@dataclass(frozen=True)
class DecompressResult:
    split: str
    archive: Path
    files: tuple[Path, ...]  # extracted CSV paths: (common, skeleton)
    bytes_out: int


def find_archives(source_dir: Path) -> dict[str, Path]:
    """split -> path of each `sample_{split}.tar.gz` present in `source_dir` (may be empty)."""
    paths = {split: source_dir / archive_name(split) for split in SPLITS}
    return {split: path for split, path in paths.items() if path.is_file()}


def decompress(
    archive: Path, raw_root: Path, split: str | None = None, advance: Advance | None = None
) -> DecompressResult:
    """Extract the split's two CSVs to `raw_root/{split}/`; `advance` gets compressed bytes."""
    split = _split_of(archive, split)
    size = _check_archive(archive)
    final = raw_root / split
    try:
        with atomic_dir(final) as tmp:
            if advance is None:
                with progress(f"decompress {archive.name}", total=size or None, unit="B") as adv:
                    names, bytes_out = _extract(archive, tmp, final, split, adv)
            else:
                names, bytes_out = _extract(archive, tmp, final, split, advance)
    except OSError as e:  # creating or renaming the output directory
        raise _write_error(archive, final, e) from None
    return DecompressResult(split, archive, tuple(final / n for n in names), bytes_out)


def _split_of(archive: Path, split: str | None) -> str:
    if split is None:
        split = next((s for s in SPLITS if archive.name == archive_name(s)), None)
        if split is None:
            names = ", ".join(archive_name(s) for s in SPLITS)
            raise DataError(
                f"{archive}: cannot tell the split from the file name (expected one of {names}); "
                "rename it or pass the split explicitly"
            )
    elif split not in SPLITS:
        raise DataError(f"{archive}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split


def _check_archive(archive: Path) -> int:
    """Fail early, before touching the output, if the archive is missing or not gzip."""
    try:
        with archive.open("rb") as f:
            head = f.read(4)
        size = archive.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{archive}: archive not found; download it or fix the path") from None
    except OSError as e:
        raise DataError(f"{archive}: cannot read archive ({e.strerror}); check the path") from None
    if not head:
        raise DataError(f"{archive}: empty file; download it again")
    if head[:2] != GZIP_MAGIC:
        raise DataError(f"{archive}: not a gzip file (starts with {head!r}); download it again")
    return size


class _TarInfo(tarfile.TarInfo):
    """Remembers why the member stream ended: tarfile treats a bad or truncated header after
    the first member as a silent end of archive, which would hide a corrupt tar."""

    @classmethod
    def fromtarfile(cls, tf):  # type: ignore[no-untyped-def]
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as e:
            tf.deepcvr_end = e
            raise


def _extract(
    archive: Path, tmp: Path, final: Path, split: str, advance: Advance
) -> tuple[tuple[str, ...], int]:
    expected = (common_name(split), skeleton_name(split))
    try:
        stream = open_gzip(archive)
    except OSError as e:
        raise DataError(
            f"{archive}: cannot read archive ({_one_line(e)}); check the path"
        ) from None
    pos = [0]

    def tick() -> None:  # report compressed bytes consumed so far
        now = compressed_position(stream)
        if now is not None and now > pos[0]:
            advance(now - pos[0])
            pos[0] = now

    with stream:  # closed only after the handlers below have read the failure offset
        try:
            done = _read_tar(archive, stream, tmp, final, expected, tick)
        except DataError:
            raise
        except GZIP_ERRORS as e:
            raise _gzip_error(archive, e, stream) from None
        except tarfile.ReadError as e:
            if str(e).startswith("zlib error"):  # tarfile wraps zlib.error from stdlib gzip
                raise _gzip_error(archive, e, stream) from None
            raise DataError(
                f"{archive}: corrupt tar structure inside the gzip data ({_one_line(e)}); "
                "download it again"
            ) from None
        except tarfile.TarError as e:
            raise DataError(
                f"{archive}: corrupt tar archive ({_one_line(e)}); download it again"
            ) from None
        except OSError as e:  # writes are translated in _copy, so this is reading the archive
            raise DataError(
                f"{archive}: cannot read archive ({_one_line(e)}); check the disk"
            ) from None
    for name in expected:
        if name not in done:
            raise DataError(
                f"{archive}: missing expected member {name}; is this an Ali-CCP archive?"
            )
    return expected, sum(done.values())


def _read_tar(
    archive: Path,
    stream: BinaryIO,
    tmp: Path,
    final: Path,
    expected: tuple[str, ...],
    tick: Callable[[], None],
) -> dict[str, int]:
    """Check every member, copy the expected ones to `tmp`; returns name -> bytes written."""
    done: dict[str, int] = {}
    with tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_BUFSIZE, tarinfo=_TarInfo) as tar:
        for member in tar:
            _check_member(archive, member, tmp)
            base = PurePosixPath(member.name).name
            if not member.isreg():
                continue
            if base not in expected:
                log.info("%s: skipping unexpected member %r", archive.name, member.name)
                continue
            if base in done:
                raise DataError(f"{archive}: duplicate member {base}; download it again")
            src = tar.extractfile(member)
            assert src is not None  # regular files always have data
            done[base] = _copy(archive, src, tmp / base, final / base, tick)
            tick()
        end = getattr(tar, "deepcvr_end", None)
        if isinstance(end, tarfile.EmptyHeaderError | tarfile.TruncatedHeaderError | None):
            raise tarfile.ReadError("tar data ends without an end-of-archive marker")
        if not isinstance(end, tarfile.EOFHeaderError):
            raise tarfile.ReadError(_one_line(end))
    while stream.read(BLOCK):  # read to the end so the gzip CRC and length are checked
        tick()
    tick()
    return done


def _check_member(archive: Path, member: tarfile.TarInfo, dest: Path) -> None:
    """Refuse anything but plain files and directories that stay inside the output."""
    path = PurePosixPath(member.name)
    reason = None
    if path.is_absolute() or member.name.startswith("\\"):
        reason = "absolute path"
    elif ".." in path.parts or ".." in member.name.split("\\"):
        reason = "path escapes the output directory"
    elif member.issym():
        reason = f"symbolic link to {member.linkname!r}"
    elif member.islnk():
        reason = f"hard link to {member.linkname!r}"
    elif member.ischr() or member.isblk():
        reason = "device file"
    elif member.isfifo():
        reason = "FIFO"
    elif not (member.isreg() or member.isdir()):
        reason = f"unsupported member type {member.type!r}"
    elif hasattr(tarfile, "data_filter"):  # second line of defence (Python >= 3.11.4)
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as e:
            reason = _one_line(e)
    if reason is not None:
        raise DataError(
            f"{archive}: unsafe member {member.name!r} ({reason}); refusing to extract anything"
        )


def _copy(archive: Path, src: BinaryIO, dest: Path, shown: Path, tick: Callable[[], None]) -> int:
    """Stream one member to `dest`, past the page cache (the transform reads it once, later);
    output errors name `shown`. Read errors from `src` propagate untouched: the caller
    classifies them."""
    with _output_errors(archive, shown):
        out = DirectWriter(dest)
    with out:
        while chunk := src.read(BLOCK):
            cancel.check()  # Ctrl-C: the atomic output directory is removed on the way out
            with _output_errors(archive, shown):
                out.write(chunk)
            tick()
        with _output_errors(archive, shown):
            out.finish()
    return out.size


@contextmanager
def _output_errors(archive: Path, shown: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise _write_error(archive, shown, e) from None


def _gzip_error(archive: Path, e: BaseException, stream: BinaryIO) -> DataError:
    where = compressed_position(stream)
    at = f" near byte offset {where:,}" if where is not None else ""
    reason = _one_line(e) or type(e).__name__
    return DataError(f"{archive}: corrupt or truncated gzip data ({reason}){at}; download it again")


def _write_error(archive: Path, path: Path, e: OSError) -> DataError:
    if e.errno == errno.ENOSPC:
        return DataError(
            f"{archive}: no space left on device writing {path}; "
            "free space or choose another workspace"
        )
    return DataError(
        f"{archive}: cannot write {path} ({e.strerror or e}); "
        "check permissions or choose another workspace"
    )


def _one_line(e: object) -> str:
    return " ".join(str(e).split())
