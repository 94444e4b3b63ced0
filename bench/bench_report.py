"""Benchmark: the whole evaluation report (JSON + HTML) at 20,000 synthetic vs 15,000 train, 2,000 holdout.

Real patients come from the DE-SynPUF samples (model.data.load_patients); the "synthetic" cohort is
real training patients resampled and perturbed (codes dropped and replaced by frequency, ages moved),
which has the size and sparsity of a generated cohort. Prints JSON: seconds per run (median of
--runs; report = build_report + render_html), CPU seconds, per-section seconds of the last run, and
the process's peak RSS (data, cohorts and report together).

    .venv/bin/python bench/bench_report.py [--data ../shared/data/desynpuf-sample] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptehr.model.evaluation import build_report
from promptehr.model.patient import Patient


def perturbed(train: list[Patient], n: int, seed: int) -> list[Patient]:
    """n records resampled from train; each code dropped w.p. 0.2 or swapped for a random train code w.p. 0.1."""
    rng = np.random.default_rng(seed)
    pool = [c for p in train for v in p.visits for c in v]
    out = []
    for i, j in enumerate(rng.integers(len(train), size=n)):
        src = train[j]
        visits = []
        for v in src.visits:
            u = rng.random(len(v))
            new = [c if x >= 0.3 else pool[rng.integers(len(pool))] for c, x in zip(v, u) if x >= 0.2 or x < 0.1]
            new = list(dict.fromkeys(new))
            if new:
                visits.append(new)
        if not visits:
            visits = [list(src.visits[0])]
        out.append(Patient(id=f"S{i}", age=float(np.clip(src.age + rng.integers(-3, 4), 0, 90)), sex=src.sex, visits=visits))
    return out


def cohorts(data: Path, n_train: int, n_holdout: int, n_synth: int, seed: int):
    from promptehr.model.data import load_patients

    real = [p for p in load_patients([data]) if p.visits]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real))
    if len(real) < n_train + n_holdout:
        raise SystemExit(f"{len(real)} patients with visits; need {n_train + n_holdout}")
    train = [real[i] for i in order[:n_train]]
    holdout = [real[i] for i in order[n_train:n_train + n_holdout]]
    return train, holdout, perturbed(train, n_synth, seed + 1)


def main(argv=None) -> int:
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "desynpuf-sample")
    ap.add_argument("--train", type=int, default=15000)
    ap.add_argument("--holdout", type=int, default=2000)
    ap.add_argument("--synthetic", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    train, holdout, synthetic = cohorts(args.data, args.train, args.holdout, args.synthetic, args.seed)
    load_s = time.perf_counter() - t0
    runs, html_s, cpu = [], [], []
    for _ in range(args.runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        report = build_report(synthetic, train, holdout)
        mid = time.perf_counter()
        from promptehr.model.evaluation.html import render_html
        page = render_html(report)
        runs.append(time.perf_counter() - start)
        html_s.append(time.perf_counter() - mid)
        cpu.append(time.process_time() - cpu_start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "patients": {"train": len(train), "holdout": len(holdout), "synthetic": len(synthetic)},
        "load_seconds": round(load_s, 2),
        "report_seconds_median": round(statistics.median(runs), 2),
        "report_seconds_runs": [round(r, 2) for r in runs],
        # CPU seconds of this process: wall time on the shared 2-core machine moves with others' load
        "report_cpu_seconds_median": round(statistics.median(cpu), 2),
        "html_seconds_median": round(statistics.median(html_s), 2),
        "html_bytes": len(page),
        "section_seconds_last_run": report.seconds,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "passed": report.passed,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
