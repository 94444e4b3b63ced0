"""`promptehr train`: load records, split them (train / validation), train PromptBart, write a checkpoint."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (`--epochs 0` used to report "completed" and write nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def unit_weight(text: str) -> float:
    """argparse type: a loss weight in (0, 1] (0 would leave the time tokens unlearned)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {value}")
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train PromptBart on patient records and write a checkpoint directory",
                              description=__doc__)
    p.add_argument("--data", nargs="+", required=True, metavar="PATH", help="data folder(s) or file(s)")
    p.add_argument("--format", default=None, help="mimic3 | mimic4 | desynpuf | long (default: detected)")
    p.add_argument("--code-system", choices=("icd9", "icd10"), default=None,
                   help="the code system of codes the data leaves open; for data that names it per row (MIMIC-IV), "
                        "keep only this system's rows")
    p.add_argument("--map-to", choices=("icd9", "icd10"), default=None,
                   help="map every code to this system on load (CMS GEMs, as `promptehr data convert`), so that "
                        "mixed data trains as one system")
    p.add_argument("--default-age", type=float, default=None, metavar="YEARS",
                   help="the age of patients the data gives none (without it such data is refused)")
    p.add_argument("--default-sex", choices=("M", "F"), default=None,
                   help="the sex of patients the data gives none (without it such data is refused)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--preset", choices=("tiny", "small", "base"), default="small", help="model size")
    p.add_argument("--mode", choices=("hierarchical", "flat"), default="hierarchical",
                   help="hierarchical: each code after its category; flat: codes alone")
    p.add_argument("--epochs", type=positive_int, default=None, help="passes over the data (default: the preset's)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimiser steps")
    p.add_argument("--batch-size", type=positive_int, default=None, help="patients per step (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="training seed (initialisation, batch order, corruption)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation/holdout split")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel training in N local processes (gloo on CPU, NCCL with one GPU each on CUDA); "
                        "the same as `torchrun --nproc_per_node N -m cli.main train ...`")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from <out>.resume/")
    p.add_argument("--force", action="store_true", help="overwrite the checkpoint already in --out")
    p.add_argument("--no-time", dest="time", action="store_false",
                   help="train on codes alone, without the timeline (gap and stay tokens) even where the data has dates "
                        "(by default the timeline is learned wherever the data has dates)")
    p.add_argument("--time-weight", type=unit_weight, default=None, metavar="W",
                   help="weight of a time token's bin in the training loss; the decision that a gap or stay comes weighs 1 (default 1)")
    p.add_argument("--init-from", default=None, metavar="HF_DIR", help="local Hugging Face BART checkpoint to start from")
    p.add_argument("--eval-holdout", action="store_true",
                   help="after training, print the held-out perplexity (masked codes, next visits) beside the unigram baseline's")
    p.set_defaults(func=run)


def train_with_progress(train_set, val_set, cfg, out, *, resume: bool = False, device: str = "auto",
                        time_budget: float | None = None, holdout=None, source: dict | None = None):
    """model.training.train.train with a progress bar and one line per epoch on stderr; returns its TrainResult."""
    from tqdm import tqdm

    from promptehr.cli import main
    from promptehr.model.training.train import train

    bar = None

    def progress(info: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=info["total_steps"], unit="step", dynamic_ncols=True, file=sys.stderr,
                       disable=main.quiet_progress)
        if info.get("event") == "epoch":
            if main.quiet_progress:
                return
            tqdm.write(f"epoch {info['epoch']}: train_loss {info['train_loss']:.4f} val_loss {info.get('val_loss', float('nan')):.4f} "
                       f"val_ppl {info.get('val_ppl', float('nan')):.2f} (unigram {info.get('baseline_ppl', float('nan')):.2f})",
                       file=sys.stderr)
            return
        bar.n = info["step"]
        bar.set_postfix(epoch=info["epoch"], loss=f"{info['loss']:.3f}", tok_s=f"{info['tokens_per_s']:.0f}")
        bar.refresh()

    try:
        return train(train_set, val_set, cfg, out, progress=progress, resume=resume, device=device, time_budget=time_budget,
                     holdout=holdout, source=source)
    except FileExistsError as e:
        from promptehr.cli.main import UsageError

        raise UsageError(str(e)) from None
    finally:
        if bar is not None:
            bar.close()


