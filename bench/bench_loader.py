"""Loader benchmark at full MIMIC-III scale, and on a mixed-version MIMIC-IV folder (run by hand, not a test).

    .venv/bin/python bench/bench_loader.py [--case all|mimic3|mimic4] [--copies 370] [--copies4 145] [--repeat 5] [--keep DIR]

mimic3: a MIMIC-III-shaped folder, the demo replicated with fresh subject and admission ids until
DIAGNOSES_ICD has >= 650,000 rows (full MIMIC-III: 651,047), written as full MIMIC-III is: upper-case
headers, strings quoted. mimic4: the MIMIC-IV demo's hosp/ tables replicated the same way (145 x
4,506 = 653,370 diagnosis rows, ICD-9 and ICD-10 about half each; full MIMIC-IV has 4.76 M, about
--copies4 1056), gzipped as MIMIC-IV ships them. Each folder is loaded `repeat` times in a fresh
process (so that peak RSS is the loader's, not the builder's); prints one JSON object per case: rows,
median seconds, rows/s, peak RSS. The issue's floor is 100,000 rows/s.
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
DATA = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data"))
DEMO = DATA / "mimic3-demo"
DEMO4 = DATA / "mimic4-demo" / "hosp"


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


def build_mimic4(folder: Path, copies: int) -> int:
    """Write hosp/patients, admissions, diagnoses_icd (.csv.gz) with `copies` copies of the MIMIC-IV demo."""
    import pandas as pd

    hosp = folder / "hosp"
    hosp.mkdir(parents=True, exist_ok=True)
    n_diag = 0
    for name in ("patients", "admissions", "diagnoses_icd"):
        df = pd.read_csv(DEMO4 / f"{name}.csv.gz", dtype=str, keep_default_na=False)
        parts = []
        for k in range(copies):
            part = df.copy()
            for col in ("subject_id", "hadm_id"):  # demo ids have 8 digits: offsets of 10^8 keep copies apart
                if col in part:
                    part[col] = (part[col].astype("int64") + k * 100_000_000).astype(str)
            parts.append(part)
        out = pd.concat(parts, ignore_index=True)
        out.to_csv(hosp / f"{name}.csv.gz", index=False, compression={"method": "gzip", "compresslevel": 1})
        if name == "diagnoses_icd":
            n_diag = len(out)
    return n_diag


def measure(folder: Path, repeat: int, fmt: str = "mimic3") -> dict:
    """Runs in its own process: load `repeat` times, report median time and peak RSS."""
    from promptehr.model.data import dataset_stats, load_patients

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        patients = load_patients(folder, format=fmt)
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
        "codes_by_system": stats["codes_by_system"],
    }


def run_case(case: str, copies: int, repeat: int, keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep / case if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        rows = (build if case == "mimic3" else build_mimic4)(folder, copies)
        build_s = time.perf_counter() - t
        child = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--measure-format", case,
                                "--repeat", str(repeat)], capture_output=True, text=True, check=True)
        result = json.loads(child.stdout)
    return {"rows": rows, "copies": copies, "build_seconds": round(build_s, 1), "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2), **result,
            "rows_per_second": round(rows / result["seconds_median"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=("all", "mimic3", "mimic4"), default="all")
    ap.add_argument("--copies", type=int, default=370, help="MIMIC-III demo copies (370 x 1,761 = 651,570 rows)")
    ap.add_argument("--copies4", type=int, default=145, help="MIMIC-IV demo copies (145 x 4,506 = 653,370 rows)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="build into DIR/<case> and keep it")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--measure-format", default="mimic3", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.repeat, args.measure_format)))
        return
    cases = ("mimic3", "mimic4") if args.case == "all" else (args.case,)
    copies = {"mimic3": args.copies, "mimic4": args.copies4}
    print(json.dumps({case: run_case(case, copies[case], args.repeat, args.keep) for case in cases}, indent=2))


if __name__ == "__main__":
    main()
