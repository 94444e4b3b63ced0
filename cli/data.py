"""`promptehr data stats PATH... [--format F]`: load a data set and print its figures as one JSON object.

Bad input raises DataError, which cli/main.py prints as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import json

FORMATS = ("mimic3", "mimic4", "desynpuf", "long")  # kept here so --help does not import pandas


def stats(args: argparse.Namespace) -> int:
    from model.data import dataset_stats, load_patients

    patients = load_patients(args.paths, format=args.format)
    print(json.dumps(dataset_stats(patients), indent=2))
    return 0


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect input data sets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = sub.add_parser("stats", help="load a data set and print its statistics as JSON")
    p.add_argument("paths", nargs="+", metavar="PATH", help="data folder(s) or long-format file(s)")
    p.add_argument("--format", choices=FORMATS, default=None, help="skip detection and read PATH as this format")
    p.set_defaults(func=stats)
