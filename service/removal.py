"""Removing the service's own files (a deleted model's checkpoint, a finished job's scratch), and only
under the root they belong to: the path is confined when it is used, not when it was stored, so a
row naming a path outside the root, or a folder that a symlink now points elsewhere, removes nothing
outside it. Users' data files are never removed (DELETE /datasets drops the registration only)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def confined(root: str | Path, path: str | Path) -> Path | None:
    """Where `path` (relative to `root`, or absolute) is once its parent folders are resolved, if that
    is strictly inside the resolved root; None otherwise. The last part is not followed: removing a
    symlink removes the link, never what it points to."""
    p = Path(path)
    if p.name in ("", ".", ".."):
        return None
    try:
        base = Path(root).resolve()
        where = (p if p.is_absolute() else base / p).parent.resolve() / p.name
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None
    return where if where != base and where.is_relative_to(base) else None


def remove_under(root: str | Path, path: str | Path) -> bool:
    """Remove the file, link or folder `path` names under `root` (see `confined`). True when something
    was removed; False when there was nothing there or it lies outside the root (logged)."""
    where = confined(root, path)
    if where is None:
        log.warning("not removing %s: outside %s", path, root)
        return False
    try:
        if where.is_symlink() or where.is_file():
            where.unlink()
        elif where.is_dir():
            shutil.rmtree(where)  # never follows symlinks inside the folder (they are unlinked)
        else:
            return False
    except FileNotFoundError:  # removed meanwhile by someone else: what was asked is done
        return False
    return True
