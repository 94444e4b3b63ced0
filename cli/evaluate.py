"""`promptehr evaluate`: the cohort report (JSON, optionally HTML) of a synthetic cohort against real data.

    promptehr evaluate --synthetic cohort.jsonl --real DATA... [--format F] [--code-system S] [--model DIR]
                       [--split-seed 0] [--privacy-times] --out report.json [--html report.html]
                       [--fail-on fidelity,privacy]

The cohort is any file `promptehr generate` writes (JSONL, long CSV, MIMIC-III or MIMIC-IV zip), told
apart by its extension or `--synthetic-format`. The real data is split with model/split.py (80/10/10 by
seed); the synthetic cohort is compared with train, and the holdout with train as the limit (the real
sample). Prints the overall verdict (PASS, or FAIL naming the sections), warnings (such as a cohort and
real data of different sources) and the generator on stderr, then one JSON line (out, html, verdict,
passed, warnings, seconds); exit 1 when a section named in `--fail-on` fails.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from promptehr.cli.data import CODE_SYSTEM_HELP, SYSTEMS

FORMATS = ("mimic3", "mimic4", "desynpuf", "long")
# What `promptehr generate --format` writes, by file extension.
SYNTHETIC_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".zip": "zip"}
# timeline has a verdict only when the cohort and the real data carry times (model/evaluation/timeline.py).
SECTIONS = ("fidelity", "validity", "privacy", "utility", "timeline")
# The tables of the MIMIC-style zips (model/data/export.py), either case.
ZIP_TABLES = {"patients.csv", "admissions.csv", "diagnoses_icd.csv"}


def synthetic_format(path: Path, given: str | None) -> str:
    """jsonl | csv | zip: `given`, or what the file's extension says; a UsageError for any other file."""
    from promptehr.cli.main import UsageError

    if given:
        return given
    fmt = SYNTHETIC_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"--synthetic {path}: expected a .jsonl, .csv or .zip file as `promptehr generate` writes "
                         f"(or say which with --synthetic-format {{{','.join(sorted(set(SYNTHETIC_FORMATS.values())))}}})")
    return fmt


def read_synthetic(path: Path, fmt: str | None = None) -> list:
    """The cohort in `path`: JSONL (read here), long CSV (the long-format loader) or a MIMIC zip (unpacked
    into a temporary folder and read by the MIMIC-III or MIMIC-IV loader)."""
    from promptehr.model.errors import DataError

    if not path.is_file():
        raise DataError(path, "a cohort file (no such file)")
    fmt = synthetic_format(path, fmt)
    if fmt == "csv":
        from promptehr.model.data import load_patients

        return load_patients(path, format="long")
    if fmt == "zip":
        return read_zip(path)
    return read_jsonl(path)


def read_zip(path: Path) -> list:
    """A MIMIC-III or MIMIC-IV zip of `promptehr generate`: only its three tables are unpacked."""
    import tempfile
    import zipfile

    from promptehr.model.data import load_patients
    from promptehr.model.errors import DataError

    try:
        with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix="promptehr-evaluate-") as tmp:
            members = [m for m in zf.infolist() if m.filename.lower() in ZIP_TABLES]
            if len(members) != len(ZIP_TABLES):
                raise DataError(path, f"a zip holding {', '.join(sorted(ZIP_TABLES))} at its root (as `promptehr "
                                      f"generate --format mimic3|mimic4` writes); it holds {len(members)} of them")
            for m in members:  # by name only: nothing else in the zip, and no path of its own, is written
                (Path(tmp) / m.filename).write_bytes(zf.read(m))
            return load_patients(tmp)
    except zipfile.BadZipFile as e:
        raise DataError(path, f"a zip file ({e})") from None


def read_jsonl(path: Path) -> list:
    """One {"patient_id", "age", "sex", "visits"} object per line; blank lines are skipped."""
    from promptehr.model.errors import DataError
    from promptehr.model.patient import Patient

    patients = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError:
            raise DataError(path, "UTF-8 text, one JSON object per line (is it a zip or CSV? name it .zip or .csv, "
                                  "or pass --synthetic-format)") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                visits = d["visits"]
                if not isinstance(visits, list) or not all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in visits):
                    raise ValueError("visits must be a list of lists of code strings")
                patients.append(Patient.from_dict(d))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DataError(path, f'a JSON object {{"patient_id", "age", "sex", "visits"}} ({e})', line=n) from None
    if not patients:
        raise DataError(path, "at least one patient")
    return patients


