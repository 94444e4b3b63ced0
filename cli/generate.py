"""`promptehr generate`: sample a synthetic cohort from a trained checkpoint and write it as JSONL, CSV, or a
MIMIC-III or MIMIC-IV zip (model/data/export.py says what each holds; a MIMIC-III zip takes ICD-9-CM only)."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from promptehr.model.generation.options import DEFAULT_BATCH_SIZE, DEFAULT_FREQUENCY_MIX, PRECISIONS, SamplingOptions


def start_date_arg(text: str) -> dt.date:
    """argparse type: an ISO date (YYYY-MM-DD) that the exports can place visits from (check_start_date)."""
    from promptehr.model.data.export import check_start_date

    try:
        value = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None
    try:
        check_start_date(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate synthetic patients from a trained model", description=__doc__)
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (promptehr train --out)")
    p.add_argument("--n", required=True, type=int, metavar="N", help="number of patients")
    p.add_argument("--seed", type=int, default=0, help="cohort seed: the same seed gives the same cohort (default 0)")
    age = p.add_argument_group("age (one of: a normal distribution, a histogram, a fixed age; default: the training "
                               "population's age histogram, from the model's population.json)")
    age.add_argument("--age", type=float, default=None, metavar="YEARS", help="every patient this age")
    age.add_argument("--age-mean", type=float, default=None)
    age.add_argument("--age-sd", type=float, default=None)
    age.add_argument("--age-min", type=float, default=None)
    age.add_argument("--age-max", type=float, default=None)
    age.add_argument("--age-bins", type=float, nargs="+", default=None, metavar="EDGE", help="histogram bin edges, e.g. 0 18 45 65 90")
    age.add_argument("--age-weights", type=float, nargs="+", default=None, metavar="W", help="one weight per bin")
    p.add_argument("--female", type=float, default=None, metavar="P",
                   help="share of women (default: the training population's)")
    p.add_argument("--require", nargs="+", default=[], metavar="CODE",
                   help="codes every patient has (in the first visit): a bare code is ICD-9-CM (4019, 401.9), "
                        "an ICD-10-CM code is prefixed (icd10:I10)")
    defaults = SamplingOptions()  # the one place the sampling defaults live
    p.add_argument("--temperature", type=float, default=defaults.temperature)
    p.add_argument("--top-p", type=float, default=defaults.top_p, help="nucleus cut; 1: off")
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="0: off")
    p.add_argument("--stop-bias", type=float, default=None, metavar="B",
                   help="added to the end-of-record logit after each visit: below 0, more visits per patient "
                        "(default: the model's calibrated value, which matches the training data's visits per patient)")
    p.add_argument("--code-sampler", choices=("model", "frequency"), default="model",
                   help="hierarchical stage 2: codes from the model (default) or by training frequency")
    p.add_argument("--frequency-mix", type=float, default=defaults.frequency_mix, metavar="SHARE",
                   help="hierarchical stage 2 from the model: this share (0-1) of a code's probability from the "
                        "training frequencies of its category's codes, which keep the long tail of rare codes "
                        f"(default: {DEFAULT_FREQUENCY_MIX:g}; 0 for a flat model)")
    p.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                   help="the decoder's arithmetic: bf16 (bfloat16 autocast, faster) or fp32; the draws are "
                        "float32 either way, and the same seed and precision give the same patients")
    p.add_argument("--max-visits", type=int, default=None)
    p.add_argument("--max-codes-per-visit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--format", choices=("jsonl", "csv", "mimic3", "mimic4"), default=None,
                   help="default: from the file name (.jsonl, .csv, .zip = mimic3), else jsonl")
    # The default lives in model/data/export.py (DEFAULT_START_DATE), shared with the API; importing it
    # here would load pandas for every command's parser, so the help names it (a test keeps them equal).
    p.add_argument("--start-date", type=start_date_arg, default=None, metavar="YYYY-MM-DD",
                   help="the date of every record's first visit in the csv and zip exports, for a model that "
                        "learned visit times (they are days from the first visit; default 2020-01-01). A model "
                        "without time gets invented dates (a hash of each patient id), with a warning")
    p.set_defaults(func=run)


def age_spec(args: argparse.Namespace) -> dict | None:
    """The age distribution the flags ask for; None when none is given (the model's learned one applies)."""
    from promptehr.cli.main import UsageError

    normal = [args.age_mean, args.age_sd, args.age_min, args.age_max]
    chosen = [name for name, used in (("--age", args.age is not None), ("--age-mean/--age-sd/--age-min/--age-max", any(v is not None for v in normal)),
                                      ("--age-bins/--age-weights", args.age_bins is not None or args.age_weights is not None)) if used]
    if len(chosen) > 1:
        raise UsageError(f"give one age distribution, not {' and '.join(chosen)}")
    if args.age is not None:
        return {"distribution": "fixed", "value": args.age}
    if args.age_bins is not None or args.age_weights is not None:
        if args.age_bins is None or args.age_weights is None:
            raise UsageError("--age-bins and --age-weights go together")
        return {"distribution": "histogram", "bins": args.age_bins, "weights": args.age_weights}
    if not any(v is not None for v in normal):
        return None
    d = {"distribution": "normal"}
    for k, v in zip(("mean", "sd", "min", "max"), normal):
        if v is not None:
            d[k] = v
    return d


# The file each format writes, by suffix; --out must carry it, so that a name never lies about its bytes
# (x.parquet and x.csv.gz got JSONL and plain CSV). A .zip is the MIMIC-III layout unless --format mimic4.
SUFFIXES = {"jsonl": ".jsonl", "csv": ".csv", "mimic3": ".zip", "mimic4": ".zip"}


def output_format(args: argparse.Namespace) -> str:
    """--format, or the format --out's suffix names; a usage error when the two disagree or the suffix is unknown."""
    from promptehr.cli.main import UsageError

    suffix = Path(args.out).suffix.lower()
    if args.format:
        if suffix != SUFFIXES[args.format]:
            raise UsageError(f"--out {args.out}: --format {args.format} writes a {SUFFIXES[args.format]} file; "
                             f"name it so (e.g. {Path(args.out).stem}{SUFFIXES[args.format]})")
        return args.format
    by_suffix = {".jsonl": "jsonl", ".csv": "csv", ".zip": "mimic3"}
    if suffix not in by_suffix:
        raise UsageError(f"--out {args.out}: unknown file type {suffix or '(no suffix)'}; expected .jsonl, .csv or "
                         ".zip (MIMIC-III; --format mimic4 for MIMIC-IV)")
    return by_suffix[suffix]


def set_threads(threads: int | None) -> None:
    """torch's CPU threads; None or 0 leaves torch's own choice (its physical core count)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_sampler(model_dir, device_name: str):
    """(Sampler, torch.device) for a checkpoint directory; a device that is not there is a usage error."""
    from promptehr.cli.main import UsageError
    from promptehr.model.generation.sampler import Sampler
    from promptehr.model.nn.checkpoint import load_checkpoint
    from promptehr.model.training.train import resolve_device

    try:
        device = resolve_device(device_name)
    except (ValueError, RuntimeError) as e:
        raise UsageError(f"--device {device_name}: {e}") from None
    return Sampler.from_bundle(load_checkpoint(model_dir, device), device), device


@contextmanager
def progress_bar(n: int) -> Iterator[Callable[[int, int], None]]:
    """A progress(done, total) callback drawing a bar (patients and patients/s) on stderr."""
    from promptehr.cli import main

    t0 = time.time()
    with tqdm(total=n, unit="patient", dynamic_ncols=True, file=sys.stderr, disable=main.quiet_progress) as bar:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(patients_s=f"{done / max(time.time() - t0, 1e-9):.1f}")

        yield progress


def generate_with_progress(sampler, spec, n: int, seed: int, *, batch_size: int, device) -> tuple[list, float]:
    """model.generation.cohort.generate_cohort with a progress bar on stderr; returns (patients, seconds).
    For a cohort the caller keeps (`promptehr demo` evaluates it); `promptehr generate` streams instead."""
    from promptehr.model.generation.cohort import generate_cohort

    t0 = time.time()
    with progress_bar(n) as progress:
        patients = generate_cohort(sampler, spec, n, seed, batch_size=batch_size, device=device, progress=progress)
    return patients, time.time() - t0


def invented_dates_warning(fmt: str, start_date: dt.date | None) -> str:
    """The warning for records without time (a model that did not learn visit times)."""
    what = ("its records have no visit_days/los_days" if fmt == "jsonl"
            else "the visit dates are invented (a hash of each patient id), not generated")
    ignored = " (--start-date has no effect)" if start_date is not None else ""
    return f"promptehr generate: warning: this model did not learn visit times: {what}{ignored}"


def write_streamed(patients: Iterable, out: Path, fmt: str, code_systems,
                   start_date: dt.date | None = None) -> tuple[int, int]:
    """Write `patients` (any iterable, consumed once) to `out` as they come -> (patients, bytes).

    model.data.export streams every format, so memory holds one export chunk and whatever the iterable
    holds (iter_cohort: one chunk of patients), never the cohort. A regular file is written as a hidden
    sibling `.NAME.partial` and renamed at the end: a run stopped half-way leaves no file that looks whole.
    Records without time (decided by the first patient, as the export does) get a warning on stderr.
    """
    from promptehr.model.data.export import INVENTED, peek_dates, write_export

    kind, patients = peek_dates(patients)
    if kind == INVENTED:
        print(invented_dates_warning(fmt, start_date), file=sys.stderr)
    count = 0

    def counted():
        nonlocal count
        for p in patients:
            count += 1
            yield p

    if out.exists() and not out.is_file():  # /dev/stdout, a named pipe: no sibling to rename
        return count, write_export(counted(), out, fmt, code_systems=code_systems, start_date=start_date)
    partial = out.with_name(f".{out.name}.partial")
    try:
        size = write_export(counted(), partial, fmt, code_systems=code_systems, start_date=start_date)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return count, size


def run(args: argparse.Namespace) -> int:
    from promptehr.cli.main import UsageError

    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
    fmt = output_format(args)
    age = age_spec(args)
    body = {"required_codes": args.require,
            "sampling": {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "code_sampler": args.code_sampler,
                         "frequency_mix": args.frequency_mix, "stop_bias": args.stop_bias,
                         "precision": args.precision}}
    body.update({k: v for k, v in (("age", age), ("sex", None if args.female is None else {"female": args.female})) if v})
    if args.max_visits is not None:
        body["max_visits"] = args.max_visits
    if args.max_codes_per_visit is not None:
        body["max_codes_per_visit"] = args.max_codes_per_visit

    # Here, not at the top: every `promptehr` command imports this module to build its parser;
    # model.data's package imports pandas (about 0.8 s, measured), model.generation torch.
    from promptehr.model.data.export import check_exportable
    from promptehr.model.generation.cohort import CohortSpec, check_feasible, iter_cohort
    from promptehr.model.generation.population import resolve_demographics

    try:
        resolved = resolve_demographics(body, args.model)  # absent age / sex: the training population's
        spec = CohortSpec.from_dict(resolved.body)
        check_feasible(spec)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    set_threads(args.threads)
    sampler, device = load_sampler(args.model, args.device)
    if resolved.warning:  # (after loading: a folder that is no checkpoint at all says so first)
        print(f"promptehr generate: warning: {resolved.warning}", file=sys.stderr)
    try:
        sampler.required_prefix(spec.required_codes)  # codes outside the vocabulary: a usage error, before any work
    except ValueError as e:
        raise UsageError(str(e)) from None

    systems = sampler.vocab.code_systems  # the systems the cohort may hold
    try:
        check_exportable(fmt, systems)  # before any work: a MIMIC-III zip of an ICD-10-CM model
    except ValueError as e:
        raise UsageError(f"--out {args.out} ({fmt}): {e} (--format mimic4)") from None
    t0 = time.time()
    with progress_bar(args.n) as progress:  # patients are written as the sampler makes them, a chunk at a time
        patients = iter_cohort(sampler, spec, args.n, args.seed, batch_size=args.batch_size, device=device, progress=progress)
        count, size = write_streamed(patients, out, fmt, systems, args.start_date)
    seconds = time.time() - t0
    print(f"{count} patients in {seconds:.1f} s ({count / max(seconds, 1e-9):.1f} patients/s), "
          f"seed {args.seed} -> {out} ({fmt}, {size} bytes)", file=sys.stderr)
    return 0
