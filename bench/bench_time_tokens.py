"""What the time tokens cost at generation: patients/s of a model that learned time against the same
model size trained without it (`promptehr train ... --no-time`), same run, rounds alternating the two;
and both against the settings before issue 14 (`previous`: the model without time at top_p 0.95 and
no stop bias, the defaults the generation figures in the README were measured at).

    OMP_NUM_THREADS=1 python bench/bench_time_tokens.py --with-time DIR --without-time DIR [--n 2000] [--repeats 5]

Each model generates the cohort `promptehr generate` gives by default (its learned population and
calibrated stop_bias), `--n` patients from seed 1, batch 256. A record with time has two more tokens
per visit (a stay, and a gap before each later visit), so besides patients/s the bench reports
decoder tokens per patient and tokens/s: the first says what a user waits, the second whether a step
got slower. Each round's ratio compares the two measured in that round; medians over rounds are
printed as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from promptehr.model.generation.cohort import CohortSpec, _prepare, demographics
from promptehr.model.generation.population import fill_demographics, read_population
from promptehr.model.generation.streams import row_key
from promptehr.model.nn.checkpoint import load_checkpoint


PREVIOUS = {"top_p": 0.95, "stop_bias": 0.0}  # the sampling defaults before issue 14


def prepared(directory: str, n: int, seed: int, sampling: dict | None = None):
    bundle = load_checkpoint(directory, "cpu")
    body = {"sampling": sampling} if sampling else {}
    spec = CohortSpec.from_dict(fill_demographics(body, read_population(directory)).body)
    spec, sampler, forced, limits, _ = _prepare(bundle, spec, n, 0, n, 256, "cpu", None)
    demo = [demographics(spec, seed, i) for i in range(n)]
    inputs = ([a for a, _ in demo], [s for _, s in demo], [row_key(seed, i) for i in range(n)])
    return sampler, spec, forced, limits, inputs


def one_round(sampler, spec, forced, limits, inputs, n: int) -> dict:
    ages, sexes, keys = inputs
    t = time.perf_counter()
    seqs = sampler.generate_many(ages, sexes, keys, spec.sampling, forced=[forced] * n, limits=limits, batch_size=256)
    wall = time.perf_counter() - t
    tokens = sum(len(s) for s in seqs)
    visits = sum(len(sampler.visits_of(s)) for s in seqs)
    return {"patients_per_s": n / wall, "tokens_per_s": tokens / wall, "tokens_per_patient": tokens / n,
            "visits_per_patient": visits / n, "seconds": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--with-time", required=True, help="checkpoint trained with time (its vocab.json has \"time\")")
    p.add_argument("--without-time", required=True, help="the same preset trained with --no-time")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = {"time": prepared(args.with_time, args.n, args.seed), "no_time": prepared(args.without_time, args.n, args.seed),
              "previous": prepared(args.without_time, args.n, args.seed, PREVIOUS)}
    if not models["time"][0].layout.gaps or models["no_time"][0].layout.gaps:
        raise SystemExit("--with-time must have time tokens and --without-time none")
    rounds = []
    for r in range(args.repeats):
        order = ("time", "no_time", "previous") if r % 2 == 0 else ("previous", "no_time", "time")
        got = {name: one_round(*models[name], args.n) for name in order}
        for a, b in (("time", "no_time"), ("time", "previous"), ("no_time", "previous")):
            for k in ("patients_per_s", "tokens_per_s"):
                got[f"{a}_vs_{b}_{k}"] = got[a][k] / got[b][k]
        rounds.append(got)

    def median(path):
        vals = [r[path[0]] if len(path) == 1 else r[path[0]][path[1]] for r in rounds]
        return round(statistics.median(vals), 4)

    keys = ("patients_per_s", "tokens_per_s", "tokens_per_patient", "visits_per_patient", "seconds")
    print(json.dumps({"n": args.n, "repeats": args.repeats, "threads": args.threads,
                      **{m: {k: median((m, k)) for k in keys} for m in models},
                      **{k: median((k,)) for k in rounds[0] if "_vs_" in k}}, indent=2))


if __name__ == "__main__":
    main()
