"""`promptehr data stats|convert`: load a data set and print its figures, or map it to one code system.

    promptehr data stats PATH... [--format F] [--code-system icd9|icd10]
    promptehr data convert PATH... --to icd10|icd9 --out FILE [--format F] [--code-system S]

stats prints one JSON object (with the distinct codes of each system under codes_by_system). convert
writes a long-format file (.csv, .csv.gz or .parquet; a code_system column on every row) through the
CMS GEMs and prints how many codes mapped exactly, approximately or not at all (those are dropped).
Bad input raises DataError, which cli/main.py prints as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

FORMATS = ("mimic3", "mimic4", "desynpuf", "long")  # kept here so --help does not import pandas
SYSTEMS = ("icd9", "icd10")  # model.codes.SYSTEMS, spelled out for the same reason
CODE_SYSTEM_HELP = ("the code system of codes the data leaves open (a long file without a code_system column); "
                    "for data that names it per row (MIMIC-IV), keep only this system's rows")


def stats(args: argparse.Namespace) -> int:
    from promptehr.model.data import dataset_stats, load_patients

    patients = load_patients(args.paths, format=args.format, code_system=args.code_system)
    print(json.dumps(dataset_stats(patients), indent=2))
    return 0


def convert(args: argparse.Namespace) -> int:
    from promptehr.model.data import load_patients
    from promptehr.model.data.convert import convert_patients, write_long

    patients = load_patients(args.paths, format=args.format, code_system=args.code_system)
    converted, summary = convert_patients(patients, args.to)
    write_long(converted, args.out)
    print(f"promptehr data convert: {summary.line()} -> {args.out}", file=sys.stderr)
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect input data sets, or map them to one code system")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = sub.add_parser("stats", help="load a data set and print its statistics as JSON")
    p.add_argument("paths", nargs="+", metavar="PATH", help="data folder(s) or long-format file(s)")
    p.add_argument("--format", choices=FORMATS, default=None, help="skip detection and read PATH as this format")
    p.add_argument("--code-system", choices=SYSTEMS, default=None, help=CODE_SYSTEM_HELP)
    p.set_defaults(func=stats)
    c = sub.add_parser("convert", help="map a data set to one code system (CMS GEMs) and write it as a long-format file")
    c.add_argument("paths", nargs="+", metavar="PATH", help="data folder(s) or long-format file(s)")
    c.add_argument("--to", required=True, choices=SYSTEMS, help="the code system to write")
    c.add_argument("--out", required=True, metavar="FILE", help="long-format file to write: .csv, .csv.gz or .parquet")
    c.add_argument("--format", choices=FORMATS, default=None, help="skip detection and read PATH as this format")
    c.add_argument("--code-system", choices=SYSTEMS, default=None, help=CODE_SYSTEM_HELP)
    c.set_defaults(func=convert)
