"""Training throughput: tokens/s and the model's FLOP rate as a fraction of this machine's dense matmul peak.

    python bench/bench_train.py                      # small and base presets on CPU (+ base bf16 on CUDA if present)
    python bench/bench_train.py --presets small --steps 5 --data ../shared/data/desynpuf-sample/1-sample-10000

Real training steps (corruption, batching, forward, backward, clipping, AdamW) on real records. FLOPs are
counted by torch's FlopCounterMode on the same batches (matmul-class ops, forward and backward); the peak
is torch.matmul of large square matrices in the same dtype, measured in the same run with the same
threads. Also times the within-visit co-occurrence count over all DE-SynPUF sample visits. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from promptehr.model.data import load_patients
from promptehr.model.nn.config import model_config, train_config
from promptehr.model.nn.cooccurrence import common_pairs, count_cooccurrences, patient_visits
from promptehr.model.nn.promptbart import LossWeights, PromptBart
from promptehr.model.tokens.layout import TokenLayout
from promptehr.model.tokens.tokenizer import Tokenizer
from promptehr.model.tokens.vocab import Vocabulary
from promptehr.model.training.prepare import (
    age_stats,
    encode_patients,
    epoch_batches,
    make_optimizer,
    train_batch,
)

SHARED = REPO.parent / "shared" / "data" / "desynpuf-sample"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, dtype, n: int, reps: int) -> float:
    """FLOP/s of torch.matmul on (n x n) @ (n x n), best of a few timed rounds."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


def bench_preset(preset, patients, device, steps: int, batch_size: int, bf16: bool) -> dict:
    cfg = train_config(preset, batch_size=batch_size)
    vocab = Vocabulary.build(patients)
    mean, sd = age_stats(patients)
    mcfg = model_config(preset, vocab_size=len(vocab), code_offset=vocab.code_offset, age_mean=mean, age_sd=sd)
    tk = Tokenizer(vocab, cfg.mode)
    seqs, ages, sexes = encode_patients(patients, tk, mcfg)
    common = common_pairs(count_cooccurrences(patient_visits(patients), vocab), cfg.cooc_threshold)
    layout = TokenLayout.of(vocab)
    torch.manual_seed(0)
    model = PromptBart(mcfg).to(device)
    model.loss_weights = LossWeights(**cfg.loss_weights())
    model.train()
    opt = make_optimizer(model, cfg)
    order = epoch_batches(len(seqs), [len(s) for s in seqs], cfg, 0)
    batches = [train_batch(order[i], seqs, ages, sexes, layout, cfg, 0, common) for i in range(steps + 1)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast(device.type, enabled=False)

    def step(batch):
        with autocast:
            out = model(**batch.model_inputs())
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0].to(device))  # warm-up
    sync(device)
    timed = [b.to(device) for b in batches[1:]]
    t = time.perf_counter()
    for b in timed:
        step(b)
    sync(device)
    seconds = time.perf_counter() - t
    flops = 0
    for b in timed:  # count on the same batches (forward + backward), outside the timing
        counter = FlopCounterMode(display=False)
        with counter, autocast:
            model(**b.model_inputs()).loss.backward()
        flops += counter.get_total_flops()
        opt.zero_grad(set_to_none=True)
    tokens = sum(b.n_tokens for b in timed)
    padded = sum(b.input_ids.numel() + b.decoder_input_ids.numel() for b in timed)
    return {
        "preset": preset, "device": str(device), "dtype": "bf16-autocast" if bf16 else "fp32", "steps": steps,
        "batch_size": batch_size, "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(vocab),
        "tokens": tokens, "padded_tokens": padded, "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1), "step_s": round(seconds / steps, 3),
        "model_flops_per_step": flops / steps, "model_flop_per_s": flops / seconds,
    }


def load(paths):
    return [p for p in load_patients(paths) if p.visits]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["small", "base"])
    ap.add_argument("--data", nargs="+", default=[str(SHARED / "1-sample-10000")])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--peak-n", type=int, default=2048)
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--skip-cooc", action="store_true")
    args = ap.parse_args()

    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": []}
    patients = load(args.data)
    cpu = torch.device("cpu")
    peak = matmul_peak(cpu, torch.float32, args.peak_n, reps=5)
    report["cpu_matmul_peak_flop_per_s"] = peak
    for preset in args.presets:
        r = bench_preset(preset, patients, cpu, args.steps, args.batch_size, bf16=False)
        r["fraction_of_peak"] = round(r["model_flop_per_s"] / peak, 3)
        report["cpu"].append(r)
        print(json.dumps(r), file=sys.stderr)
    if torch.cuda.is_available() and not args.no_cuda:
        gpu = torch.device("cuda")
        gpeak = matmul_peak(gpu, torch.bfloat16, 8192, reps=20)
        report["cuda_bf16_matmul_peak_flop_per_s"] = gpeak
        report["cuda_device"] = torch.cuda.get_device_name()
        r = bench_preset("base", patients, gpu, max(args.steps, 10), max(args.batch_size, 64), bf16=True)
        r["fraction_of_peak"] = round(r["model_flop_per_s"] / gpeak, 3)
        report["cuda"] = r
    if not args.skip_cooc:
        dirs = sorted(SHARED.glob("*-sample-10000"))
        if dirs:
            everyone = load([str(d) for d in dirs])
            visits = patient_visits(everyone)
            vocab = Vocabulary.build(everyone)
            t = time.perf_counter()
            counts = count_cooccurrences(visits, vocab)
            report["cooccurrence"] = {"visits": len(visits), "codes": vocab.n_codes, "nonzero_pairs": int(counts.nnz),
                                      "seconds": round(time.perf_counter() - t, 3)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
