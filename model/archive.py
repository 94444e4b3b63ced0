"""Zip files streamed as they are written: an unseekable sink that a generator drains, so a zip of any
size goes out in chunks with nothing but the current chunk in memory (zipfile then writes data
descriptors after each member). The MIMIC-style exports (model/data/export.py) and a checkpoint's
download (GET /models/{id}/download) both write through it. No torch, no pandas: the API imports it."""
from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK_BYTES = 1 << 20


class Pipe(io.RawIOBase):
    """A write-only, unseekable sink whose bytes the generator drains."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def zip_files(members: Iterable[tuple[str, Path]], chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A zip of `members` ((name in the zip, file to read)), stored uncompressed (weights do not
    compress), in chunks of about `chunk` bytes."""
    sink = Pipe()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, path in members:
            with open(path, "rb") as src, zf.open(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), "w") as dst:
                while block := src.read(chunk):
                    dst.write(block)
                    if data := sink.drain():
                        yield data
    if data := sink.drain():
        yield data