def model_card(model_dir: str | None) -> dict | None:
    """The --model checkpoint's card.json (model/training/card.py), for the report's Model card section."""
    if not model_dir:
        return None
    from promptehr.model.nn.checkpoint import read_card

    return read_card(model_dir)


def read_generator(path: Path) -> dict:
    from promptehr.model.errors import DataError

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"a JSON object with the generator's configuration ({e.msg})", line=e.lineno) from None
    if not isinstance(config, dict):
        raise DataError(path, "a JSON object with the generator's configuration")
    return config


def load_model_scorer(model_dir: str, device: str):
    """The model team's scorer, imported only when --model is given (it needs torch)."""
    from promptehr.cli.main import UsageError

    try:
        from promptehr.model.evaluation.scorer import load_scorer
    except ModuleNotFoundError as e:
        if e.name in ("promptehr.model.evaluation.scorer",):
            raise UsageError("--model needs model/scoring.py (load_scorer), which this installation lacks") from None
        raise
    return load_scorer(model_dir, device)


def model_code_counts(model_dir: str) -> dict[str, int]:
    """The training code counts of a checkpoint's vocab.json: what the report checks the real data's source
    against (model/evaluation/sources.py)."""
    from promptehr.model.errors import DataError

    path = Path(model_dir) / "vocab.json"
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
        counts = dict(zip(vocab["codes"], vocab["code_counts"], strict=True))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(path, f"a checkpoint vocabulary with codes and code_counts ({type(e).__name__}: {e})") from None
    return counts


def train_and_holdout(real: list, split_seed: int) -> tuple[list, list]:
    """The real data's train and holdout splits (model/split.py); both must hold patients."""
    from promptehr.model.split import split_patients

    train, _, holdout = split_patients(real, split_seed)
    if not train or not holdout:
        from promptehr.cli.main import UsageError

        raise UsageError(f"the real data split into {len(train)} train and {len(holdout)} holdout patients: need both")
    return train, holdout


def write_report(report, out, html=None) -> None:
    """The report's JSON to `out` and, when `html` is given, its self-contained page there."""
    Path(out).write_text(report.to_json(indent=2))
    if html:
        from promptehr.model.evaluation.html import render_html

        Path(html).write_text(render_html(report), encoding="utf-8")


def evaluate(args: argparse.Namespace) -> int:
    from promptehr.model.data import load_patients
    from promptehr.model.evaluation import EvaluationConfig
    from promptehr.model.evaluation.model_scores import model_patients_for

    if args.model:
        from promptehr.cli.generate import set_threads

        set_threads(args.threads)
    fail_on = parse_fail_on(args.fail_on)
    scorer = load_model_scorer(args.model, args.device) if args.model else None  # fail before the slow part
    synthetic = read_synthetic(Path(args.synthetic), args.synthetic_format)
    real = load_patients(args.real, format=args.format, code_system=args.code_system)
    train, holdout = train_and_holdout(real, args.split_seed)
    check_privacy_times(args.privacy_times, synthetic, train, holdout)
    generator = read_generator(Path(args.generator)) if args.generator else None
    n_model = args.model_patients if args.model_patients is not None else model_patients_for(args.device)
    config = EvaluationConfig(seed=args.seed, n_subsamples=args.subsamples, model_patients=n_model or None,
                              privacy_times=args.privacy_times)
    if scorer is not None:
        print(f"evaluating; model scores on {min(len(holdout), n_model or len(holdout))} of {len(holdout)} holdout patients",
              file=sys.stderr, flush=True)
    report = build_with_progress(synthetic, train, holdout, config=config, model_scorer=scorer, generator=generator,
                                 split_seed=args.split_seed, model_counts=model_code_counts(args.model) if args.model else None,
                                 model_card=model_card(args.model))
    write_report(report, args.out, args.html)
    from promptehr.model.evaluation.text import header_lines

    # verdict, warnings, generator: for a person; -q keeps only the warnings (the JSON line carries all)
    lines = [line for line in header_lines(report) if not quiet() or line.startswith("warning: ")]
    if lines:
        print("\n".join(lines), file=sys.stderr)
    print(json.dumps({"out": args.out, "html": args.html, "verdict": report.overall().model_dump(), "passed": report.passed,
                      "warnings": [w.message for w in report.warnings], "seconds": report.seconds}))
    failed = [s for s in fail_on if report.passed.get(s) is False]
    if failed:
        print(f"promptehr evaluate: failed: {', '.join(failed)} (--fail-on {','.join(fail_on)})", file=sys.stderr)
        return 1
    return 0


