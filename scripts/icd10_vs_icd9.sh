#!/usr/bin/env bash
# Issue 11's comparison: DE-SynPUF sample 1 as shipped (ICD-9-CM) and converted to ICD-10-CM through the CMS GEMs,
# each trained the same way (small preset, 5 epochs, seed 0, 1 thread), 2,000 patients generated (seed 1) and
# evaluated against its own data (split seed 0). Prints one summary row per system.
#   bash scripts/icd10_vs_icd9.sh [OUT]        (default /tmp/icd10-vs-icd9; about 20 minutes on 2 cores)
#   STAGES="train" or STAGES="report" runs one half.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/icd10-vs-icd9}; data=${PROMPTEHR_SHARED_DATA:-../shared/data}
P=.venv/bin/promptehr; export OMP_NUM_THREADS=1
stages=${STAGES:-"train report"}
mkdir -p "$out"
src9=$data/desynpuf-sample/1-sample-10000
if [[ $stages == *train* ]]; then
  $P data convert "$src9" --to icd10 --out "$out/ds1-icd10.csv" 2>&1 | tee "$out/convert.log"
  for sys in icd9 icd10; do
    src=$src9; [ $sys = icd10 ] && src=$out/ds1-icd10.csv
    rm -rf "$out/model-$sys"
    /usr/bin/time -f "%e s wall" $P train --data "$src" --preset small --epochs 5 --seed 0 --device cpu --force --out "$out/model-$sys" \
      2>&1 | tr '\r' '\n' | grep -vE '^\s*$' | tail -8 > "$out/train-$sys.log"
  done
fi
if [[ $stages == *report* ]]; then
  for sys in icd9 icd10; do
    src=$src9; [ $sys = icd10 ] && src=$out/ds1-icd10.csv
    $P generate --model "$out/model-$sys" --n 2000 --seed 1 --threads 1 --out "$out/cohort-$sys.jsonl" 2>&1 | tr '\r' '\n' | tail -1
    $P evaluate --synthetic "$out/cohort-$sys.jsonl" --real "$src" --out "$out/report-$sys.json" --html "$out/report-$sys.html" \
      > "$out/evaluate-$sys.log" 2>&1 || true
  done
  .venv/bin/python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
names = ["unigram_r2", "cooccurrence_r2", "transition_r2", "category_r2", "js_divergence", "visits_per_patient_mean",
         "codes_per_visit_mean"]
print("| system | " + " | ".join(names) + " | violations | exact copies (multi-visit) | MIA AUC |")
for sys_ in ("icd9", "icd10"):
    r = json.load(open(f"{out}/report-{sys_}.json"))
    f, v, p = r["fidelity"], r["validity"], r["privacy"]
    cell = lambda m: f"{m['value']:.3f} ({m['limit']:.3f})" if m.get("limit") is not None else f"{m['value']:.3f}"
    viol = sum(v[k]["value"] for k in ("sex_violation_rate", "age_violation_rate") if k in v)
    print(f"| {sys_} | " + " | ".join(cell(f[n]) for n in names) +
          f" | {viol:.4f} | {p['exact_copy_rate_multivisit']['value']:.4f} | {p['mia_auc']['value']:.3f} |")
PY
fi
