"""A report made by the service itself: one cohort of an existing checkpoint, evaluated by a real worker.

The stack of tests/support/stack.py: a throwaway PostgreSQL database, a private Redis queue, the API
under uvicorn and one Celery worker (prefork, OMP_NUM_THREADS=1, the CPU), all subprocesses. Steps:

1. POST /datasets registers `--data` (a path under the shared data, PROMPTEHR_SHARED_DATA) and the
   checkpoint `--model DIR` is registered on it (its holdout: the split of `--split-seed`, the CLI's 0);
2. POST /cohorts with `--n` and `--seed` only: no age or sex (the model's learned population, as the
   CLI's default) and the default sampling;
3. the cohort's last shard queues its evaluation; when the cohort has its report, GET /reports/{id}
   (JSON, to --out) and GET /reports/{id}.html (to --html).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/service_report.py --model DIR --data desynpuf-sample \\
        --format desynpuf --n 4000 --seed 1 --out FILE.json [--html FILE.html] [--keep DIR]

Prints a JSON summary: the report's model scores (perplexities, standard and median of medians, masked
codes and next visit; reconstruction Jaccard), how many holdout patients they were scored on, and wall
times. Exits 1 when the cohort fails or the report has no model scores (the reason is printed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from promptehr.service import store
from promptehr.service.settings import Settings

from tests.support.databases import throwaway_database
from tests.support.stack import Stack, get_model, home_folder

PERPLEXITIES = ("masked", "next_visit", "masked_median_of_medians", "next_visit_median_of_medians",
                "baseline_masked", "baseline_next_visit")


def model_scores(content: dict, report_id: str) -> dict:
    """The report's model section; SystemExit naming why when it is missing or scored nothing."""
    model = content.get("model")
    if model and model.get("perplexity"):
        return model
    # the worker reports without model scores when scoring fails, and writes why in the generator
    reason = ((content.get("generator") or {}).get("model_scores") or "").removeprefix("unavailable: ") \
        or (model or {}).get("note") \
        or "the report has no model section"
    raise SystemExit(f"report {report_id}: model scores unavailable: {reason}")


def timings(stack: Stack, cohort_id: str, report_id: str) -> dict:
    """Generation (cohort created -> its last shard finished) and evaluation (report started -> finished),
    from the database's timestamps."""
    with stack.sessions() as s:
        cohort = store.get_cohort(s, cohort_id)
        report = store.get_report(s, report_id, with_html=False)
        last_shard = s.scalar(sa.text("SELECT max(finished_at) FROM cohort_shards WHERE cohort_id = :c"),
                              {"c": cohort_id})
        return {"generation_s": round((last_shard - cohort.created_at).total_seconds(), 2),
                "evaluation_s": round((report.finished_at - report.started_at).total_seconds(), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="an existing checkpoint directory")
    p.add_argument("--data", required=True, help="the model's dataset: a path under the shared data")
    p.add_argument("--format", default="desynpuf")
    p.add_argument("--split-seed", type=int, default=0, help="the split the model was trained on (default: 0)")
    p.add_argument("--n", type=int, default=4000, help="patients in the cohort")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shard-size", type=int, default=None, help="default: the service's cohort_shard_size")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the cohort and its report")
    p.add_argument("--out", type=Path, required=True, help="the report's JSON, as GET /reports/{id} serves it")
    p.add_argument("--html", type=Path, help="the report's HTML page, as GET /reports/{id}.html serves it")
    p.add_argument("--keep", type=Path, help="a folder to keep the API and worker logs in (default: a temporary one)")
    args = p.parse_args()
    shard_size = args.shard_size or Settings().cohort_shard_size
    t0 = time.perf_counter()
    with home_folder(args.keep, "service-report-") as home, throwaway_database() as db:
        stack = Stack(home, db)
        try:
            api = stack.use_shard_size(shard_size)
            stack.scale_to(1)
            started_s = time.perf_counter() - t0
            model_id = get_model(stack, data=args.data, data_format=args.format, shard_size=shard_size,
                                 model=args.model, split_seed=args.split_seed, name="service-report")
            cohort = api.post("/cohorts", {"model_id": model_id, "n_patients": args.n, "seed": args.seed}, 202)
            body, _ = api.poll(f"/cohorts/{cohort['id']}", timeout=args.timeout, interval=1.0)
            if body["status"] != "succeeded" or not body.get("report_id"):
                raise SystemExit(f"cohort {cohort['id']} {body['status']} without a report: {body.get('error')}"
                                 f" (logs in {home}; --keep keeps them)")
            report_id = body["report_id"]
            content = api.get(f"/reports/{report_id}").json()
            args.out.write_text(json.dumps(content, indent=1) + "\n")
            if args.html:
                args.html.write_text(api.get(f"/reports/{report_id}.html").text)
            walls = timings(stack, cohort["id"], report_id)
        finally:
            stack.close()
    model = model_scores(content, report_id)
    ppl = model["perplexity"]
    print(json.dumps({
        "report_id": report_id, "cohort_id": cohort["id"], "n_patients": args.n, "seed": args.seed,
        # what the worker generated from: the learned population ("learned from the training population"), and
        # the sampling it resolved (the model's calibrated stop bias)
        "population": body["spec"].get("demographics"), "sampling": body["spec"].get("sampling"),
        "perplexity": {k: ppl.get(k) for k in PERPLEXITIES},
        "reconstruction_jaccard": model["reconstruction_jaccard"],
        "reconstruction_patients": model["reconstruction_patients"],
        "holdout_patients_scored": model["patients"], "holdout_patients": model["holdout_patients"],
        "model_patients_cap": content["evaluation"].get("model_patients"), "note": model.get("note"),
        "verdict": content.get("verdict"),
        "wall_s": {"stack_start": round(started_s, 2), **walls,
                   "report_model_scores": content.get("seconds", {}).get("model"),
                   "total": round(time.perf_counter() - t0, 2)},
        "out": str(args.out), "html": str(args.html) if args.html else None,
    }, indent=1))


if __name__ == "__main__":
    main()
