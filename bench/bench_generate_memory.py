"""Peak memory of `promptehr generate` by cohort size: it streams (patients written a chunk at a time),
so the peak resident set at 100,000 patients must stay within 1.5x that at 10,000.

Each size runs `python -m promptehr.cli generate` in a child process and reads the child's own peak RSS
(ru_maxrss from os.wait4), wall time and output size; the last line gives the ratio of the largest
size's peak to the smallest's against the 1.5 limit (exit 1 above it).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_generate_memory.py --model DIR            # 10k and 100k
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_generate_memory.py --million              # + 1,000,000, tiny preset
    .venv/bin/python bench/bench_generate_memory.py --model DIR --sizes 2000 20000 --src /tmp/head   # another tree

Without --model it trains the tiny preset on the MIMIC-III demo (2 epochs, about half a minute) first;
--million uses that tiny model to keep the time sane (say so where the figure is quoted). --src runs
the generate of another source tree (say `git archive HEAD | tar -x -C /tmp/head`) with this .venv,
for a before/after comparison.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from promptehr.model.generation.options import DEFAULT_BATCH_SIZE  # noqa: E402  (torch-free)

LIMIT = 1.5


def train_tiny(out: Path, data: Path) -> Path:
    subprocess.run([sys.executable, "-m", "promptehr.cli", "train", "--data", str(data / "mimic3-demo"), "--preset", "tiny",
                    "--epochs", "2", "--seed", "0", "--device", "cpu", "--out", str(out)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def measure(src: Path, model: Path, n: int, out: Path, args) -> dict:
    """One `promptehr generate` in a child: its peak RSS (MiB), wall seconds, output bytes."""
    cmd = [sys.executable, "-m", "promptehr.cli", "generate", "--model", str(model), "--n", str(n), "--seed", "1",
           "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--out", str(out)]
    t0 = time.perf_counter()
    # stderr to a file, not a pipe: nobody reads a pipe until the child ends, and the progress bar of
    # 100,000 patients fills its 64 KB, which froze the child (the first 100k run hung for 30 min).
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=src, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's maximum
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        err = log.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"generate --n {n} failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    return {"n": n, "peak_rss_mib": usage.ru_maxrss / 1024, "seconds": wall, "bytes": out.stat().st_size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: train the tiny preset first)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--million", action="store_true", help="also 1,000,000 patients, with the tiny preset model")
    ap.add_argument("--format", choices=("jsonl", "csv", "zip"), default="jsonl")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--src", type=Path, default=ROOT, help="source tree whose cli generate runs (default: this one)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("PROMPTEHR_SHARED_DATA", ROOT.parent / "shared" / "data")))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = None
        if args.model is None or args.million:
            tiny = train_tiny(tmp / "tiny", args.data)
        model = args.model or tiny
        runs = [(model, n) for n in sorted(args.sizes)] + ([(tiny, 1_000_000)] if args.million else [])
        results = []
        for m, n in runs:
            r = measure(args.src, m, n, tmp / f"cohort.{args.format}", args)
            r["model"] = "tiny preset" if m == tiny else str(m)
            results.append(r)
            print(f"{n:>9,} patients: peak RSS {r['peak_rss_mib']:7.1f} MiB, {r['seconds']:7.1f} s "
                  f"({n / r['seconds']:.0f} patients/s), {r['bytes'] / 2**20:.1f} MiB of {args.format} ({r['model']})",
                  flush=True)
            (tmp / f"cohort.{args.format}").unlink()
    same_model = [r for r in results if r["model"] == results[0]["model"]]
    lo, hi = same_model[0], same_model[-1]
    ratio = hi["peak_rss_mib"] / lo["peak_rss_mib"]
    verdict = "ok" if ratio <= LIMIT else "ABOVE THE LIMIT"
    print(f"peak RSS {hi['n']:,} / {lo['n']:,} patients: {ratio:.2f}x (limit {LIMIT}x): {verdict}")
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
