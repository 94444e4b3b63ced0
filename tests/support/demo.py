"""Helpers for the demo-download tests (tests/test_demo_data.py, tests/test_demo_cli.py; the local
HTTP server is the demo_server fixture in tests/conftest.py)."""
from __future__ import annotations

import shutil

from promptehr.model.data.demo_data import FILES


def serve_under_files(root) -> None:
    """Copy the demo's files into root/files/, the path the download URL names."""
    (root / "files").mkdir()
    for name in FILES:
        shutil.copy(root / name, root / "files" / name)
