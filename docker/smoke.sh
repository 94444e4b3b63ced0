#!/usr/bin/env bash
# Smoke test of the compose stack, for a machine with a Docker daemon (and the NVIDIA runtime for the
# worker's GPU reservation):
#   PROMPTEHR_DATA_DIR=../shared/data bash docker/smoke.sh
# Builds and starts the stack, runs the migrations, makes an API key, registers the MIMIC-III demo as a
# dataset, trains the tiny preset one epoch (the worker writes the checkpoint into the fresh `models`
# volume: the uid-10001 ownership check), generates a 20-patient cohort, reads a page of it over HTTP,
# then takes the stack down with its volumes. Exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

export PROMPTEHR_DATA_DIR=${PROMPTEHR_DATA_DIR:-../shared/data}  # mounted read-only at /data
project=promptehr-smoke
api=${API:-http://127.0.0.1:8000}
compose() { docker compose -p "$project" "$@"; }

cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

compose up -d --build --wait postgres redis api worker
compose exec -T api promptehr db upgrade  # idempotent: the API's entrypoint ran it already
key=$(compose exec -T api promptehr apikey create --name smoke | head -n 1 | tr -d '\r')

call() {  # call METHOD PATH [JSON]: the response body on stdout; fails on HTTP >= 400
  curl -fsS -X "$1" -H "X-API-Key: $key" -H "Content-Type: application/json" ${3:+--data "$3"} "$api$2"
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

wait_for() {  # wait_for PATH: poll a job until it succeeds (10 minutes at most)
  local status
  for _ in $(seq 300); do
    status=$(call GET "$1" | field status)
    case $status in
      succeeded) return 0 ;;
      failed|cancelled) echo "$1: $status" >&2; call GET "$1" >&2; return 1 ;;
    esac
    sleep 2
  done
  echo "$1: still $status after 10 minutes" >&2
  return 1
}

dataset=$(call POST /datasets '{"name": "mimic3-demo", "format": "mimic3", "path": "mimic3-demo"}' | field id)
job=$(call POST /training-jobs "{\"dataset_id\": \"$dataset\", \"preset\": \"tiny\", \"epochs\": 1}" | field id)
wait_for "/training-jobs/$job"
model=$(call GET "/training-jobs/$job" | field model_id)
# the checkpoint is in the named volume, written by uid 10001
compose exec -T worker sh -c 'find /var/lib/promptehr/models -name model.safetensors -user 10001 | grep -q .' \
  || { echo "no checkpoint owned by uid 10001 in the models volume" >&2; exit 1; }

cohort=$(call POST /cohorts "{\"model_id\": \"$model\", \"n_patients\": 20, \"seed\": 1,
  \"age\": {\"distribution\": \"normal\", \"mean\": 60, \"sd\": 15}, \"sex\": {\"female\": 0.5}}" | field id)
wait_for "/cohorts/$cohort"
n=$(call GET "/cohorts/$cohort/patients" | python3 -c "import json, sys; print(len(json.load(sys.stdin)['items']))")
[ "$n" -gt 0 ] || { echo "cohort $cohort: no patients in the first page" >&2; exit 1; }
echo "smoke: OK (dataset $dataset, model $model, cohort $cohort: $n patients on the first page)"
