"""The newcomer's stumbles of the CLI (issue 13): --version, defaults in --help, one log-level spelling,
-q, `evaluate` on every format `generate` writes and `--fail-on`, `train` refusing epochs 0 and an
existing model without --force. Each test failed before its fix."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from promptehr.cli.main import build_parser, main
from promptehr.model.data import load_patients
from promptehr.model.data.export import write_export
from promptehr.model.nn import checkpoint

REPO = Path(__file__).resolve().parents[1]


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("promptehr ") and out.split()[1][0].isdigit()  # the installed version, e.g. 0.1.0


def test_help_shows_defaults():
    sub = build_parser()._subparsers._group_actions[0].choices  # argparse keeps them there
    train_help = sub["train"].format_help()
    assert "(default: small)" in train_help and "(default: hierarchical)" in train_help
    assert "(default: None)" not in train_help  # an option without a default says nothing
    # a switch says nothing either: --no-time's stored default (True) read as "no time by default"
    assert "(default: True)" not in train_help and "(default: False)" not in train_help


def test_one_spelling_of_log_level(capsys):
    parser = build_parser()
    assert parser.parse_args(["worker", "--log-level", "debug"]).log_level == "debug"
    assert parser.parse_args(["serve", "--log-level", "debug"]).log_level == "debug"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["worker", "--loglevel", "debug"])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def demo_patients(shared_data):
    return load_patients(shared_data / "mimic3-demo")


@pytest.fixture(scope="module")
def cohort_files(demo_patients, tmp_path_factory):
    """The MIMIC-III demo's own patients in every format `promptehr generate` writes."""
    d = tmp_path_factory.mktemp("cohort")
    files = {}
    for fmt, name in (("jsonl", "c.jsonl"), ("csv", "c.csv"), ("mimic3", "c3.zip"), ("mimic4", "c4.zip")):
        write_export(demo_patients, d / name, fmt)
        files[fmt] = d / name
    return files


def evaluate(shared_data, synthetic, out, *extra) -> int:
    return main(["-q", "evaluate", "--synthetic", str(synthetic), "--real", str(shared_data / "mimic3-demo"),
                 "--subsamples", "1", "--out", str(out), *extra])


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "mimic3", "mimic4"])
def test_evaluate_reads_what_generate_writes(shared_data, cohort_files, demo_patients, tmp_path, fmt, capsys):
    assert evaluate(shared_data, cohort_files[fmt], tmp_path / "r.json") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["data"]["synthetic"]["patients"] == len(demo_patients)
    assert report["data"]["synthetic"]["visits"] == sum(len(p.visits) for p in demo_patients)


def test_evaluate_refuses_other_files_in_one_line(shared_data, cohort_files, tmp_path, capsys):
    parquet = tmp_path / "c.parquet"
    parquet.write_bytes(b"PAR1")
    assert evaluate(shared_data, parquet, tmp_path / "r.json") == 2
    assert "expected a .jsonl, .csv or .zip" in one_error_line(capsys)
    disguised = tmp_path / "zip.jsonl"  # a zip under a JSONL name gave a UnicodeDecodeError traceback
    disguised.write_bytes(cohort_files["mimic3"].read_bytes())
    assert evaluate(shared_data, disguised, tmp_path / "r.json") == 2
    assert "UTF-8 text" in one_error_line(capsys)
    not_a_zip = tmp_path / "c.zip"
    not_a_zip.write_text("no")
    assert evaluate(shared_data, not_a_zip, tmp_path / "r.json") == 2
    assert "a zip file" in one_error_line(capsys)
    assert not (tmp_path / "r.json").exists()


def test_evaluate_fail_on(shared_data, cohort_files, tmp_path, capsys):
    """The real patients as the 'synthetic' cohort copy the training split: privacy fails, so
    --fail-on privacy gives exit 1 (it gave 0 whatever failed), and an unknown section is exit 2."""
    assert evaluate(shared_data, cohort_files["jsonl"], tmp_path / "r.json", "--fail-on", "validity,privacy") == 1
    assert json.loads((tmp_path / "r.json").read_text())["passed"]["privacy"] is False
    assert "failed: privacy" in capsys.readouterr().err
    assert evaluate(shared_data, cohort_files["jsonl"], tmp_path / "r.json", "--fail-on", "validity") == 0
    capsys.readouterr()
    assert evaluate(shared_data, cohort_files["jsonl"], tmp_path / "r.json", "--fail-on", "speed") == 2
    assert "unknown section speed" in one_error_line(capsys)


def test_evaluate_shows_progress_and_quiet_hides_it(shared_data, cohort_files, tmp_path):
    def run(*flags):
        return subprocess.run([sys.executable, "-m", "promptehr.cli", *flags, "evaluate", "--synthetic", str(cohort_files["jsonl"]),
                               "--real", str(shared_data / "mimic3-demo"), "--subsamples", "1",
                               "--out", str(tmp_path / "r.json")], cwd=REPO, capture_output=True, text=True, timeout=300,
                              check=False)

    loud, quiet = run(), run("-q")
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "evaluate:" in loud.stderr and "section" in loud.stderr  # the bar over the report's sections
    assert quiet.stderr == ""


