"""The demo's download path, against a local HTTP server that serves the shared MIMIC-III demo."""
from __future__ import annotations

import pytest

from promptehr.model.data.demo_data import FILES, DemoDataUnavailable, fetch_mimic3_demo
from tests.support.demo import serve_under_files


def test_downloads_verifies_and_caches(demo_server, tmp_path):
    url, root, requests = demo_server
    serve_under_files(root)
    cache = tmp_path / "cache"
    folder = fetch_mimic3_demo(cache, base_url=url)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    from promptehr.model.data import load_patients

    patients = load_patients(folder)
    assert len(patients) == 100
    n = len(requests)
    assert fetch_mimic3_demo(cache, base_url=url) == folder
    assert len(requests) == n, "a complete cache must not download again"


def test_corrupted_download_is_refused_and_leaves_no_file(demo_server, tmp_path):
    url, root, _ = demo_server
    serve_under_files(root)
    (root / "files" / "DIAGNOSES_ICD.csv").write_text("row_id,subject_id\n1,2\n")
    cache = tmp_path / "cache"
    with pytest.raises(DemoDataUnavailable, match="DIAGNOSES_ICD.csv.*SHA-256"):
        fetch_mimic3_demo(cache, base_url=url)
    assert not (cache / "DIAGNOSES_ICD.csv").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_offline_says_so_in_one_line(tmp_path):
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(DemoDataUnavailable) as info:
        fetch_mimic3_demo(tmp_path / "cache", base_url="http://127.0.0.1:9/", timeout=3)
    message = str(info.value)
    assert "\n" not in message and "--data" in message and "offline" in message
