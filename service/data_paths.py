"""Paths under the data root as the user registered them: errors shown to a client or stored on a job
name the file relative to PROMPTEHR_DATA_ROOT, never the server's own folders."""
from __future__ import annotations

import os
import re
from pathlib import Path


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