def test_train_refuses_zero_epochs(shared_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(shared_data / "mimic3-demo"), "--epochs", "0", "--out", str(tmp_path / "m")])
    assert e.value.code == 2
    assert "--epochs: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_train_refuses_a_time_weight_outside_0_1(shared_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(shared_data / "mimic3-demo"), "--time-weight", "0", "--out", str(tmp_path / "m")])
    assert e.value.code == 2
    assert "--time-weight: must be above 0 and at most 1, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_train_keeps_an_existing_model_without_force(shared_data, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--max-steps", "1",
            "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    before = (out / checkpoint.MANIFEST).read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "pass --force" in one_error_line(capsys)
    assert (out / checkpoint.MANIFEST).read_bytes() == before
    assert main([*args, "--force", "--seed", "1"]) == 0
    assert (out / checkpoint.MANIFEST).read_bytes() != before  # another seed: other weights, other hashes


def test_zip_members_outside_the_tables_are_not_written(shared_data, cohort_files, tmp_path):
    """Only the three tables of a cohort zip are unpacked (by name), so a member named ../x cannot land
    anywhere."""
    z = tmp_path / "c.zip"
    with zipfile.ZipFile(cohort_files["mimic3"]) as src, zipfile.ZipFile(z, "w") as dst:
        for m in src.infolist():
            dst.writestr(m.filename, src.read(m))
        dst.writestr("../escaped.txt", "x")
    assert evaluate(shared_data, z, tmp_path / "r.json") == 0
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_train_refuses_data_without_age_or_sex(tmp_path, capsys):
    """A long-format file without age and sex trained to a NaN model and reported success."""
    data = tmp_path / "x.csv"
    data.write_text("patient_id,visit_id,visit_time,code\n" + "".join(
        f"p{i},v{i}a,1,4019\np{i},v{i}b,2,25000\n" for i in range(40)))
    base = ["train", "--data", str(data), "--preset", "tiny", "--max-steps", "2", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "m")]) == 2
    line = one_error_line(capsys)
    assert "has no age" in line and "--default-age" in line
    assert not (tmp_path / "m").exists()
    assert main([*base, "--default-age", "60", "--out", str(tmp_path / "m")]) == 2
    assert "has sex 'U': expected M or F" in one_error_line(capsys)
    assert main([*base, "--default-age", "60", "--default-sex", "F", "--out", str(tmp_path / "m")]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"]["age_mean"] == 60.0


def test_a_nan_model_is_refused_at_load(shared_data, tmp_path, capsys):
    """`generate` wrote junk from a model whose every tensor was NaN; loading it now names the problem."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path / "m"
    assert main(["train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--max-steps", "1",
                 "--device", "cpu", "--out", str(out)]) == 0
    tensors = {k: torch.full_like(t, float("nan")) if t.is_floating_point() else t
               for k, t in load_file(str(out / checkpoint.WEIGHTS)).items()}
    save_file(tensors, str(out / checkpoint.WEIGHTS))
    checkpoint.write_manifest(out)  # as if training itself had written it
    capsys.readouterr()
    assert main(["generate", "--model", str(out), "--n", "5", "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "NaN or infinite" in one_error_line(capsys)
    assert not (tmp_path / "c.jsonl").exists()


@pytest.mark.parametrize("out, fmt, says", [
    ("x.parquet", None, "unknown file type .parquet"),   # wrote JSONL under that name
    ("x.csv.gz", None, "unknown file type .gz"),         # wrote plain CSV under that name
    ("x", None, "(no suffix)"),
    ("x.jsonl", "csv", "--format csv writes a .csv file"),
    ("x.csv", "mimic4", "--format mimic4 writes a .zip file"),
])
def test_generate_out_must_name_what_it_writes(out, fmt, says, tmp_path, capsys):
    """Checked before the model is even read: the folder here holds no checkpoint at all."""
    args = ["generate", "--model", str(tmp_path), "--n", "5", "--out", str(tmp_path / out)]
    assert main([*args, *(["--format", fmt] if fmt else [])]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / out).exists()


@pytest.mark.slow  # trains a tiny model for a few steps
def test_generate_quiet_hides_its_progress_bar(shared_data, tmp_path):
    """-q: errors only. generate drew its bar whatever -q said (train and evaluate honoured it)."""
    model = tmp_path / "m"
    assert main(["-q", "train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--max-steps", "2",
                 "--device", "cpu", "--out", str(model)]) == 0

    def run(*flags):
        return subprocess.run([sys.executable, "-m", "promptehr.cli", *flags, "generate", "--model", str(model), "--n", "20",
                               "--threads", "1", "--out", str(tmp_path / "c.jsonl")], cwd=REPO, capture_output=True,
                              text=True, timeout=300, check=False)

    loud, quiet = run(), run("-q")
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "patient/s" in loud.stderr  # the bar
    assert "patient/s" not in quiet.stderr, quiet.stderr
