"""The utility task's figures by training size, on real data: TRTR fit on seeded train samples of n
patients, and the TSTR of a generator that shuffles codes across patients (lengths kept: the tests'
utility.shuffled) at the same sizes and on the whole train. docs/evaluation.md (utility) quotes its output.

    python scripts/utility_by_size.py [--data ../shared/data/desynpuf-sample] [--sizes 4000 10000] [--draws 3]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from promptehr.model.data import load_patients
from promptehr.model.evaluation import utility
from promptehr.model.evaluation.counts import build_index, encode
from promptehr.model.evaluation.phenotypes import group_matrix
from promptehr.model.split import split_patients


def scores(train, holdout, synth) -> dict:
    index = build_index(train, holdout, synth)
    groups, names = group_matrix(list(index))
    return utility.utility_measures(*(encode(c, index) for c in (train, holdout, synth)), groups, names)


def main() -> None:
    shared = Path(os.environ.get("PROMPTEHR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(shared / "desynpuf-sample"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 10000])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--split-seed", type=int, default=0)
    args = ap.parse_args()
    train, _, holdout = split_patients(load_patients(args.data), args.split_seed)
    whole = scores(train, holdout, utility.shuffled(train, 3))
    print(f"whole train ({len(train):,}): TRTR {whole['trtr_auroc']:.4f}, shuffler TSTR {whole['tstr_auroc']:.4f}")
    for n in args.sizes:
        real, shuf = [], []
        for draw in range(args.draws):
            rows = np.sort(np.random.default_rng(draw).choice(len(train), n, replace=False))
            sample = [train[i] for i in rows]
            real.append(scores(train, holdout, sample)["tstr_auroc"])  # a real sample as the "cohort"
            shuf.append(scores(train, holdout, utility.shuffled(sample, 3))["tstr_auroc"])
        print(f"n={n:,}: real sample {np.mean(real):.4f} ({min(real):.4f}-{max(real):.4f}), "
              f"shuffler {np.mean(shuf):.4f} ({min(shuf):.4f}-{max(shuf):.4f}), {args.draws} draws")


if __name__ == "__main__":
    main()
