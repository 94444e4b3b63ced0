"""Generation throughput: the batched KV-cache sampler against a one-patient-at-a-time loop that
re-encodes the history for every visit and re-runs the decoder over the whole prefix for every token
(how the original PromptEHR package generates: per visit, the full model on the history so far, no
KV cache). Same model, same constraints and sampling code, same run; the loop replays the batched sampler's
records (computing every step's logits and draw), so both do the same records. Rounds alternate the two;
each round's speedup compares the two measured in that round, and the medians over rounds are reported
(wall clock, and process CPU time, which a shared machine disturbs less). Also the FLOP rate of the
batched sampler as a fraction of the fp32 matmul peak measured in the same run, and on CUDA the base
preset at batch 1024.

    OMP_NUM_THREADS=1 python bench/bench_generate.py [--model DIR] [--threads 1] [--n 1024] [--naive-n 16] [--repeats 5]

`--settings` instead compares the batched sampler at today's defaults (the checkpoint's calibrated stop
bias, frequency_mix's default, top-p 1.0, batch DEFAULT_BATCH_SIZE, bf16) against the settings before
docs/evaluation.md's steps (top-p 0.95, no stop bias, frequency_mix 0, batch 256, fp32) and the steps
between (one change at a time, the batch size, then the precision last), alternating rounds on the same model: patients/s and tokens/s,
each as the ratio to the old settings measured in a round (median). The defaults write longer records
(more visits, as the data has), so tokens/s is the sampler's speed and patients/s what a user sees.
Give it several batches of patients (`--n 4096`): one batch alone ends in its stragglers.

Without --model it trains the small preset briefly on DE-SynPUF sample 1 (trained lengths matter: a
random model writes maximal records). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from promptehr.model.generation.cohort import CohortSpec, demographics
from promptehr.model.generation.constraints import DONE, advance, init_state
from promptehr.model.generation.draw import SamplingOptions
from promptehr.model.generation.options import DEFAULT_BATCH_SIZE
from promptehr.model.generation.reference import next_token
from promptehr.model.generation.sampler import Sampler
from promptehr.model.generation.streams import row_key, uniforms

DATA = REPO.parent / "shared" / "data" / "desynpuf-sample" / "1-sample-10000"


def train_small(out: Path, steps: int) -> None:
    from promptehr.cli.main import main

    rc = main(["train", "--data", str(DATA), "--preset", "small", "--out", str(out), "--max-steps", str(steps), "--device", "cpu"])
    assert rc == 0


def cohort_inputs(n: int, seed: int):
    spec = CohortSpec()
    demo = [demographics(spec, seed, i) for i in range(n)]
    return [a for a, _ in demo], [s for _, s in demo], [row_key(seed, i) for i in range(n)]


def batched(sampler: Sampler, ages, sexes, keys, opts, batch: int) -> tuple[list[list[int]], float, float]:
    """-> (records, wall seconds, process CPU seconds)."""
    t, c = time.perf_counter(), time.process_time()
    out = sampler.generate_many(ages, sexes, keys, opts, batch_size=batch)
    return out, time.perf_counter() - t, time.process_time() - c


@torch.inference_mode()
def naive_one(sampler: Sampler, age: float, sex: str, key: int, opts: SamplingOptions, replay: list[int]) -> list[int]:
    """One patient; per visit: encoder on `<s> history </s>`, then the decoder re-run over `<s> visit so far` per token.
    Every step computes logits, masks and draws as usual, then emits `replay`'s token, so both methods
    produce the same records and the timing compares the same work."""
    from promptehr.model.nn.promptbart import demographics_to_tensors

    L, m, dev, limits = sampler.layout, sampler.model, sampler.device, sampler.limits()
    age_t, sex_t = demographics_to_tensors([age], [sex], sampler.config, dev)
    allowed = torch.from_numpy(sampler.rules.mask(np.asarray([sex]), np.asarray([age], dtype=float))).to(dev)
    state = init_state(L, allowed)
    keys = np.asarray([key], dtype=np.uint64)
    windows = sampler.head.windows if sampler.head is not None else None
    history: list[int] = []
    pos = 1
    while True:
        enc_ids = torch.tensor([[L.bos] + history + [L.eos]], device=dev)
        enc = m.encode(enc_ids, None, age_t, sex_t)
        dec = [L.bos]
        while True:
            hidden, _ = m.decoder_hidden(torch.tensor([dec], device=dev), enc, age_t, sex_t)  # full prefix, no cache
            # logits, masks and the draw are computed (part of the work compared), then the replayed token replaces it
            next_token(m, hidden[:, -1], state, L, limits, torch.from_numpy(uniforms(keys, pos)), opts, sampler.freq_logits, windows)
            t = replay[pos - 1]
            state = advance(state, torch.tensor([t], device=dev), L, limits, check=False)
            dec.append(t)
            history.append(t)
            pos += 1
            if t in (L.visit_close, L.eos):
                break
        if int(state.phase[0]) == DONE:
            return history


def matmul_peak(device, n: int = 2048, reps: int = 4) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(5):  # best of 5 rounds: the peak is what the machine can do when undisturbed
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 * reps / best


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def count_flops(sampler, ages, sexes, keys, opts, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        sampler.generate_many(ages, sexes, keys, opts, batch_size=batch)
    return int(fc.get_total_flops())


def record_stats(seqs, L) -> dict:
    lengths = [len(s) + 1 for s in seqs]  # + <s>
    visits = [s.count(L.visit_open) for s in seqs]
    return {"tokens_per_record": float(np.mean(lengths)), "visits_per_record": float(np.mean(visits))}


def cpu_bench(args) -> dict:
    from promptehr.model.nn.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else Path(tmp) / "small"
        if not args.model:
            train_small(model_dir, args.train_steps)
        bundle = load_checkpoint(model_dir, "cpu")
    sampler = Sampler.from_bundle(bundle, "cpu")
    # float32: the loop computes its logits in float32 and replays the batched records, and the FLOP rate
    # is against the float32 matmul peak (`--settings` measures bf16, the default)
    opts = SamplingOptions(precision="fp32")
    ages, sexes, keys = cohort_inputs(args.n, args.seed)
    batched(sampler, ages[:32], sexes[:32], keys[:32], opts, 32)  # warm-up
    # alternate the two so both see the same load; a round's speedup compares the two measured in it
    rounds = []
    for _ in range(args.repeats):
        seqs, tb, cb = batched(sampler, ages, sexes, keys, opts, args.batch)
        t, c = time.perf_counter(), time.process_time()
        naive = [naive_one(sampler, a, s, k, opts, r) for a, s, k, r in zip(ages, sexes, keys, seqs[:args.naive_n])]
        tn, cn = time.perf_counter() - t, time.process_time() - c
        assert naive == seqs[:args.naive_n]
        rounds.append({"batched_s": tb, "naive_s": tn, "batched_cpu_s": cb, "naive_cpu_s": cn,
                       "speedup": (args.n / tb) / (args.naive_n / tn), "speedup_cpu": (args.n / cb) / (args.naive_n / cn)})
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    flops = count_flops(sampler, ages, sexes, keys, opts, args.batch)
    peak = matmul_peak("cpu")
    cfg = bundle[3]
    return {
        "device": "cpu", "threads": torch.get_num_threads(), "repeats": args.repeats,
        "timing": "medians over alternating rounds (wall clock; cpu: process CPU time)",
        "model": str(args.model or f"small preset, {args.train_steps} training steps"),
        "preset_dims": {"d_model": cfg.d_model, "layers": [cfg.encoder_layers, cfg.decoder_layers], "vocab": cfg.vocab_size},
        "batched": {"patients": args.n, "batch_size": args.batch, "seconds": med["batched_s"],
                    "patients_per_s": args.n / med["batched_s"], "cpu_seconds": med["batched_cpu_s"],
                    "patients_per_cpu_s": args.n / med["batched_cpu_s"], **record_stats(seqs, sampler.layout)},
        "naive": {"patients": args.naive_n, "seconds": med["naive_s"], "patients_per_s": args.naive_n / med["naive_s"],
                  "cpu_seconds": med["naive_cpu_s"], "patients_per_cpu_s": args.naive_n / med["naive_cpu_s"],
                  **record_stats(naive, sampler.layout)},
        "speedup": med["speedup"], "speedup_cpu": med["speedup_cpu"],
        "speedup_rounds": [round(r["speedup"], 2) for r in rounds],
        "flops": {"batched_total": flops, "rate_per_s": flops / med["batched_s"], "matmul_peak_per_s": peak,
                  "fraction_of_peak": flops / med["batched_s"] / peak,
                  "fraction_of_peak_cpu_time": flops / med["batched_cpu_s"] / peak},
    }


# The sampling settings before docs/evaluation.md's steps: top-p 0.95 (step 1 chose 1.0), no stop bias
# (step 2 calibrates it), the model alone in stage 2 (step 8 mixes the training frequencies in), float32.
PREVIOUS_SETTINGS = SamplingOptions(top_p=0.95, stop_bias=0.0, frequency_mix=0.0, precision="fp32")
PREVIOUS_BATCH_SIZE = 256  # DEFAULT_BATCH_SIZE before it became 1,024


def settings_bench(args) -> dict:
    """Each step from PREVIOUS_SETTINGS to today's defaults, one change at a time, every ratio against
    "previous" in the same round: which change costs what per token and per patient."""
    from promptehr.model.generation.population import read_population
    from promptehr.model.nn.checkpoint import load_checkpoint

    if not args.model:
        raise SystemExit("--settings needs --model: a calibrated checkpoint (a brief training has no stop bias)")
    pop = read_population(args.model)
    bias = pop.stop_bias if pop is not None else 0.0
    old = PREVIOUS_BATCH_SIZE
    steps = {"previous": (PREVIOUS_SETTINGS, old),  # (options, batch size)
             "top_p 1.0": (replace(PREVIOUS_SETTINGS, top_p=1.0), old),
             "+ stop bias": (replace(PREVIOUS_SETTINGS, top_p=1.0, stop_bias=bias), old),
             "+ frequency mix": (SamplingOptions(stop_bias=bias, precision="fp32"), old),  # frequency_mix's default
             "+ batch 1,024": (SamplingOptions(stop_bias=bias, precision="fp32"), DEFAULT_BATCH_SIZE),
             "defaults": (SamplingOptions(stop_bias=bias), DEFAULT_BATCH_SIZE)}  # + bf16: what `promptehr generate` uses
    sampler = Sampler.from_bundle(load_checkpoint(Path(args.model), "cpu"), "cpu")
    ages, sexes, keys = cohort_inputs(args.n, args.seed)
    for opts, _ in steps.values():
        batched(sampler, ages[:32], sexes[:32], keys[:32], opts, 32)  # warm-up
    rounds = []
    for _ in range(args.repeats):
        r = {}
        for name, (opts, batch) in steps.items():
            seqs, wall, cpu = batched(sampler, ages, sexes, keys, opts, batch)
            tokens = sum(len(s) + 1 for s in seqs)  # + <s>
            r[name] = {"seconds": wall, "cpu_seconds": cpu, "patients_per_s": args.n / wall, "tokens_per_s": tokens / wall,
                       # per process CPU second too: what a neighbour on the other core disturbs less than the wall clock
                       "patients_per_cpu_s": args.n / cpu, "tokens_per_cpu_s": tokens / cpu,
                       **record_stats(seqs, sampler.layout)}
        for name in steps:
            for k in ("patients_per_s", "tokens_per_s", "patients_per_cpu_s", "tokens_per_cpu_s"):
                r[name][k + "_ratio"] = r[name][k] / r["previous"][k]
        rounds.append(r)
    return {
        "device": "cpu", "threads": torch.get_num_threads(), "repeats": args.repeats, "model": str(args.model),
        "patients": args.n,
        "timing": "medians over alternating rounds; a ratio compares a step with 'previous' measured in the same round",
        **{name: {"options": {k: getattr(o, k) for k in ("top_p", "stop_bias", "frequency_mix", "precision")}, "batch_size": b,
                  **{k: statistics.median(r[name][k] for r in rounds) for k in rounds[0][name]},
                  **{k + "_ratio_rounds": [round(r[name][k + "_ratio"], 3) for r in rounds]
                     for k in ("tokens_per_s", "patients_per_s")}}
           for name, (o, b) in steps.items()},
    }


def cuda_bench(args) -> dict | None:
    if not torch.cuda.is_available():
        return None
    from promptehr.model.data import load_patients
    from promptehr.model.nn.config import model_config
    from promptehr.model.nn.promptbart import PromptBart
    from promptehr.model.tokens.vocab import Vocabulary

    vocab = Vocabulary.build(load_patients(DATA))
    cfg = model_config("base", vocab_size=len(vocab), code_offset=vocab.code_offset)
    torch.manual_seed(0)
    model = PromptBart(cfg).eval()
    sampler = Sampler(model, vocab, cfg, "cuda")
    # random weights write maximal records: cap lengths near the data's (DE-SynPUF: ~1.5 visits, ~7 codes)
    limits = sampler.limits(max_visits=3, max_codes_per_visit=10)
    opts = SamplingOptions()
    ages, sexes, keys = cohort_inputs(args.cuda_n, args.seed)
    sampler.generate_tokens(ages[:64], sexes[:64], keys[:64], opts, limits=limits)
    torch.cuda.synchronize()
    t = time.perf_counter()
    seqs = sampler.generate_many(ages, sexes, keys, opts, limits=limits, batch_size=1024)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return {"device": torch.cuda.get_device_name(0), "preset": "base (random weights, limits 3 visits x 10 codes)",
            "batch_size": 1024, "patients": len(ages), "seconds": dt, "patients_per_s": len(ages) / dt,
            "matmul_peak_fp32_per_s": matmul_peak("cuda", 8192, 20), **record_stats(seqs, sampler.layout)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="trained checkpoint (default: train the small preset briefly)")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    p.add_argument("--n", type=int, default=1024, help="patients for the batched sampler (several batches: stragglers carry over)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--naive-n", type=int, default=16)
    p.add_argument("--cuda-n", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="alternating rounds; medians are reported")
    p.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=True, help="run the CPU comparison")
    p.add_argument("--settings", action="store_true",
                   help="instead: today's sampling defaults against the settings before docs/evaluation.md's steps")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.settings:
        print(json.dumps({"settings": settings_bench(args)}, indent=2))
        return
    out = {}
    if args.cpu:
        out["cpu"] = cpu_bench(args)
    out["cuda"] = cuda_bench(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
