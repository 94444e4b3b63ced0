"""`promptehr demo`: train a small model, generate a cohort and write its report, in one command.

    promptehr demo [--data PATH... | --data mimic3-demo] [--minutes M] [--out DIR]

Without --data it trains on the CMS DE-SynPUF extract shipped in the package (3,268 patients of sample 1;
model/resources/DESYNPUF_NOTICE.txt), offline. `--data mimic3-demo` uses the open MIMIC-III Clinical
Database Demo instead, downloaded once from PhysioNet into a cache folder (model/data/demo_data.py);
write ./mimic3-demo for a local folder of that name. --minutes is the training time budget: no epoch
starts that would end past it at the last epoch's pace (the first always runs). The output folder holds
the checkpoint (model/), the cohort (cohort.jsonl) and the report (report.json, report.html). The cohort
has the training split's age and sex mix, so the report compares like with like. Prints each measure's
value, limit and verdict, the notice of the data's terms, then the path of the HTML report.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUT = "promptehr-demo"
DEFAULT_N = 1000
DEFAULT_MINUTES = 4.0  # training budget: with loading, 1,000 patients and the report, under 5 minutes on 2 cores
SHIPPED, MIMIC3_DEMO = "desynpuf-sample", "mimic3-demo"  # the data sets --data may name


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train, generate and evaluate in one go (default data: a shipped DE-SynPUF sample)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=None, metavar="PATH",
                   help=f"data folder(s) or file(s), or {MIMIC3_DEMO} (downloaded from PhysioNet into the cache once) "
                        f"(default: {SHIPPED}, the DE-SynPUF extract shipped in the package)")
    p.add_argument("--format", default=None, help="mimic3 | mimic4 | desynpuf | long (default: detected)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--preset", choices=("tiny", "small", "base"), default="small", help="model size")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, metavar="M",
                   help=f"training time budget in minutes (default {DEFAULT_MINUTES:g})")
    p.add_argument("--n", type=int, default=DEFAULT_N, metavar="N", help=f"synthetic patients (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=0, help="seed of training, the cohort and the report (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=run)


def demo_data(paths: list[str] | None) -> tuple[list[str], str | None]:
    """The data paths, and the notice the data's licence asks for (None for the user's own data)."""
    from promptehr.cli.main import UsageError
    from promptehr.model.data import demo_data as dd

    named = paths[0] if paths and len(paths) == 1 and paths[0] in (SHIPPED, MIMIC3_DEMO) else None
    if paths and named is None:
        return paths, None
    try:
        if named == MIMIC3_DEMO:
            return [str(dd.fetch_mimic3_demo())], dd.NOTICE
        return [str(dd.shipped_sample())], dd.DESYNPUF_NOTICE
    except dd.DemoDataUnavailable as e:
        raise UsageError(str(e)) from None


def cohort_body(train: list) -> dict:
    """A cohort spec body with the age histogram (decades) and the female share of `train`: the learned
    population the model's checkpoint keeps (model/generation/population.py)."""
    from promptehr.model.generation.population import population_of

    return population_of(train).spec()


def summary_lines(report) -> list[str]:
    """The verdict, warnings, generator and seeds, then one row per measure (section, name, synthetic value,
    threshold, verdict, real sample, its verdict), each section's verdict and the model's scores
    (model/evaluation/text.py)."""
    from promptehr.model.evaluation.text import summary_lines as lines

    return lines(report)


def checked_out(args: argparse.Namespace) -> Path:
    """The output folder, once every number in `args` is checked (before any data is read)."""
    from promptehr.cli.main import UsageError

    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if not 0 < args.minutes < float("inf"):
        raise UsageError(f"--minutes must be a number of minutes above 0, got {args.minutes:g}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    return out


def run(args: argparse.Namespace) -> int:
    from promptehr.cli.evaluate import load_model_scorer, write_report
    from promptehr.cli.generate import generate_with_progress, load_sampler, set_threads
    from promptehr.cli.main import UsageError
    from promptehr.cli.train import result_line, train_with_progress

    out = checked_out(args)
    paths, notice = demo_data(args.data)

    from promptehr.model.data import load_patients
    from promptehr.model.data.export import write_export
    from promptehr.model.evaluation import EvaluationConfig, build_report
    from promptehr.model.generation.cohort import CohortSpec
    from promptehr.model.generation.options import DEFAULT_BATCH_SIZE
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
          f"holdout {len(holdout)}; preset {args.preset}, {cfg.epochs} epochs at most, {args.minutes:g} min training budget",
          file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    model_dir, cohort_path, json_path, html_path = out / "model", out / "cohort.jsonl", out / "report.json", out / "report.html"
    result = train_with_progress(train_set, val_set, cfg, model_dir, device=args.device, time_budget=args.minutes * 60,
                                 holdout=holdout, source={"format": args.format or "detected", "paths": paths})
    print(result_line(result), file=sys.stderr)

    body = cohort_body(train_set)
    spec = CohortSpec.from_dict(body)
    sampler, device = load_sampler(model_dir, args.device)
    synthetic, seconds = generate_with_progress(sampler, spec, args.n, args.seed, batch_size=DEFAULT_BATCH_SIZE, device=device)
    write_export(synthetic, cohort_path, "jsonl")
    print(f"{len(synthetic)} patients in {seconds:.1f} s -> {cohort_path}", file=sys.stderr)

    print("promptehr demo: evaluating", file=sys.stderr)
    generator = {"command": "promptehr demo", "data": paths, "preset": args.preset, "mode": cfg.mode, "minutes": args.minutes,
                 "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "spec": spec.to_dict()}
    report = build_report(synthetic, train_set, holdout, config=EvaluationConfig(seed=args.seed),
                          model_scorer=load_model_scorer(str(model_dir), str(device)), generator=generator,
                          seeds={"cohort": args.seed, "n_patients": args.n, "training": args.seed}, split_seed=split_seed,
                          model_card=result.card)
    write_report(report, json_path, html_path)

    print("\n".join(summary_lines(report)))
    if notice:
        print(notice)
    print(f"report: {html_path.resolve()}")
    return 0
