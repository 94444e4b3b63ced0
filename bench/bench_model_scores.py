"""Model scores of the evaluation report (held-out perplexity + reconstruction) on the DE-SynPUF holdout.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_model_scores.py --model /tmp/i11/model-icd9 --runs 3

Loads DE-SynPUF samples 1-6, splits them with split seed 0 (1,990 holdout patients), loads the scorer
once and times model_scores.model_section (what build_report runs) `--runs` times; prints one JSON
line with every run's seconds, their median, and the scores of the last run. Target: under 60 s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from promptehr.model.data import load_patients
from promptehr.model.evaluation.model_scores import model_section
from promptehr.model.evaluation.scorer import load_scorer
from promptehr.model.split import split_patients

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "desynpuf-sample"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a checkpoint directory (a small-preset DE-SynPUF model)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as promptehr evaluate)")
    ap.add_argument("--patients", type=int, default=None, help="score at most this many holdout patients (default all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, _, holdout = split_patients(load_patients([args.data]), 0)
    scorer = load_scorer(args.model, "cpu")
    seconds, out = [], None
    for _ in range(args.runs):
        start = time.perf_counter()
        out = model_section(scorer, holdout, args.patients)
        seconds.append(round(time.perf_counter() - start, 2))
    print(json.dumps({"holdout": len(holdout), "threads": args.threads, "seconds": seconds,
                      "median_s": statistics.median(seconds), "scores": out}))


if __name__ == "__main__":
    main()
