#!/usr/bin/env bash
# Issue 4 check by hand: a tiny model on DE-SynPUF sample 1, 2,000 patients at batch 256 and 64 (same bytes),
# another seed, --require 4280; prints duplicate codes, rule violations, unknown codes, distinct share.
# Run from the repository root: bash scripts/check_generation.sh (writes /tmp/i4).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PROMPTEHR_SHARED_DATA:-../shared/data}
P=.venv/bin/promptehr
rm -rf /tmp/i4 && mkdir /tmp/i4
OMP_NUM_THREADS=1 $P train --data $DATA/desynpuf-sample/1-sample-10000 --preset tiny --device cpu --force --out /tmp/i4/m 2>&1 | tr '\r' '\n' | grep -E "^completed"
$P generate --model /tmp/i4/m --n 2000 --seed 1 --batch-size 256 --threads 1 --out /tmp/i4/a.jsonl 2>&1 | tr '\r' '\n' | tail -1
$P generate --model /tmp/i4/m --n 2000 --seed 1 --batch-size 64 --threads 1 --out /tmp/i4/b.jsonl 2>&1 | tr '\r' '\n' | tail -1
$P generate --model /tmp/i4/m --n 2000 --seed 2 --threads 1 --out /tmp/i4/c.jsonl 2>&1 | tr '\r' '\n' | tail -1
$P generate --model /tmp/i4/m --n 2000 --seed 5 --require 4280 --threads 1 --out /tmp/i4/r.jsonl 2>&1 | tr '\r' '\n' | tail -1
cmp /tmp/i4/a.jsonl /tmp/i4/b.jsonl && echo "batch 64 == batch 256: byte-identical"
.venv/bin/python - <<'PY'
import json, sys
sys.path.insert(0, ".")
from promptehr.model.rules import violations
from promptehr.model.nn.checkpoint import load_checkpoint
_, vocab, _, _ = load_checkpoint("/tmp/i4/m")
known = {vocab.token_of(i) for i in range(vocab.code_offset, len(vocab))}
a = [json.loads(l) for l in open("/tmp/i4/a.jsonl")]
c = [json.loads(l) for l in open("/tmp/i4/c.jsonl")]
r = [json.loads(l) for l in open("/tmp/i4/r.jsonl")]
dup = sum(len(v) != len(set(v)) for p in a for v in p["visits"])
unk = sum(code not in known for p in a for v in p["visits"] for code in v)
bad = sum(bool(violations(code, p["sex"], p["age"])) for p in a for v in p["visits"] for code in v)
distinct = len({json.dumps(p["visits"]) for p in a}) / len(a)
diff = sum(x["visits"] != y["visits"] for x, y in zip(a, c))
req = sum(any("4280" in v for v in p["visits"]) for p in r)
print(f"patients {len(a)}, duplicate codes in a visit {dup}, rule violations {bad}, codes outside vocabulary {unk}, distinct records {distinct:.2%}, seed 2 differs in {diff}/{len(a)}, 4280 in {req}/{len(r)}")
PY
