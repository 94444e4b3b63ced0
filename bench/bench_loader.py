"""Loader benchmark at full MIMIC-III scale (run by hand, not a test).

    .venv/bin/python bench/bench_loader.py [--copies 370] [--repeat 5] [--keep DIR]

Builds a MIMIC-III-shaped folder by replicating the demo with fresh subject and admission ids until
DIAGNOSES_ICD has >= 650,000 rows (full MIMIC-III: 651,047), written as full MIMIC-III is: upper-case
headers, strings quoted. Then loads it `repeat` times in a fresh process (so that peak RSS is the
loader's, not the builder's) and prints one JSON object: rows, median seconds, rows/s, peak RSS.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data")) / "mimic3-demo"


def build(folder: Path, copies: int) -> int:
    """Write PATIENTS, ADMISSIONS, DIAGNOSES_ICD with `copies` copies of the demo; returns diagnosis rows."""
    import pandas as pd

    tables = {t: pd.read_csv(DEMO / f"{t}.csv", dtype=str, keep_default_na=False) for t in ("PATIENTS", "ADMISSIONS", "DIAGNOSES_ICD")}
    ints = {"row_id", "subject_id", "hadm_id", "seq_num"}  # numbers unquoted, as in full MIMIC-III
    n_diag = 0
    for name, df in tables.items():
        parts = []
        for k in range(copies):
            part = df.copy()
            # Offsets larger than any demo id keep the ids of every copy distinct.
            for col, step in (("row_id", 10_000_000), ("subject_id", 100_000), ("hadm_id", 1_000_000)):
                if col in part:
                    part[col] = part[col].astype("int64") + k * step
            parts.append(part)
        out = pd.concat(parts, ignore_index=True)
        for c in out.columns:
            if c in ints:
                out[c] = pd.to_numeric(out[c]).astype("Int64")
        out.columns = [c.upper() for c in out.columns]
        out.to_csv(folder / f"{name}.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)
        if name == "DIAGNOSES_ICD":
            n_diag = len(out)
    return n_diag


def measure(folder: Path, repeat: int) -> dict:
    """Runs in its own process: load `repeat` times, report median time and peak RSS."""
    from model.data import dataset_stats, load_patients

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        patients = load_patients(folder, format="mimic3")
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # less sensitive than wall time to other users of the machine
        stats = dataset_stats(patients)
        del patients
    t = time.perf_counter()
    load_patients(folder)  # once more with format detection, to show it costs nothing much
    detect_s = time.perf_counter() - t
    return {
        "seconds_all": [round(s, 3) for s in seconds],
        "seconds_median": round(statistics.median(seconds), 3),
        "cpu_seconds_median": round(statistics.median(cpu), 3),
        "seconds_with_detection": round(detect_s, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mib": round(rss_before / 1024, 1),
        "patients": stats["patients"], "visits": stats["visits"], "codes": stats["codes"], "diagnosis_rows": stats["diagnosis_rows"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=370, help="demo copies (370 x 1,761 = 651,570 rows)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="build into this folder and keep it")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.repeat)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        rows = build(folder, args.copies)
        build_s = time.perf_counter() - t
        child = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--repeat", str(args.repeat)],
                               capture_output=True, text=True, check=True)
        result = json.loads(child.stdout)
    result = {"rows": rows, "copies": args.copies, "build_seconds": round(build_s, 1), "cpus": os.cpu_count(),
              "load_average_1m": round(os.getloadavg()[0], 2), **result,
              "rows_per_second": round(rows / result["seconds_median"])}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
