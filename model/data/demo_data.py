"""The demo's data sets: the DE-SynPUF extract shipped in the package (the default), and the open MIMIC-III
Clinical Database Demo, fetched once into a cache folder (`promptehr demo --data mimic3-demo`).

The shipped extract (resources/desynpuf_sample1.csv.gz, long format) is every beneficiary with a coded
inpatient claim in a 10,000-beneficiary subset of CMS DE-SynPUF sample 1, built by
scripts/build_demo_sample.py; resources/DESYNPUF_NOTICE.txt says where it comes from and on what terms.

Of the MIMIC-III demo only the three tables the loader reads (and the licence) are fetched, each checked against the
SHA-256 that PhysioNet publishes for demo v1.4, so a proxy or a truncated download can't feed the
model bad data. The base URL can be pointed elsewhere (a mirror, or a local server in tests).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

from platformdirs import user_cache_dir

DEFAULT_URL = "https://physionet.org/files/mimiciii-demo/1.4/"

# From PhysioNet's SHA256SUMS.txt for mimiciii-demo 1.4.
FILES = {
    "PATIENTS.csv": "f65803a46bcb88127574bfd0b70d78d4123783d05bb411e70d4c9629edd7b703",
    "ADMISSIONS.csv": "487e0b87cc81472cc2eb9ee911b3493c39e15d32e8230cec559907060c009b1c",
    "DIAGNOSES_ICD.csv": "74dc979906bc2172f0cf025271dcd44c7cd52506b297e4b36e63dd40dce923da",
    "LICENSE.txt": "bcdfcd4f31c790e30fb645dc36414907172405897adff329ad379eed85d12017",
}

NOTICE = "Contains information from the MIMIC-III Clinical Database Demo, which is made available under the ODbL."

SAMPLE_RESOURCE = "resources/desynpuf_sample1.csv.gz"
SAMPLE_PATIENTS = 3268
DESYNPUF_NOTICE = ("Data: an extract of the CMS 2008-2010 Data Entrepreneurs' Synthetic Public Use File (DE-SynPUF), "
                   "sample 1: synthetic US Government public-use data, for software development, not for inference; "
                   "do not attempt to identify individuals (see model/resources/DESYNPUF_NOTICE.txt).")


class DemoDataUnavailable(RuntimeError):
    """The demo data could not be fetched (offline, or the server answered wrongly)."""


def shipped_sample() -> Path:
    """The DE-SynPUF extract inside the installed package (a plain file: the loaders read it as is)."""
    path = Path(str(resources.files("promptehr.model").joinpath(SAMPLE_RESOURCE)))
    if not path.is_file():
        raise DemoDataUnavailable(f"{path}: the shipped demo sample is missing (a broken install?); "
                                  "reinstall promptehr or pass --data PATH")
    return path


def default_cache_dir() -> Path:

    return Path(os.environ.get("PROMPTEHR_CACHE", user_cache_dir("promptehr"))) / "mimiciii-demo-1.4"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_cached(folder: Path) -> bool:
    return all((folder / name).is_file() and _sha256(folder / name) == digest for name, digest in FILES.items())


def fetch_mimic3_demo(cache_dir: Path | None = None, base_url: str | None = None, timeout: float = 30.0) -> Path:
    """Return a folder holding the demo tables, downloading what is missing. Raises DemoDataUnavailable."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    if _is_cached(folder):
        return folder
    base = (base_url or os.environ.get("PROMPTEHR_DEMO_DATA_URL") or DEFAULT_URL).rstrip("/") + "/"
    folder.mkdir(parents=True, exist_ok=True)
    for name, digest in FILES.items():
        target = folder / name
        if target.is_file() and _sha256(target) == digest:
            continue
        url = base + name
        # Download beside the target and rename, so an interrupted fetch never leaves a half file.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
            if _sha256(Path(tmp)) != digest:
                raise DemoDataUnavailable(f"{url}: downloaded file does not match its published SHA-256")
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise DemoDataUnavailable(
                f"could not download the MIMIC-III demo from {url} ({reason}); "
                "offline? leave out --data for the shipped DE-SynPUF sample, or pass --data PATH for a local data folder"
            ) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return folder
