"""Paths under the data root as the user registered them: errors shown to a client or stored on a job
name the file relative to PROMPTEHR_DATA_ROOT, never the server's own folders; and the limits under
which the API and the workers read those files."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptehr.model.data.opening import ReadLimits
    from promptehr.service.settings import Settings


def relative_to_data_root(text: str, data_root: str | Path | None) -> str:
    """`text` with every path under the data root written relative to it ("/srv/data/m3/X.csv" ->
    "m3/X.csv"; the root itself -> "."), for the configured root and the one it resolves to. A path
    that merely starts with the same letters ("/srv/data2") or holds the root inside it is left alone."""
    if data_root is None:
        return text
    roots = {str(Path(data_root))}
    try:
        roots.add(str(Path(data_root).resolve()))
    except (OSError, RuntimeError):
        pass
    sep = re.escape(os.sep)
    for root in sorted((r.rstrip(os.sep) for r in roots), key=len, reverse=True):
        if not root:  # a data root of "/": every path is under it; nothing to shorten
            continue
        pattern = rf"(?<![\w.{sep}-]){re.escape(root)}(?:({sep})+|(?![\w.{sep}-]))"
        text = re.sub(pattern, lambda m: "" if m.group(1) else ".", text)
    return text


def read_limits(settings: Settings) -> ReadLimits:
    """What every data file is held to (model/data/opening.py): inside the data root (resolved again
    at every open), regular, and within the settings' size, decompression and time limits."""
    # Imported on use: model.data brings pandas (about 0.4 s of API start-up); only the code that is
    # about to read a data set needs it.
    from promptehr.model.data.opening import ReadLimits

    return ReadLimits(root=Path(settings.data_root), max_file_bytes=settings.data_max_file_bytes,
                      max_decompressed_bytes=settings.data_max_decompressed_bytes,
                      max_seconds=settings.data_read_timeout_seconds)
