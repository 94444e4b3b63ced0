"""Build model/resources/desynpuf_sample1.csv.gz, the data `promptehr demo` trains on by default (run once,
commit the result).

The shipped extract is every beneficiary of the shared DE-SynPUF sample 1 subset with a coded inpatient
claim (3,268 patients, 5,768 claims, 46,590 diagnosis rows), in the long format model/data/long_format.py
reads, so the demo needs no download and no ../shared at run time. Usage:

    .venv/bin/python scripts/build_demo_sample.py [--data $PROMPTEHR_SHARED_DATA] [--out model/resources/desynpuf_sample1.csv.gz]

Rows come from the project's own DE-SynPUF loader (model/data/desynpuf.py), so the extract loads back to
the very patients `load_patients(<data>/desynpuf-sample/1-sample-10000)` gives (tests/test_demo_offline.py
checks it): visit_id is CLM_ID, visit_time the claim's admission (else from) date, visit_end its
through date (CLM_THRU_DT: the length of stay the model learns), the codes in slot order,
age and sex on every row. The output is byte-for-byte reproducible (loader order, gzip mtime 0).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path("desynpuf-sample") / "1-sample-10000"
OUT = REPO / "model" / "resources" / "desynpuf_sample1.csv.gz"
COLUMNS = ["patient_id", "visit_id", "visit_time", "visit_end", "code", "code_system", "age", "sex"]


def build_bytes(data: Path) -> tuple[bytes, int]:
    """(the gzipped long CSV, its number of patients) for the DE-SynPUF sample 1 under `data`."""
    from promptehr.model.data import load_patients
    from promptehr.model.data.assemble import order_rows
    from promptehr.model.data.desynpuf import read_claims

    folder = data / SAMPLE
    patients = {p.id: p for p in load_patients(folder, format="desynpuf")}
    claims = sorted(folder.glob("*Inpatient_Claims*.csv"))
    rows = order_rows(read_claims(claims))  # the loader's own order: patient, date, claim, slot
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    dates = rows["time"].dt.strftime("%Y-%m-%d").tolist()
    ends = rows["end"].dt.strftime("%Y-%m-%d").fillna("").tolist()
    for pid, visit, date, end, code in zip(rows["patient_id"].tolist(), rows["visit_id"].tolist(), dates, ends,
                                           rows["code"].tolist()):
        p = patients[pid]
        writer.writerow([pid, visit, date, end, code, "icd9", f"{p.age:g}", p.sex])
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    return raw.getvalue(), len(patients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default, help="the shared data folder (default $PROMPTEHR_SHARED_DATA)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    blob, n = build_bytes(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"wrote {n} patients to {args.out} ({len(blob)} bytes)")


if __name__ == "__main__":
    main()
