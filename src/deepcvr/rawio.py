"""Raw CSV I/O that streams past the page cache instead of filling it.

The raw files are written once (decompress) and read once (transform): 38 GB of them at full
scale, more than memory, so caching them only evicts what is worth keeping. Filling the cache
is not free either: every byte takes a fresh page, which the kernel must find (and on a VM the
host must back). On the 2-core VM of docs/transform.md, 0.5 GB took 1.6-1.8 s of system time to
write through the cache and 0.1-0.2 s with O_DIRECT, and 0.5-1.1 s to read cold through the
cache against 0.03-0.04 s with O_DIRECT.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# O_DIRECT needs the buffer, the file offset and the length aligned to the device's logical
# block (512 B or 4 KiB); a page is both.
ALIGN = mmap.PAGESIZE
DIRECT_BLOCK = 8 << 20  # bytes per direct write: large writes keep the device streaming


class DirectWriter:
    """Writes a stream to a new file with O_DIRECT, through two reused, page-aligned buffers:
    one fills while a thread writes the other, so the device works while the caller computes
    (a direct write returns only once the device has the data).

    Where the file system refuses O_DIRECT (tmpfs, some network file systems) it writes through
    the page cache as any file would; `direct` says which. Errors are the OSErrors of os.write,
    raised by a later `write` or by `finish`."""

    def __init__(self, path: Path) -> None:
        self._fd, self.direct = _open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.size = 0
        self._fill = 0
        self._bufs: list[mmap.mmap] = []
        self._writing: list[Future[None] | None] = [None, None]
        self._pool: ThreadPoolExecutor | None = None
        if self.direct:
            self._bufs = [mmap.mmap(-1, DIRECT_BLOCK), mmap.mmap(-1, DIRECT_BLOCK)]
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="direct-write")

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.size += len(view)
        if not self._bufs:
            _write_all(self._fd, view)
            return
        while view:
            n = min(len(view), DIRECT_BLOCK - self._fill)
            if not self._fill:
                self._wait(0)  # the write of this buffer's previous block
            self._bufs[0][self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == DIRECT_BLOCK:
                assert self._pool is not None
                self._writing[0] = self._pool.submit(self._write_block, self._bufs[0], DIRECT_BLOCK)
                self._bufs.reverse()
                self._writing.reverse()
                self._fill = 0

    def _wait(self, which: int) -> None:
        pending = self._writing[which]
        self._writing[which] = None
        if pending is not None:
            pending.result()

    def _write_block(self, buf: mmap.mmap, length: int) -> None:
        """Write the first `length` bytes of `buf` (a multiple of ALIGN)."""
        with memoryview(buf)[:length] as block:
            try:
                n = os.write(self._fd, block)
            except OSError as e:
                if e.errno != errno.EINVAL:  # a device with larger blocks: go on through the cache
                    raise
                n = 0
            if n < length:  # short or refused: the rest goes through the page cache
                self.direct = _plain(self._fd)
                _write_all(self._fd, block[n:])

    def finish(self) -> None:
        """Write what is left: the last block padded to ALIGN, then the file cut to size."""
        if not self._bufs:
            return
        for which in (0, 1):  # the blocks submitted, written in order by the one thread
            self._wait(which)
        if self._fill:
            padded = -(-self._fill // ALIGN) * ALIGN
            self._bufs[0][self._fill : padded] = bytes(padded - self._fill)
            self._write_block(self._bufs[0], padded)
            os.ftruncate(self._fd, self.size)

    def close(self) -> None:
        """Close the file (after `finish`, or on an error, leaving it incomplete)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # no write may land after the file is gone
            self._pool = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._bufs = []  # unmapped once no view is left (an error's traceback may hold one)

    def __enter__(self) -> DirectWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(path: str | Path, flags: int) -> tuple[int, bool]:
    """(fd, direct): the file opened with O_DIRECT, or plainly where that is refused (EINVAL)."""
    flags |= os.O_CLOEXEC
    if hasattr(os, "O_DIRECT"):
        try:
            return os.open(path, flags | os.O_DIRECT, 0o644), True
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    return os.open(path, flags, 0o644), False


def _plain(fd: int) -> bool:
    """Turn O_DIRECT off for the rest of the file's I/O; returns the new `direct` (False)."""
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
    return False


def _write_all(fd: int, view: memoryview) -> None:
    while view:  # a write may be partial
        view = view[os.write(fd, view) :]