def result_line(result) -> str:
    """One line: status, epochs, steps, the best epoch's validation figures, time and directory."""
    last = next((r for r in result.log if r["epoch"] == result.best_epoch), result.log[-1] if result.log else {})
    return (f"{result.status}: {result.epochs_run} epochs, {result.steps} steps, best epoch {result.best_epoch} "
            f"(val_loss {last.get('val_loss', float('nan')):.4f}, val_ppl {last.get('val_ppl', float('nan')):.2f}, "
            f"unigram {last.get('baseline_ppl', float('nan')):.2f}) in {result.seconds:.1f} s -> {result.out_dir}")


def print_card(card: dict | None) -> None:
    """The model card's one-line summary and its warnings (a model worse than the unigram baseline) on stderr."""
    if not card:
        return
    ppl, check = card["perplexity"], card["check_cohort"]
    verdict = check.get("verdict", {}).get("passed")
    checked = (f"check cohort of {check['patients']}: {'every section passes' if verdict else 'failed: ' + ', '.join(check['verdict']['failed_sections'])}"
               if "patients" in check else f"no check cohort ({check.get('skipped')})")
    print(f"model card: held-out perplexity {ppl.get('ppl')} (unigram {ppl.get('baseline_ppl')}, {ppl.get('heldout')}); "
          f"{checked}; {card['card_seconds']:.1f} s", file=sys.stderr)
    for w in card["warnings"]:
        print(f"promptehr train: warning: {w}", file=sys.stderr)


def launch(args: argparse.Namespace) -> int:
    """`--nproc N`: `run` in N processes (torch.distributed.run's agent, as torchrun); rank 0's exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from promptehr.cli.main import UsageError
    from promptehr.model.training import distributed

    if args.device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < args.nproc:
            raise UsageError(f"--nproc {args.nproc} on CUDA needs {args.nproc} GPUs; this machine has {torch.cuda.device_count()}")
    try:
        return distributed.launch(args.nproc, run, argparse.Namespace(**{**vars(args), "nproc": 1}))[0]
    except ChildFailedError as e:
        print(f"promptehr train: a training process failed: {e.format_msg()}", file=sys.stderr)
        return 1


def check_out(args: argparse.Namespace) -> None:
    """A trained model in --out is replaced only with --force (or continued with --resume)."""
    from promptehr.cli.main import UsageError
    from promptehr.model.nn import checkpoint

    if (Path(args.out) / checkpoint.MANIFEST).exists() and not (args.force or args.resume):
        raise UsageError(f"--out {args.out}: holds a trained model; pass --force to overwrite it "
                         f"(or choose another folder)")


def run(args: argparse.Namespace) -> int:
    check_out(args)
    if args.nproc > 1:
        return launch(args)
    from promptehr.model.data import load_patients
    from promptehr.model.nn.config import train_config
    from promptehr.model.split import split_patients

    patients = load_patients(args.data, format=args.format, code_system=args.code_system)
    if args.map_to:
        from promptehr.model.data.convert import convert_patients

        patients, conversion = convert_patients(patients, args.map_to)
        print(f"promptehr train: {conversion.line()}", file=sys.stderr)
    if args.default_age is not None or args.default_sex is not None:
        from promptehr.model.training.prepare import fill_demographics

        patients = fill_demographics(patients, age=args.default_age, sex=args.default_sex)
    from promptehr.model.training.prepare import check_demographics

    check_demographics(patients, " ".join(map(str, args.data)))
    train_set, val_set, holdout = split_patients(patients, args.split_seed)
    speaks = os.environ.get("RANK", "0") == "0"  # under a launch (torchrun, --nproc) rank 0 alone prints
    cfg = train_config(args.preset, mode=args.mode, epochs=args.epochs, max_steps=args.max_steps,
                       batch_size=args.batch_size, lr=args.lr, seed=args.seed, init_from=args.init_from,
                       time=args.time, time_weight=args.time_weight)
    if speaks:
        print(f"promptehr train: {len(patients)} patients -> train {len(train_set)}, validation {len(val_set)}, "
              f"holdout {len(holdout)} (split seed {args.split_seed}); preset {args.preset}, {args.mode}", file=sys.stderr)

    source = {"format": args.format or "detected", "paths": [str(p) for p in args.data]}
    result = train_with_progress(train_set, val_set, cfg, args.out, resume=args.resume, device=args.device,
                                 holdout=holdout, source=source)
    if not speaks:
        return 0
    print(result_line(result))
    print_card(result.card)
    if args.eval_holdout and result.status != "stopped":
        import json

        from promptehr.model.nn.checkpoint import load_checkpoint
        from promptehr.model.training.perplexity import heldout_perplexity

        model, vocab, tokenizer, _ = load_checkpoint(args.out)
        figures = heldout_perplexity(model, vocab, tokenizer, holdout, batch_size=cfg.batch_size)
        print("holdout " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}))
    return 0
