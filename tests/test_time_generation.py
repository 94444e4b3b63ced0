"""Generation with time tokens, end to end through the CLI: a model trained on dated records (the MIMIC-III
demo) writes visit_days and los_days, the same bytes at any batch size and across shards; data without
dates (a long file whose visit_time is a visit number) trains, generates records without times, and
the report says the timeline was not learned."""
from __future__ import annotations

import csv
import json
import warnings
import zipfile

import pytest

from promptehr.cli.main import main
from promptehr.model.data import load_patients
from promptehr.model.generation.cohort import generate_cohort
from promptehr.model.generation.population import fill_demographics, read_population
from promptehr.model.nn.checkpoint import load_checkpoint
from promptehr.model.tokens import time_bins

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # trains tiny models

N = 300


@pytest.fixture(scope="module")
def timed_model(tmp_path_factory, shared_data, one_thread):
    out = tmp_path_factory.mktemp("timed") / "model"
    assert main(["-q", "train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--epochs", "2",
                 "--seed", "0", "--out", str(out), "--device", "cpu"]) == 0
    return out


def generate(model, out, *args) -> bytes:
    assert main(["-q", "generate", "--model", str(model), "--n", str(N), "--seed", "5", "--device", "cpu",
                 "--threads", "1", "--out", str(out), *args]) == 0
    return out.read_bytes()


def test_a_model_trained_on_dates_writes_times_the_same_at_every_batch_size_and_shard(timed_model, tmp_path):
    vocab = json.loads((timed_model / "vocab.json").read_text())
    counts = vocab["time"].pop("counts")
    assert vocab["time"] == {"gaps": True, "stays": True, "edges": list(time_bins.EDGES)}
    unseen = {i for i, c in enumerate(counts) if c == 0}  # time tokens no training record had
    assert unseen and len(counts) == 2 * time_bins.N_BINS
    at_64 = generate(timed_model, tmp_path / "a.jsonl", "--batch-size", "64")
    at_256 = generate(timed_model, tmp_path / "b.jsonl", "--batch-size", "256")
    assert at_64 == at_256
    records = [json.loads(line) for line in at_64.decode().splitlines()]
    assert len(records) == N
    for r in records:
        assert len(r["visit_days"]) == len(r["visits"]) == len(r["los_days"]) and r["visit_days"][0] == 0
        assert all(b >= a for a, b in zip(r["visit_days"], r["visit_days"][1:])) and min(r["los_days"]) >= 0
    assert sum(len(r["visits"]) > 1 for r in records) > 10  # gaps were drawn, not only first visits
    stays_drawn = {int(b) + time_bins.N_BINS for r in records for b in time_bins.bin_of(r["los_days"])}
    gaps_drawn = {int(b) for r in records for b in time_bins.bin_of([y - x for x, y in zip(r["visit_days"], r["visit_days"][1:])])}
    assert gaps_drawn and not (stays_drawn | gaps_drawn) & unseen  # never a bin training did not have
    assert len({d for r in records for d in r["los_days"]}) > 5  # stays spread over days, not one value
    # shards of the cohort, generated apart in other batch sizes, are the same patients with the same days
    bundle = load_checkpoint(timed_model, "cpu")
    spec = fill_demographics({}, read_population(timed_model)).body  # what generate does without age and sex
    shards = [p.to_dict() for lo, hi, b in ((0, 100, 7), (100, 250, 64), (250, N, 256))
              for p in generate_cohort(bundle, spec, N, 5, start=lo, stop=hi, batch_size=b)]
    assert shards == records


def test_the_exports_of_a_timed_cohort_read_back_to_its_times(timed_model, tmp_path):
    generate(timed_model, tmp_path / "c.jsonl")
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    kept = [r for r in records if r["visits"]]
    for fmt, name in (("mimic3", "m3.zip"), ("mimic4", "m4.zip"), ("csv", "c.csv")):
        generate(timed_model, tmp_path / name, "--format", fmt, "--start-date", "2031-07-15")
        if fmt != "csv":
            with zipfile.ZipFile(tmp_path / name) as zf:
                zf.extractall(tmp_path / fmt)
            back = load_patients(tmp_path / fmt)
        else:
            back = load_patients(tmp_path / name, format="long")
        back = sorted(back, key=lambda p: (len(p.id), p.id))  # export order (integer SUBJECT_IDs load as strings)
        assert [(p.visits, p.visit_days, p.los_days) for p in back] == \
            [(r["visits"], r["visit_days"], r["los_days"]) for r in kept], fmt
        assert {p.start_date.isoformat() for p in back} == {"2031-07-15"}


def test_data_without_dates_trains_and_generates_records_without_times(shared_data, tmp_path):
    # the MIMIC-III demo as a long file whose visit_time is the visit's number in the record
    src = tmp_path / "numbered.csv"
    with src.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "visit_id", "visit_time", "code", "age", "sex"])
        for p in load_patients(shared_data / "mimic3-demo"):
            for k, visit in enumerate(p.visits):
                for code in visit:
                    w.writerow([p.id, f"{p.id}-{k}", k + 1, code, p.age, p.sex])
    assert all(p.visit_days is None for p in load_patients(src))
    model = tmp_path / "model"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["-q", "train", "--data", str(src), "--preset", "tiny", "--epochs", "1", "--seed", "0",
                     "--out", str(model), "--device", "cpu"]) == 0
    assert any("the model learns no timeline" in str(w.message) for w in caught)
    assert "time" not in json.loads((model / "vocab.json").read_text())
    out = tmp_path / "c.jsonl"
    assert main(["-q", "generate", "--model", str(model), "--n", "60", "--device", "cpu", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(set(r) == {"patient_id", "age", "sex", "visits"} for r in records)
    report = tmp_path / "r.json"
    assert main(["-q", "evaluate", "--synthetic", str(out), "--real", str(shared_data / "mimic3-demo"),
                 "--out", str(report)]) == 0
    timeline = json.loads(report.read_text())["timeline"]
    assert timeline["learned"] is False and "did not learn a timeline" in timeline["note"]
