#!/usr/bin/env bash
# Same seed, two revisions, same bytes? Trains the tiny preset on the MIMIC-III demo for 2 epochs (seed 0) and
# generates 2,000 patients (seed 3) as JSONL, CSV and MIMIC-III zip with the code of each revision, then prints
# the sha256 of the checkpoint's weights, config and vocabulary and of the three cohort files, side by side.
# training_log.jsonl (wall-clock seconds) and manifest.json (which hashes the log) differ from run to run by design.
#   bash scripts/same_bytes.sh BEFORE_REV [AFTER_REV]      (AFTER_REV defaults to the working tree)
# Each revision runs from its own git worktree with this checkout's .venv, 1 thread: a revision with promptehr/
# (the promptehr namespace) through a folder of links that maps promptehr.model etc. onto its tree, as
# pyproject's package-dir does; an older one as `python -m cli` from its root.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: scripts/same_bytes.sh BEFORE_REV [AFTER_REV]}; after=${2:-}
data=$(cd "${PROMPTEHR_SHARED_DATA:-../shared/data}" && pwd)
py=$(pwd)/.venv/bin/python
work=$(mktemp -d)
trap 'git worktree remove --force "$work/before" >/dev/null 2>&1 || true; [ -n "$after" ] && git worktree remove --force "$work/after" >/dev/null 2>&1; rm -rf "$work"' EXIT

run_cli() {  # $1: source tree; then the CLI's arguments
  local tree=$1; shift
  if [ -d "$tree/promptehr" ]; then
    local shim
    shim=$work/shim-$(basename "$tree")
    if [ ! -d "$shim/promptehr" ]; then
      mkdir -p "$shim/promptehr"
      for f in "$tree"/promptehr/*.py; do ln -s "$f" "$shim/promptehr/"; done
      for d in model service worker cli migrations; do ln -s "$tree/$d" "$shim/promptehr/$d"; done
    fi
    (cd "$work" && PYTHONPATH=$shim "$py" -m promptehr.cli "$@")
  else
    (cd "$tree" && "$py" -m cli "$@")
  fi
}

digests() {  # $1: source tree, $2: output folder
  (export OMP_NUM_THREADS=1 &&
    run_cli "$1" train --data "$data/mimic3-demo" --preset tiny --epochs 2 --seed 0 --device cpu --out "$2/model" >"$2.train.log" 2>&1 &&
    for f in jsonl csv zip; do
      run_cli "$1" generate --model "$2/model" --n 2000 --seed 3 --threads 1 --out "$2/cohort.$f" >>"$2.gen.log" 2>&1
    done) || { echo "run in $1 failed; its log:" >&2; tail -5 "$2".*.log >&2; exit 1; }
  (cd "$2" && sha256sum model/model.safetensors model/config.json model/vocab.json cohort.jsonl cohort.csv cohort.zip)
}

git worktree add -q --detach "$work/before" "$before"
if [ -n "$after" ]; then git worktree add -q --detach "$work/after" "$after"; src=$work/after; else src=$(pwd); fi
digests "$work/before" "$work/out-before" > "$work/before.txt"
digests "$src" "$work/out-after" > "$work/after.txt"
paste -d' ' <(awk '{print $2, $1}' "$work/before.txt") <(awk '{print $1}' "$work/after.txt") |
  awk '{printf "%-24s %s %s\n", $1, ($2 == $3 ? "same" : "DIFFERENT"), $3} END {}'
cmp -s <(awk '{print $1}' "$work/before.txt") <(awk '{print $1}' "$work/after.txt") && echo "same bytes" || { echo "bytes differ"; exit 1; }
