"""The notebook API, promptehr.Synthesizer, on the MIMIC-III demo with a tiny model (one epoch): fit from a
path and from a DataFrame, sample (the CSV `promptehr generate` writes, byte for byte), sample_records,
evaluate (the JSON and page `promptehr evaluate` writes), save/load, a `promptehr train` checkpoint, and
the errors (before fit, unknown options, a bad DataFrame column)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

import promptehr
from promptehr.cli.main import main
from promptehr.frames import read_long_csv, records_frame
from promptehr.model.data import load_patients
from promptehr.model.errors import DataError

OPTIONS = {"epochs": 1, "seed": 0, "device": "cpu"}
SPEC = {"age": 70, "female": 0.4, "seed": 3}


@pytest.fixture(scope="module")
def demo(shared_data):
    return shared_data / "mimic3-demo"


@pytest.fixture(scope="module")
def synth(demo, one_thread):
    return promptehr.Synthesizer("tiny", **OPTIONS).fit(demo)


@pytest.fixture(scope="module")
def saved(synth, tmp_path_factory):
    return synth.save(tmp_path_factory.mktemp("saved") / "model")


def cli_generate(model_dir, out, *args) -> None:
    assert main(["-q", "generate", "--model", str(model_dir), "--out", str(out), "--device", "cpu", *args]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, args", [
    (SPEC, ["--n", "40", "--age", "70", "--female", "0.4", "--seed", "3"]),
    ({}, ["--n", "40"]),  # age and sex absent: the model's defaults on both sides
    ({"age": {"distribution": "histogram", "bins": [40, 60, 80], "weights": [1, 3]}, "required_codes": ["4019"],
      "seed": 5, "temperature": 0.8},
     ["--n", "40", "--age-bins", "40", "60", "80", "--age-weights", "1", "3", "--require", "4019", "--seed", "5",
      "--temperature", "0.8"]),
])
def test_sample_is_the_csv_generate_writes(synth, saved, tmp_path, kwargs, args):
    out = tmp_path / "cohort.csv"
    cli_generate(saved, out, *args)
    frame = synth.sample(40, **kwargs)
    # the demo model learned time: visit_time and visit_end are its generated dates, from the default start date
    assert list(frame.columns) == ["patient_id", "visit_id", "visit_time", "visit_end", "code", "age", "sex"]
    assert frame.equals(read_long_csv(out))
    assert frame.to_csv(index=False).encode() == out.read_bytes()
    assert frame["patient_id"].nunique() == 40


@pytest.mark.slow
def test_sample_records_are_the_sampled_patients(synth):
    records = synth.sample_records(25, **SPEC)
    assert all(isinstance(p, promptehr.Patient) for p in records) and len(records) == 25
    assert {p.age for p in records} == {70.0}
    assert records_frame(records, ["icd9"]).equals(synth.sample(25, **SPEC))
    assert synth.sample(25, **{**SPEC, "seed": 4}).equals(synth.sample(25, **SPEC)) is False


@pytest.mark.slow
def test_fit_from_a_dataframe_is_fit_from_the_files(synth, demo, one_thread):
    """The demo as a long-format DataFrame (its own export) loads to the same patients, so the same split
    and the same training: the same model and cohort."""
    frame = records_frame(load_patients(demo), ["icd9"])
    from_frame = promptehr.Synthesizer("tiny", **OPTIONS).fit(frame)
    assert from_frame.sample(30, **SPEC).equals(synth.sample(30, **SPEC))
    assert [p.id for p in from_frame._holdout] == [p.id for p in synth._holdout]


@pytest.mark.slow
def test_evaluate_is_the_report_evaluate_writes(synth, saved, demo, tmp_path):
    cohort = synth.sample(60, seed=1)
    cohort.to_csv(tmp_path / "cohort.csv", index=False)
    rc = main(["-q", "evaluate", "--synthetic", str(tmp_path / "cohort.csv"), "--real", str(demo), "--model", str(saved),
               "--out", str(tmp_path / "cli.json"), "--html", str(tmp_path / "cli.html")])
    assert rc in (0, 1)
    report = synth.evaluate(cohort, model_scores=True)
    ours, cli = json.loads(report.to_json(tmp_path / "ours.json")), json.loads((tmp_path / "cli.json").read_text())
    assert json.loads((tmp_path / "ours.json").read_text()) == ours
    for d in (ours, cli):
        del d["created_at"], d["seconds"]
    assert ours == cli
    assert report.passed is cli["verdict"]["passed"] and isinstance(report.passed, bool)
    page = report.to_html(tmp_path / "ours.html")
    assert page.startswith("<!DOCTYPE html>") and (tmp_path / "ours.html").read_text() == page
    assert page.replace(report.report.created_at, "") == (tmp_path / "cli.html").read_text().replace(cli_created(tmp_path), "")


def cli_created(tmp_path) -> str:
    return json.loads((tmp_path / "cli.json").read_text())["created_at"]


@pytest.mark.slow
def test_summary_has_one_row_per_measure(synth):
    report = synth.evaluate(synth.sample_records(40, seed=2))  # a list of Patient works as well as a DataFrame
    summary = report.summary()
    assert list(summary.columns) == ["section", "measure", "value", "limit", "verdict"]
    timeline = report.report.timeline.measures if report.report.timeline is not None else {}  # schema 1.3
    assert len(summary) == sum(len(getattr(report.report, s)) for s in ("fidelity", "validity", "privacy", "utility")) + len(timeline)
    assert set(summary["verdict"]) <= {"pass", "fail", "n/a"}
    row = summary.set_index(["section", "measure"]).loc[("fidelity", "unigram_r2")]
    assert row["value"] == report.report.fidelity["unigram_r2"].value
    assert report.passed == all(report.sections.values())
    assert report.report.data.holdout.patients == len(synth._holdout)


@pytest.mark.slow
def test_evaluate_reads_a_cohort_file_and_real_data(synth, saved, demo, tmp_path):
    cli_generate(saved, tmp_path / "c.jsonl", "--n", "30", "--seed", "2")
    from_file = synth.evaluate(tmp_path / "c.jsonl")
    loaded = promptehr.Synthesizer.load(saved, device="cpu")
    with pytest.raises(ValueError, match="pass real=DATA"):
        loaded.evaluate(tmp_path / "c.jsonl")
    given = loaded.evaluate(tmp_path / "c.jsonl", real=demo)
    assert given.to_dict()["fidelity"] == from_file.to_dict()["fidelity"]


@pytest.mark.slow
def test_save_load_round_trip(synth, saved, tmp_path):
    again = promptehr.Synthesizer.load(saved, device="cpu")
    assert again.sample(30, **SPEC).equals(synth.sample(30, **SPEC))
    assert again.get_params()["preset"] == "tiny" and again.get_params()["epochs"] == 1
    with pytest.raises(FileExistsError, match="overwrite=True"):
        synth.save(saved)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        synth.save(tmp_path)
    synth.save(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # overwrite replaces the model's files only
    assert promptehr.Synthesizer.load(tmp_path, device="cpu").sample(5, seed=9).equals(synth.sample(5, seed=9))


@pytest.mark.slow
def test_a_promptehr_train_checkpoint_loads_and_matches_fit(synth, demo, tmp_path, one_thread):
    """`promptehr train` with the same options trains the same model as fit (the same code)."""
    out = tmp_path / "model"
    assert main(["-q", "train", "--data", str(demo), "--preset", "tiny", "--epochs", "1", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert promptehr.Synthesizer.load(out, device="cpu").sample(30, **SPEC).equals(synth.sample(30, **SPEC))


@pytest.mark.slow
def test_bad_sample_arguments_name_the_field(synth):
    with pytest.raises(ValueError, match="n must be a whole number"):
        synth.sample(0)
    with pytest.raises(ValueError, match="unknown sampling field"):
        synth.sample(5, temprature=0.5)
    with pytest.raises(ValueError, match="female share"):
        synth.sample(5, female=1.5)
    with pytest.raises(ValueError, match="not in the model's vocabulary|vocabulary"):
        synth.sample(5, required_codes="icd10:I10")
    with pytest.raises(TypeError, match="age: expected"):
        synth.sample(5, age="old")


def test_unfitted_synthesizer_says_so():
    s = promptehr.Synthesizer("tiny")
    for call in (lambda: s.sample(5), lambda: s.sample_records(5), lambda: s.evaluate([]), lambda: s.save("x")):
        with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
            call()


def test_unknown_and_bad_options_are_named():
    with pytest.raises(TypeError, match="unknown option.*epoch, lerning_rate"):
        promptehr.Synthesizer("tiny", epoch=1, lerning_rate=0.1)
    with pytest.raises(ValueError, match="preset='huge'"):
        promptehr.Synthesizer("huge")
    with pytest.raises(ValueError, match="epochs=0"):
        promptehr.Synthesizer("tiny", epochs=0)
    assert repr(promptehr.Synthesizer("tiny", epochs=2)) == "Synthesizer('tiny', epochs=2)"


def frame(**overrides) -> pd.DataFrame:
    d = {"patient_id": ["1", "1", "2"], "visit_id": ["a", "a", "b"], "visit_time": ["2010-01-01"] * 3,
         "code": ["4019", "25000", "4280"], "age": [60, 60, 70], "sex": ["F", "F", "M"], **overrides}
    return pd.DataFrame({k: v for k, v in d.items() if v is not None})


@pytest.mark.parametrize("bad, message", [
    ({"visit_time": None}, r"DataFrame, column 'visit_time': missing column"),
    ({"age": [60, "sixty", 70]}, r"DataFrame, column 'age': row 1: not a number"),
    ({"sex": ["F", "F", "X"]}, r"DataFrame, column 'sex': row 2: unknown sex code"),
    ({"code": ["4019", "4O19", "4280"]}, r"DataFrame, column 'code': row 1: .*'4O19'"),
])
def test_a_bad_dataframe_names_its_column_and_row(bad, message):
    with pytest.raises(DataError, match=message):
        promptehr.Synthesizer("tiny", epochs=1).fit(frame(**bad))


def test_a_dataframe_error_names_the_index_label_too():
    bad = frame(age=[60, "sixty", 70]).set_axis([10, 11, 12])
    with pytest.raises(DataError, match=r"^DataFrame, column 'age': row 1 \(index 11\): not a number"):
        promptehr.Synthesizer("tiny").fit(bad)
    bad.index = ["a", "b", "c"]
    with pytest.raises(DataError, match=r"row 1 \(index 'b'\)"):
        promptehr.Synthesizer("tiny").fit(bad)


def test_a_dataframe_without_age_needs_a_default_age():
    with pytest.raises(DataError, match="has no age"):
        promptehr.Synthesizer("tiny").fit(frame(age=None))
    with pytest.raises(TypeError, match="expected a pandas DataFrame"):
        from promptehr.frames import frame_patients

        frame_patients({"patient_id": ["1"]})


@pytest.mark.slow
def test_a_checkpoint_population_is_carried_and_is_the_default(synth, saved, tmp_path):
    """save and load copy every file the manifest lists (population.json too), and an absent age and
    sex then come from that population."""
    from promptehr.model.generation.population import population_of
    from promptehr.model.nn.checkpoint import write_extra
    from promptehr.model.patient import Patient

    folder = synth.save(tmp_path / "with-population")
    thirties = [Patient(id=str(i), age=30 + i % 10, sex="M", visits=[["4019"]]) for i in range(20)]
    write_extra(folder, "population.json", population_of(thirties).to_dict())
    again = promptehr.Synthesizer.load(folder, device="cpu")
    records = again.sample_records(20, seed=1)
    assert all(30 <= p.age < 40 and p.sex == "M" for p in records)
    assert (again.save(tmp_path / "copy") / "population.json").read_bytes() == (folder / "population.json").read_bytes()
