"""Read one CSV member of an Ali-CCP archive as a stream, without writing it to disk.

Used by the transform when `stage_raw: false` (for users short of disk). Nothing is extracted,
so member paths cannot escape anything; corrupt data still becomes a one-line DataError.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from deepcvr.errors import DataError
from deepcvr.extract.decompress import TAR_BUFSIZE, _gzip_error, _one_line
from deepcvr.extract.gz import GZIP_ERRORS, open_gzip


class _CheckedReader:
    """A member stream whose gzip/tar failures surface as one-line DataErrors."""

    def __init__(self, archive: Path, raw: BinaryIO, member: BinaryIO, size: int) -> None:
        self.archive, self.raw, self.member, self.size = archive, raw, member, size

    def read(self, size: int = -1) -> bytes:
        try:
            return self.member.read(size)
        except GZIP_ERRORS as e:
            raise _gzip_error(self.archive, e, self.raw) from None
        except (tarfile.TarError, OSError) as e:
            raise DataError(
                f"{self.archive}: cannot read archive ({_one_line(e)}); download it again"
            ) from None


@contextmanager
def open_member(archive: Path, name: str) -> Iterator[_CheckedReader]:
    """Yield a reader of the regular member whose base name is `name`."""
    try:
        raw = open_gzip(archive)
    except OSError as e:
        raise DataError(
            f"{archive}: cannot read archive ({_one_line(e)}); check the path"
        ) from None
    with raw:
        try:
            with tarfile.open(fileobj=raw, mode="r|", bufsize=TAR_BUFSIZE) as tar:
                for member in tar:
                    if member.isreg() and PurePosixPath(member.name).name == name:
                        stream = tar.extractfile(member)
                        assert stream is not None
                        yield _CheckedReader(archive, raw, stream, member.size)
                        return
        except GZIP_ERRORS as e:
            raise _gzip_error(archive, e, raw) from None
        except tarfile.TarError as e:
            raise DataError(
                f"{archive}: corrupt tar archive ({_one_line(e)}); download it again"
            ) from None
    raise DataError(f"{archive}: missing expected member {name}; is this an Ali-CCP archive?")
