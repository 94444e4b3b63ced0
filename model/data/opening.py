"""Opening data files defensively: every table a loader reads comes through `open_data_file`.

A path names whatever the file system holds there, and the data may come from someone else (a
client of the API, a folder swapped after registration). So a file is opened only if it is a
regular file: opened non-blocking (a FIFO with no writer would otherwise block `open` for ever) and
checked with fstat on the descriptor actually opened, so that nothing can be swapped in between the
check and the read. With `ReadLimits` (plain values; the service fills them from its settings):
- root: the file actually opened (its /proc/self/fd link, where Linux has one) must lie inside it,
  resolved at every open: a symlink repointed out of the root after registration is refused;
- max_file_bytes: the size on disk;
- max_decompressed_bytes: the bytes read after decompression, counted as they stream (a gzip bomb
  is refused at the limit, never held in memory); for a plain file the same as its size;
- max_seconds: a deadline for a whole `load_patients` call, checked at every read.

The limits in force are set for one load by `read_limits(...)` (a ContextVar: the loaders reach
files through a dozen helpers, and threading an argument through each would spread it everywhere);
a stream captures them when opened, so pyarrow's reader threads need no context of their own.
"""
from __future__ import annotations

import gzip
import io
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from promptehr.model.errors import DataError


@dataclass(frozen=True)
class ReadLimits:
    root: Path | None = None
    max_file_bytes: int | None = None
    max_decompressed_bytes: int | None = None
    max_seconds: float | None = None


_NONE = ReadLimits()
# (limits, monotonic deadline or None) of the load in progress in this context.
_active: ContextVar[tuple[ReadLimits, float | None]] = ContextVar("promptehr_read_limits", default=(_NONE, None))


@contextmanager
def read_limits(limits: ReadLimits | None) -> Iterator[None]:
    """Apply `limits` to every file opened inside the block (None: only the regular-file check)."""
    limits = limits or _NONE
    deadline = None if limits.max_seconds is None else time.monotonic() + limits.max_seconds
    token = _active.set((limits, deadline))
    try:
        yield
    finally:
        _active.reset(token)


def active_limits() -> ReadLimits:
    return _active.get()[0]


def inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_inside_root(path: Path, root: Path | None, real: Path | None = None) -> None:
    """Raise a DataError unless `path` (or `real`, where it was opened) resolves inside `root`."""
    if root is None:
        return
    try:
        resolved_root = Path(root).resolve()
        real = real or Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise DataError(path, "not a usable path (symlink loop?)") from None
    if not inside(real, resolved_root):
        raise DataError(path, "resolves outside the data root (a symlink leaving it?): expected a file under the data root")


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _opened_path(fd: int, path: Path) -> Path:
    """Where descriptor `fd` really points (Linux: /proc/self/fd), else `path` resolved now."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)"))
    except OSError:
        return Path(path).resolve()


def _open_regular(path: Path, limits: ReadLimits) -> io.FileIO:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as e:  # ENXIO: a socket; ELOOP, EACCES, ...
        raise DataError(path, f"cannot open ({e.strerror}): expected a regular data file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(path, f"{_kind(st.st_mode)}, not a regular file: expected a data file")
        check_inside_root(path, limits.root, _opened_path(fd, path))
        if limits.max_file_bytes is not None and st.st_size > limits.max_file_bytes:
            raise DataError(path, f"file of {st.st_size:,} bytes: expected at most {limits.max_file_bytes:,} bytes")
        os.set_blocking(fd, True)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


class _Guarded(io.RawIOBase):
    """A read-only stream that counts what it hands out and stops at the limits."""

    def __init__(self, path: Path, raw: io.FileIO, source, limit: int | None, what: str, deadline: float | None,
                 seconds: float | None):
        self.path, self._raw, self._source = path, raw, source
        self._limit, self._what, self._deadline, self._seconds = limit, what, deadline, seconds
        self._count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._source is self._raw  # Parquet seeks; a decompressing stream does not

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._source.tell() if self._source is self._raw else self._count

    def readinto(self, buffer) -> int:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DataError(self.path, f"reading took longer than the limit of {self._seconds:g} s")
        try:
            n = self._source.readinto(buffer)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(self.path, f"cannot read file ({str(e)[:200]}): expected CSV text or gzipped CSV") from None
        self._count += n or 0
        if self._limit is not None and self._count > self._limit:
            raise DataError(self.path, f"{self._what} over the limit of {self._limit:,} bytes")
        return n

    def close(self) -> None:
        try:
            if self._source is not self._raw:
                self._source.close()
        finally:
            self._raw.close()
            super().close()


def open_data_file(path: str | Path, buffer_size: int = 1 << 20) -> io.BufferedReader:
    """`path` opened for reading under the limits in force: refused (DataError) unless a regular
    file inside the root and within the size limit; a `.gz` file comes out decompressed."""
    path = Path(path)
    limits, deadline = _active.get()
    raw = _open_regular(path, limits)
    if path.name.lower().endswith(".gz"):
        source, what = gzip.GzipFile(fileobj=raw, mode="rb"), "decompressed data"
    else:
        # A plain file is read as it is: its size was checked; count anyway, since it may grow.
        source, what = raw, "file"
    limit = limits.max_decompressed_bytes
    if source is raw and limits.max_file_bytes is not None:
        limit = min(limit, limits.max_file_bytes) if limit is not None else limits.max_file_bytes
    return io.BufferedReader(_Guarded(path, raw, source, limit, what, deadline, limits.max_seconds), buffer_size)
