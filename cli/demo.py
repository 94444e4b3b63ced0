"""`promptehr demo`: train a small model, generate a cohort and write its report, in one command.

    promptehr demo [--data PATH...] [--out DIR]

Without --data it uses the open MIMIC-III Clinical Database Demo, downloaded once from PhysioNet into
a cache folder (model/demo_data.py). The output folder holds the checkpoint (model/), the cohort
(cohort.jsonl) and the report (report.json, report.html). The cohort has the training split's age
and sex mix, so the report compares like with like. Prints each measure's value, limit and verdict,
then the path of the HTML report.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUT = "promptehr-demo"
DEFAULT_N = 1000
# Decade bins for the cohort's age histogram (the last one holds 90, the cap).
AGE_EDGES = (0, 10, 20, 30, 40, 50, 60, 70, 80, 91)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train, generate and evaluate in one go (default data: the MIMIC-III demo)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=None, metavar="PATH",
                   help="data folder(s) or file(s) (default: the MIMIC-III demo, downloaded into the cache once)")
    p.add_argument("--format", default=None, help="mimic3 | mimic4 | desynpuf | long (default: detected)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--preset", choices=("tiny", "small", "base"), default="small", help="model size")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--n", type=int, default=DEFAULT_N, metavar="N", help=f"synthetic patients (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=0, help="seed of training, the cohort and the report (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=run)


def demo_data(paths: list[str] | None) -> tuple[list[str], str | None]:
    """The data paths, and the notice the data's licence asks for (None for the user's own data)."""
    if paths:
        return paths, None
    from promptehr.cli.main import UsageError
    from promptehr.model.data.demo_data import NOTICE, DemoDataUnavailable, fetch_mimic3_demo

    try:
        return [str(fetch_mimic3_demo())], NOTICE
    except DemoDataUnavailable as e:
        raise UsageError(str(e)) from None


def cohort_body(train: list) -> dict:
    """A cohort spec body with the age histogram (decades) and the female share of `train`."""
    import numpy as np

    ages = np.clip(np.array([p.age for p in train], float), 0, 90)
    weights, _ = np.histogram(ages, bins=AGE_EDGES)
    female = sum(p.sex == "F" for p in train) / len(train)
    return {"age": {"distribution": "histogram", "bins": list(AGE_EDGES), "weights": [int(w) for w in weights]},
            "sex": {"female": round(female, 4)}}


def summary_lines(report) -> list[str]:
    """One row per measure (section, name, value, limit, verdict), then the verdict of each section."""
    def num(x) -> str:
        return "-" if x is None else f"{x:.4g}"

    def verdict(ok) -> str:
        return "n/a" if ok is None else ("pass" if ok else "FAIL")

    rows = [("section", "measure", "value", "limit", "pass", "limit passes")]
    unjudgeable = 0
    for section in ("fidelity", "validity", "privacy", "utility"):
        for name, m in getattr(report, section).items():
            rows.append((section, name, num(m.value), num(m.limit), verdict(m.passed), verdict(m.limit_pass)))
            unjudgeable += m.limit_pass is False
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("sections: " + ", ".join(f"{s} {verdict(ok)}" for s, ok in report.passed.items()))
    if unjudgeable:
        # The limit is real held-out data scored the same way: where even it fails, the data set is too
        # small for that threshold, and the synthetic value is best read against the limit.
        lines.append(f"{unjudgeable} measure(s) fail even for the real holdout (limit passes FAIL): too little data to "
                     "judge them by their threshold; compare value with limit, or pass --data with more patients")
    if report.model is not None:
        ppl = report.model.perplexity
        lines.append(f"model: held-out perplexity {num(ppl.get('all'))} (unigram baseline {num(ppl.get('baseline_all'))}), "
                     f"reconstruction Jaccard {num(report.model.reconstruction_jaccard)} "
                     f"over {report.model.reconstruction_patients} patients")
    return lines


def run(args: argparse.Namespace) -> int:
    from promptehr.cli.evaluate import load_model_scorer, write_report
    from promptehr.cli.generate import generate_with_progress, load_sampler, set_threads
    from promptehr.cli.main import UsageError
    from promptehr.cli.train import result_line, train_with_progress

    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    paths, notice = demo_data(args.data)

    from promptehr.model.data import load_patients
    from promptehr.model.data.export import write_export
    from promptehr.model.evaluation import EvaluationConfig, build_report
    from promptehr.model.generation.cohort import CohortSpec
    from promptehr.model.nn.config import train_config
    from promptehr.model.split import split_patients

    split_seed = 0
    patients = load_patients(paths, format=args.format)
    train_set, val_set, holdout = split_patients(patients, split_seed)
    if not (train_set and val_set and holdout):
        raise UsageError(f"the data split into {len(train_set)} train, {len(val_set)} validation and {len(holdout)} "
                         "holdout patients: the demo needs all three (give it more patients)")
    set_threads(args.threads)
    cfg = train_config(args.preset, epochs=args.epochs, seed=args.seed)
    print(f"promptehr demo: {len(patients)} patients -> train {len(train_set)}, validation {len(val_set)}, "
          f"holdout {len(holdout)}; preset {args.preset}, {cfg.epochs} epochs at most", file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    model_dir, cohort_path, json_path, html_path = out / "model", out / "cohort.jsonl", out / "report.json", out / "report.html"
    result = train_with_progress(train_set, val_set, cfg, model_dir, device=args.device)
    print(result_line(result), file=sys.stderr)

    body = cohort_body(train_set)
    spec = CohortSpec.from_dict(body)
    sampler, device = load_sampler(model_dir, args.device)
    synthetic, seconds = generate_with_progress(sampler, spec, args.n, args.seed, batch_size=256, device=device)
    write_export(synthetic, cohort_path, "jsonl")
    print(f"{len(synthetic)} patients in {seconds:.1f} s -> {cohort_path}", file=sys.stderr)

    print("promptehr demo: evaluating", file=sys.stderr)
    generator = {"command": "promptehr demo", "data": paths, "preset": args.preset, "mode": cfg.mode,
                 "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "spec": spec.to_dict()}
    report = build_report(synthetic, train_set, holdout, config=EvaluationConfig(seed=args.seed),
                          model_scorer=load_model_scorer(str(model_dir), str(device)), generator=generator,
                          seeds={"cohort": args.seed, "n_patients": args.n, "training": args.seed}, split_seed=split_seed)
    write_report(report, json_path, html_path)

    print("\n".join(summary_lines(report)))
    if notice:
        print(notice)
    print(f"report: {html_path.resolve()}")
    return 0
