"""The figures of docs/evaluation.md, "Different sources": unseen-code share, code-mix overlap and the
warnings of model/evaluation/sources.py for same-source and other-source cohorts. First:

    OMP_NUM_THREADS=1 promptehr train --data ../shared/data/mimic3-demo --preset tiny --epochs 2 --device cpu --out /tmp/c13/m3
    OMP_NUM_THREADS=1 promptehr generate --model /tmp/c13/m3 --n 300 --seed 1 --age-mean 65 --age-sd 15 --female 0.55 --out /tmp/c13/m3-cohort.jsonl
    OMP_NUM_THREADS=1 promptehr train --data ../shared/data/desynpuf-sample/1-sample-10000 --preset tiny --epochs 1 --device cpu --out /tmp/c13/ds1
    OMP_NUM_THREADS=1 promptehr generate --model /tmp/c13/ds1 --n 300 --seed 1 --age-mean 72 --age-sd 10 --out /tmp/c13/ds1-cohort.jsonl
    .venv/bin/python bench/measure_sources.py   # PROMPTEHR_SHARED_DATA, default ../shared/data
"""
import json
import os
from pathlib import Path

import numpy as np

from promptehr.cli.evaluate import read_jsonl
from promptehr.model.data import load_patients
from promptehr.model.evaluation import sources as S
from promptehr.model.split import split_patients

D = os.environ.get("PROMPTEHR_SHARED_DATA", "../shared/data")
def split(ps):
    tr, _, ho = split_patients(ps, 0); return tr, ho
m3 = load_patients(D + "/mimic3-demo"); ds1 = load_patients(D + "/desynpuf-sample/1-sample-10000"); ds2 = load_patients(D + "/desynpuf-sample/2-sample-10000")
m4 = load_patients(D + "/mimic4-demo")
c_m3 = read_jsonl(Path("/tmp/c13/m3-cohort.jsonl")); c_ds = read_jsonl(Path("/tmp/c13/ds1-cohort.jsonl"))
def vocab(d):
    v = json.loads(Path(d, "vocab.json").read_text()); return dict(zip(v["codes"], v["code_counts"]))
for cname, coh, vname in (("mimic3-model cohort (300)", c_m3, "/tmp/c13/m3"), ("mimic3-model cohort (30)", c_m3[:30], "/tmp/c13/m3"),
                          ("desynpuf1-model cohort (300)", c_ds, "/tmp/c13/ds1"), ("desynpuf1-model cohort (30)", c_ds[:30], "/tmp/c13/ds1"),
                          ("desynpuf-2 real (300)", [p for p in ds2 if p.visits][:300], None), ("mimic4 demo real", m4, None)):
    for rname, real in (("mimic3", m3), ("desynpuf-1", ds1), ("desynpuf-2", ds2)):
        tr, ho = split(real)
        trc = S.code_counts(tr); ref_n = min(len(coh), len(ho))
        rows = np.sort(np.random.default_rng(0).choice(len(ho), ref_n, replace=False))
        ref = S.overlap(S.code_counts([ho[i] for i in rows]), trc)
        cc = S.code_counts(coh); real_c = trc + S.code_counts(ho)
        unseen = sum(c not in real_c for c in cc) / len(cc)
        line = f"{cname:30s} vs {rname:10s}: unseen {unseen:.3f} overlap {S.overlap(cc, trc):.3f} (real sample same size {ref:.3f})"
        if vname:
            vc = vocab(vname); line += f" | model vocab unseen {sum(c not in real_c for c in vc)/len(vc):.3f} overlap {S.overlap(vc, trc):.3f} (holdout {S.overlap(S.code_counts(ho), trc):.3f})"
        w = S.source_warnings(coh, tr, ho, vocab(vname) if vname else None)
        print(line, "->", [f"{x.kind}:{x.about[4:9]}" for x in w])