class RangeReader:
    """Reads ranges of a file with O_DIRECT into one reused, page-aligned buffer: the bytes go
    from the device to the buffer through no cache page. Where O_DIRECT is refused it reads
    plainly. Reads come back as (buffer, offset, length), valid until the next read."""

    def __init__(self, path: str, max_length: int, buffer: mmap.mmap | None = None) -> None:
        # Room for `max_length` bytes at any offset in the first block.
        self.buffer = buffer if buffer is not None else mmap.mmap(-1, _span(ALIGN - 1, max_length))
        self._fd, self.direct = _open(path, os.O_RDONLY)

    def read(self, start: int, length: int) -> tuple[mmap.mmap, int, int]:
        """`length` bytes from `start` (fewer at the end of the file): they are
        `buffer[offset : offset + n]` of the returned (buffer, offset, n)."""
        low = start - start % ALIGN if self.direct else start
        span = _span(start - low, length) if self.direct else length
        if len(self.buffer) < span:  # a long line made a long chunk; arrays may still view the old
            self.buffer = mmap.mmap(-1, span)
        view = memoryview(self.buffer)
        got = 0
        try:
            while got < span:
                try:
                    n = os.preadv(self._fd, [view[got:span]], low + got)
                except OSError as e:
                    if e.errno != errno.EINVAL or not self.direct:
                        raise
                    self.direct = _plain(self._fd)  # a device with larger blocks
                    continue
                got += n
                if n == 0 or (self.direct and n % ALIGN):  # the end of the file
                    break
        finally:
            view.release()
        offset = start - low
        return self.buffer, offset, max(0, min(length, got - offset))

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _span(offset: int, length: int) -> int:
    """Bytes to read, in whole ALIGN blocks, for `length` bytes at `offset` in the first one."""
    return max(ALIGN, -(-(offset + length) // ALIGN) * ALIGN)


_thread = threading.local()


def read_bytes(path: str, start: int, length: int) -> bytes:
    """A range of a file as bytes, read past the page cache through a buffer the calling thread
    keeps for its next read (a worker reads one chunk after another)."""
    with RangeReader(path, length, getattr(_thread, "buffer", None)) as reader:
        buffer, offset, n = reader.read(start, length)
        _thread.buffer = reader.buffer
        return buffer[offset : offset + n]


@dataclass(frozen=True)
class SharedBytes:
    """Bytes of a chunk the parent read into one of its shared slots (a memfd), for a worker to
    copy out: the chunk comes off the device once, goes through no page cache and no pipe, and
    the worker does not wait for the device."""

    pid: int
    fd: int
    offset: int
    length: int
    slot: int

    def read(self) -> bytes:
        with open(f"/proc/{self.pid}/fd/{self.fd}", "rb", buffering=0) as f:
            parts, at, end = [], self.offset, self.offset + self.length
            while at < end and (part := os.pread(f.fileno(), end - at, at)):
                parts.append(part)
                at += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class SharedSlots:
    """Page-aligned buffers in memfds that the chunk planner reads chunks into, one per chunk in
    flight; a slot is given back when its chunk's result is in. Linux only (memfd, /proc): where
    either is missing there are no slots and workers read their chunks themselves."""

    def __init__(self, count: int, chunk_bytes: int) -> None:
        self.size = _span(ALIGN - 1, chunk_bytes)  # a chunk at any offset in its first block
        self._count = count
        self._maps: list[mmap.mmap] = []
        self._fds: list[int] = []
        self._free: list[int] = []
        self.available = hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd")

    def take(self) -> tuple[int, mmap.mmap] | None:
        """A free slot (index, buffer), or None when all are in use or there are none."""
        if not self.available:
            return None
        if not self._free and len(self._maps) < self._count:
            fd = os.memfd_create("deepcvr-chunk", os.MFD_CLOEXEC)
            os.ftruncate(fd, self.size)
            self._fds.append(fd)
            self._maps.append(mmap.mmap(fd, self.size))
            self._free.append(len(self._maps) - 1)
        if not self._free:
            return None
        slot = self._free.pop()
        return slot, self._maps[slot]

    def share(self, slot: int, offset: int, length: int) -> SharedBytes:
        return SharedBytes(os.getpid(), self._fds[slot], offset, length, slot)

    def give_back(self, slot: int) -> None:
        self._free.append(slot)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._maps, self._fds, self._free = [], [], []
