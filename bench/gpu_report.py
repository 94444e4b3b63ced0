"""The one-line GPU figure that bench/gpu.sh prints: training tokens/s and generation patients/s of the
base and small presets, each as a fraction of this device's measured bf16 matmul peak, and the wall time
of `promptehr demo`.

    python bench/gpu_report.py            # CUDA: base and small, batch 1024 generation, demo on all DE-SynPUF samples
    python bench/gpu_report.py --cpu      # the CPU fallback: tiny preset, few steps, small n (under a minute)

Reuses bench/bench_train.py (real training steps, FLOPs by FlopCounterMode, the matmul peak) and
bench/bench_generate.py (cohort inputs, the sampler's FLOP count). Generation uses random weights with
lengths capped near the data's (3 visits x 10 codes), as bench_generate.cuda_bench does: a random model
otherwise writes maximal records. The sampler computes in fp32; training runs under bf16 autocast on CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

import bench_generate  # (bench/ is not a package: these are its scripts, found through sys.path above)
import bench_train

from promptehr.model.data import load_patients
from promptehr.model.generation.draw import SamplingOptions
from promptehr.model.generation.sampler import Sampler
from promptehr.model.nn.config import model_config
from promptehr.model.nn.promptbart import PromptBart
from promptehr.model.tokens.vocab import Vocabulary

SHARED = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data"))
# mode -> presets, training steps and batch, generated patients and batch, matmul size for the peak
PLANS = {
    "cuda": {"presets": ["base", "small"], "steps": 10, "batch": 64, "n": 4096, "gen_batch": 1024, "peak_n": 8192,
             "peak_reps": 20, "dtype": torch.bfloat16},
    "cpu": {"presets": ["tiny"], "steps": 2, "batch": 16, "n": 64, "gen_batch": 64, "peak_n": 512, "peak_reps": 3,
            "dtype": torch.float32},
}


def generation(preset: str, patients, device: torch.device, plan: dict, peak: float) -> dict:
    """Patients/s of the batched sampler at plan["gen_batch"], and its FLOP rate over the peak."""
    vocab = Vocabulary.build(patients)
    cfg = model_config(preset, vocab_size=len(vocab), code_offset=vocab.code_offset)
    torch.manual_seed(0)
    sampler = Sampler(PromptBart(cfg).eval(), vocab, cfg, device)
    limits = sampler.limits(max_visits=3, max_codes_per_visit=10)
    opts = SamplingOptions()
    ages, sexes, keys = bench_generate.cohort_inputs(plan["n"], 0)
    sampler.generate_tokens(ages[:64], sexes[:64], keys[:64], opts, limits=limits)  # warm-up
    bench_generate.sync(device)
    t = time.perf_counter()
    seqs = sampler.generate_many(ages, sexes, keys, opts, limits=limits, batch_size=plan["gen_batch"])
    bench_generate.sync(device)
    seconds = time.perf_counter() - t
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:  # the same work again, counted outside the timing
        sampler.generate_many(ages, sexes, keys, opts, limits=limits, batch_size=plan["gen_batch"])
    flops = fc.get_total_flops()
    return {"patients": len(seqs), "batch_size": plan["gen_batch"], "seconds": round(seconds, 3),
            "patients_per_s": round(len(seqs) / seconds, 1), "fraction_of_peak": round(flops / seconds / peak, 4),
            **bench_generate.record_stats(seqs, sampler.layout)}


def demo_seconds(mode: str) -> dict:
    """Wall time of `promptehr demo` on all DE-SynPUF samples (CPU fallback: the MIMIC-III demo, tiny preset,
    one epoch, 50 patients: DE-SynPUF sample 1 alone takes 160 tiny steps, 24 s here)."""
    args = ["--data", str(SHARED / "desynpuf-sample")] if mode == "cuda" else \
        ["--data", str(SHARED / "mimic3-demo"), "--preset", "tiny", "--epochs", "1", "--n", "50", "--device", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run = subprocess.run([str(Path(sys.executable).parent / "promptehr"), "demo", *args, "--out", f"{tmp}/demo"],
                             capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t
    if run.returncode != 0:
        raise SystemExit(f"promptehr demo failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return {"args": " ".join(args), "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="the CPU fallback, whether or not CUDA is present")
    args = ap.parse_args()
    mode = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    plan, device = PLANS[mode], torch.device(mode)
    if mode == "cpu":
        torch.set_num_threads(1)  # the fallback runs in CI beside other work
    patients = [p for p in load_patients([str(SHARED / "desynpuf-sample" / "1-sample-10000")]) if p.visits]
    peak = bench_train.matmul_peak(device, plan["dtype"], plan["peak_n"], plan["peak_reps"])
    line = {"mode": mode, "device": torch.cuda.get_device_name() if mode == "cuda" else "cpu",
            "torch": torch.__version__, "peak_dtype": str(plan["dtype"]).removeprefix("torch."),
            "matmul_peak_flop_per_s": peak}
    for preset in plan["presets"]:
        tr = bench_train.bench_preset(preset, patients, device, plan["steps"], plan["batch"], bf16=mode == "cuda")
        line[preset] = {"train_tokens_per_s": tr["tokens_per_s"], "train_dtype": tr["dtype"],
                        "train_fraction_of_peak": round(tr["model_flop_per_s"] / peak, 4),
                        "generate": generation(preset, patients, device, plan, peak)}
    line["demo"] = demo_seconds(mode)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