def check_privacy_times(wanted: bool, synthetic: list, train: list, holdout: list) -> None:
    """--privacy-times needs times on every record: a UsageError naming the cohort that lacks them,
    before the slow part (build_report would raise the same as a ValueError)."""
    from promptehr.cli.main import UsageError
    from promptehr.model.evaluation.privacy import untimed_problem

    problem = wanted and untimed_problem({"synthetic": synthetic, "train": train, "holdout": holdout})
    if problem:
        raise UsageError(f"--privacy-times: {problem}")


def parse_fail_on(text: str | None) -> list[str]:
    """`--fail-on fidelity,privacy` -> the section names; a UsageError naming any unknown one."""
    from promptehr.cli.main import UsageError

    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise UsageError(f"--fail-on: unknown section {', '.join(unknown)}; expected some of {','.join(SECTIONS)}")
    return names


def build_with_progress(synthetic, train, holdout, **kwargs):
    """build_report with a progress bar over its sections on stderr."""
    from tqdm import tqdm

    from promptehr.model.evaluation import build_report

    stages = [*SECTIONS, *(["model"] if kwargs.get("model_scorer") is not None else [])]
    from promptehr.cli import main

    with tqdm(total=len(stages), unit="section", file=sys.stderr, dynamic_ncols=True, desc="evaluate",
              disable=main.quiet_progress) as bar:
        def progress(name: str) -> None:
            if bar.n or name != stages[0]:
                bar.update(1)
            bar.set_postfix_str(name)

        report = build_report(synthetic, train, holdout, progress=progress, **kwargs)
        bar.update(bar.total - bar.n)
    return report


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="report a synthetic cohort's fidelity, validity, privacy and utility")
    p.add_argument("--synthetic", required=True, metavar="FILE",
                   help="the cohort as `promptehr generate` writes it: .jsonl, .csv (long format) or .zip (MIMIC-III/IV)")
    p.add_argument("--synthetic-format", choices=("jsonl", "csv", "zip"), default=None,
                   help="read --synthetic as this, whatever its extension")
    p.add_argument("--real", required=True, nargs="+", metavar="PATH", help="real data folder(s) or file(s)")
    p.add_argument("--format", choices=FORMATS, default=None, help="read the real data as this format")
    p.add_argument("--code-system", choices=SYSTEMS, default=None,
                   help=CODE_SYSTEM_HELP + " (read the real data as the model was trained on it)")
    p.add_argument("--model", metavar="DIR", default=None, help="checkpoint: adds perplexity and reconstruction")
    p.add_argument("--device", default="cpu", help="device for --model (default cpu)")
    # One thread by default: on 2 shared cores at load ~4, torch's 2 threads made reconstruction 5x slower
    # (300 DE-SynPUF patients: 48.8 s against 9.4 s on one thread), the cause of a 628 s evaluation.
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch with --model (default 1; 0: torch's choice)")
    p.add_argument("--model-patients", type=int, default=None, metavar="N",
                   help="score the model on at most N holdout patients, a seeded subsample (default 2000 on CPU, 10000 on CUDA; 0: all)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation/holdout split (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of subsamples and classifiers (default 0)")
    p.add_argument("--subsamples", type=int, default=5, help="equal-size synthetic subsamples (default 5)")
    p.add_argument("--privacy-times", action="store_true",
                   help="privacy compares each record's visit days and stays too (default: codes only, so a copy of a "
                        "training record's codes with other dates counts as a copy)")
    p.add_argument("--generator", metavar="JSON", default=None, help="generator configuration to record in the report")
    p.add_argument("--out", required=True, metavar="FILE", help="report JSON")
    p.add_argument("--html", metavar="FILE", default=None, help="also write the self-contained HTML page")
    p.add_argument("--fail-on", metavar="SECTIONS", default=None,
                   help=f"exit 1 when one of these sections fails, comma-separated ({','.join(SECTIONS)})")
    p.set_defaults(func=evaluate)


def quiet() -> bool:
    """-q was given (cli.main sets it after parsing)."""
    from promptehr.cli import main

    return main.quiet_progress
