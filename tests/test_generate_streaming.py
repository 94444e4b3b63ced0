"""`promptehr generate` streams: patients are made a chunk at a time (model.generation.cohort.iter_cohort)
and written as they come (cli.generate.write_streamed over model.data.export), so memory is bounded by a
chunk, not by the cohort. Peak memory itself is measured by bench/bench_generate_memory.py, not here."""
from __future__ import annotations

import json

import pytest

from promptehr.cli.generate import write_streamed
from promptehr.cli.main import main
from promptehr.model.data.export import export_bytes
from promptehr.model.generation.cohort import CohortSpec, generate_cohort, iter_cohort
from promptehr.model.generation.population import resolve_demographics
from promptehr.model.nn.checkpoint import load_checkpoint
from tests.test_vocab import toy_patients

FORMATS = ["jsonl", "csv", "mimic3", "mimic4"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_appears_before_the_iterator_ends(tmp_path, fmt):
    patients = toy_patients(3000, seed=5)
    out = tmp_path / f"cohort.{fmt}"
    partial = tmp_path / f".cohort.{fmt}.partial"
    seen_while_running = []

    def lazy():
        for i, p in enumerate(patients):
            if i == len(patients) - 1:  # the writer has not seen the last patient yet
                seen_while_running.append((partial.stat().st_size, out.exists()))
            yield p

    count, size = write_streamed(lazy(), out, fmt, ["icd9"])
    (written, final_there), = seen_while_running
    assert written > 0 and not final_there  # bytes on disk before the last patient, under the partial name
    assert count == len(patients) and size == out.stat().st_size
    assert out.read_bytes() == b"".join(export_bytes(patients, fmt))  # the bytes of the one-go export
    assert not partial.exists()


def test_a_failed_stream_leaves_no_file(tmp_path):
    out = tmp_path / "cohort.jsonl"

    def failing():
        yield from toy_patients(3000, seed=1)
        raise RuntimeError("sampler died")

    with pytest.raises(RuntimeError, match="sampler died"):
        write_streamed(failing(), out, "jsonl", ["icd9"])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, shared_data, one_thread):
    out = tmp_path_factory.mktemp("stream") / "model"
    assert main(["train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--epochs", "1", "--seed", "0",
                 "--out", str(out), "--device", "cpu"]) == 0
    return out


@pytest.mark.slow  # the fixture trains a tiny model
def test_iter_cohort_generates_a_chunk_at_a_time(model_dir):
    bundle = load_checkpoint(model_dir, "cpu")
    spec = CohortSpec.from_dict({"age": {"distribution": "normal", "mean": 50, "sd": 20}})
    reported = []
    stream = iter_cohort(bundle, spec, 100, seed=7, batch_size=16, chunk=32, progress=lambda done, total: reported.append(done))
    assert reported == []  # nothing is sampled before the first patient is asked for
    first = next(stream)
    assert 0 < max(reported) <= 32  # one chunk sampled, not the cohort
    rest = list(stream)
    assert max(reported) == 100
    whole = generate_cohort(bundle, spec, 100, seed=7, batch_size=16)
    assert [p.to_dict() for p in [first, *rest]] == [p.to_dict() for p in whole]


@pytest.mark.slow
def test_iter_cohort_refuses_a_bad_range_before_any_patient(model_dir):
    bundle = load_checkpoint(model_dir, "cpu")
    with pytest.raises(ValueError, match="not inside"):
        iter_cohort(bundle, CohortSpec(), 10, seed=0, start=5, stop=20)


@pytest.mark.slow
def test_generate_writes_in_chunks_the_bytes_of_one_go(model_dir, tmp_path):
    out = tmp_path / "c.jsonl"
    # batch 8: chunks of 64 patients, so 300 patients take five sampler calls
    assert main(["generate", "--model", str(model_dir), "--n", "300", "--seed", "2", "--batch-size", "8",
                 "--threads", "1", "--out", str(out)]) == 0
    learned = CohortSpec.from_dict(resolve_demographics({}, model_dir).body)  # no age/sex flags: the training population
    whole = generate_cohort(load_checkpoint(model_dir, "cpu"), learned, 300, seed=2, batch_size=8)
    assert out.read_bytes() == b"".join(export_bytes(whole, "jsonl"))
    assert [json.loads(line)["patient_id"] for line in out.read_text().splitlines()] == [p.id for p in whole]
