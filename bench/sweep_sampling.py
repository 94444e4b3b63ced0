"""Sampling-default sweep: generate a cohort per setting and score it against the holdout at equal size.

    OMP_NUM_THREADS=1 .venv/bin/python bench/sweep_sampling.py --model DIR --real ../shared/data/desynpuf-sample \
        --top-p 0.95 0.98 1.0 --temperature 1.0 --n 4000 --out sweep.json
        (--stop-bias B ...: instead of the model's calibrated bias; --frequency-mix M ...: model/generation/options.py)

Each setting runs `promptehr generate` (the training population's age/sex mix: no age flags) and
`promptehr evaluate` (no model scores: they do not depend on sampling), both as a user would. Prints a
markdown table of the fidelity measures issue 14 targets, each beside the holdout's limit, plus distinct
codes in a seeded sample of holdout size. The chosen default is recorded in docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASURES = ("unigram_r2", "cooccurrence_r2", "transition_r2", "js_divergence", "visits_per_patient_mean",
            "codes_per_visit_mean")


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "promptehr.cli", "-q", *args], check=True, stdout=subprocess.DEVNULL)


def measures(report: dict) -> dict:
    """{name: (value, limit)} of the fidelity section."""
    return {name: (m.get("value"), m.get("limit")) for name, m in report["fidelity"].items() if isinstance(m, dict)}


def distinct_at(cohort: Path, n: int, seed: int = 0) -> int:
    patients = [json.loads(line) for line in cohort.read_text().splitlines() if line.strip()]
    sample = random.Random(seed).sample(patients, min(n, len(patients)))
    return len({c for p in sample for v in p["visits"] for c in v})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--real", nargs="+", required=True)
    ap.add_argument("--top-p", type=float, nargs="+", default=[0.95])
    ap.add_argument("--temperature", type=float, nargs="+", default=[1.0])
    ap.add_argument("--stop-bias", type=float, nargs="+", default=[None], help="default: the model's calibrated bias")
    ap.add_argument("--frequency-mix", type=float, nargs="+", default=[None], help="default: the model's default")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--generate-args", default="", help="more `promptehr generate` flags, e.g. an explicit age mix for a checkpoint without a learned population")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for top_p, temp, bias, mix in itertools.product(a.top_p, a.temperature, a.stop_bias, a.frequency_mix):
            cohort, report = Path(tmp, "c.jsonl"), Path(tmp, "r.json")
            t0 = time.perf_counter()
            cli("generate", "--model", a.model, "--n", str(a.n), "--seed", str(a.seed), "--top-p", str(top_p),
                "--temperature", str(temp), *(["--stop-bias", str(bias)] if bias is not None else []),
                *(["--frequency-mix", str(mix)] if mix is not None else []), "--threads", "1", "--out", str(cohort), *shlex.split(a.generate_args))
            gen_s = time.perf_counter() - t0
            cli("evaluate", "--synthetic", str(cohort), "--real", *a.real, "--out", str(report))
            r = json.loads(report.read_text())
            holdout = r["data"]["holdout"]
            rows.append({"top_p": top_p, "temperature": temp, "stop_bias": "model" if bias is None else bias,
                         "frequency_mix": "model" if mix is None else mix, "generate_s": round(gen_s, 1), "measures": measures(r),
                         "distinct_equal_size": distinct_at(cohort, holdout["patients"]),
                         "holdout_distinct": holdout["distinct_codes"], "holdout_patients": holdout["patients"]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    names = list(MEASURES)
    print("| top_p | T | stop_bias | frequency_mix | " + " | ".join(names) + " | distinct at equal size |")
    print("|" + "---|" * (len(names) + 5))
    for row in rows:
        cells = []
        for n in names:
            v, lim = row["measures"].get(n, (None, None))
            cells.append("n/a" if v is None else f"{v:.3f} ({lim:.3f})" if lim is not None else f"{v:.3f}")
        share = row["distinct_equal_size"] / row["holdout_distinct"]
        print(f"| {row['top_p']} | {row['temperature']} | {row['stop_bias']} | {row['frequency_mix']} | " + " | ".join(cells)
              + f" | {row['distinct_equal_size']} of {row['holdout_distinct']} ({share:.0%}) |")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
