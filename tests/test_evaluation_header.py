"""The report's header: readable generator and seeds, one wording for verdicts, an overall verdict (schema 1.2)."""
from __future__ import annotations

import json

import pytest

from promptehr.cli.main import main
from promptehr.model.data import load_patients
from promptehr.model.evaluation import SCHEMA_VERSION, build_report
from promptehr.model.evaluation.html import render_html
from promptehr.model.evaluation.schema import Report
from promptehr.model.evaluation.text import summary_lines
from promptehr.model.split import split_patients

GENERATOR = {"command": "promptehr demo", "preset": "tiny", "epochs_run": 2, "data": ["mimic3-demo"],
             "spec": {"sex": {"female": 0.55}, "required_codes": []}}


@pytest.fixture(scope="module")
def report(shared_data) -> Report:
    """MIMIC-III demo: its validation split plays the cohort against train, the holdout is the real sample."""
    train, validation, holdout = split_patients(load_patients(shared_data / "mimic3-demo"), 0)
    return build_report(validation, train, holdout, generator=GENERATOR, seeds={"cohort": 3, "n_patients": 13},
                        split_seed=0)


def test_html_header_reads_as_key_value_with_the_verdict_first(report):
    page = render_html(report)
    assert "generator: promptehr demo (preset=tiny, epochs_run=2, data=[mimic3-demo], spec.sex.female=0.55, " \
           "spec.required_codes=[])" in page
    assert "seeds: cohort=3, n_patients=13" in page
    assert "{&#x27;" not in page and "{'" not in page, "no raw dicts"
    failed = [s for s, ok in report.passed.items() if not ok]
    expected = f"verdict: FAIL (failed: {', '.join(failed)})" if failed else "verdict: PASS (every section passes)"
    assert page.index(expected) < page.index("<h2>Data"), "the verdict is at the top"
    assert "<th>real sample (holdout)</th><th>real sample verdict</th>" in page and "limit passes" not in page


def test_empty_seeds_and_generator_are_left_out(report):
    bare = report.model_copy(update={"seeds": {}, "generator": None})
    page = render_html(bare)
    assert "seeds:" not in page and "generator:" not in page
    assert not any(line.startswith(("seeds:", "generator:")) for line in summary_lines(bare))


def test_verdict_is_in_the_json_and_names_the_failing_sections(report):
    d = json.loads(report.to_json())
    assert d["schema_version"] == SCHEMA_VERSION == "1.3"
    failed = [s for s, ok in d["passed"].items() if not ok]
    assert failed, "this small data fails some section (the test needs one)"
    assert d["verdict"] == {"passed": False, "failed_sections": failed}
    passing = report.model_copy(update={"passed": dict.fromkeys(d["passed"], True), "verdict": None})
    assert passing.overall().model_dump() == {"passed": True, "failed_sections": []}


def test_a_1_1_report_still_reads_and_gets_its_verdict_from_its_sections(report):
    old = json.loads(report.to_json())
    del old["verdict"], old["warnings"]
    old["schema_version"] = "1.1"
    again = Report.model_validate(old)
    assert again.verdict is None and again.warnings == []
    assert again.overall() == report.verdict
    assert "verdict: FAIL" in render_html(again)


def test_text_summary_starts_with_the_verdict_and_uses_the_same_words(report):
    lines = summary_lines(report)
    assert lines[0].startswith("verdict: FAIL (failed: ")
    assert lines[1] == "generator: promptehr demo (preset=tiny, epochs_run=2, data=[mimic3-demo], spec.sex.female=0.55, " \
                       "spec.required_codes=[])"
    assert lines[2] == "seeds: cohort=3, n_patients=13"
    assert lines[3].split("  ")[0] == "section" and "real sample verdict" in lines[3] and "limit" not in lines[3]
    row = next(line.split() for line in lines if line.split()[:2] == ["fidelity", "unigram_r2"])
    m = report.fidelity["unigram_r2"]
    assert row[3] == ">=0.8" and row[4] == ("pass" if m.passed else "FAIL") and float(row[5]) == float(f"{m.limit:.4g}")


def test_cli_evaluate_prints_the_verdict(tmp_path, shared_data, capsys):
    cohort = tmp_path / "cohort.jsonl"
    patients = load_patients(shared_data / "mimic3-demo")[:30]
    cohort.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in patients))
    generator = tmp_path / "generator.json"
    generator.write_text(json.dumps({"name": "copies", "sampling": {"top_p": 0.9}}))
    out = tmp_path / "report.json"
    assert main(["evaluate", "--synthetic", str(cohort), "--real", str(shared_data / "mimic3-demo"), "--out", str(out),
                 "--generator", str(generator)]) == 0
    captured = capsys.readouterr()
    line = json.loads(captured.out.strip().splitlines()[-1])
    written = json.loads(out.read_text())
    assert line["verdict"] == written["verdict"] and set(written["verdict"]) == {"passed", "failed_sections"}
    assert "verdict: " in captured.err and "generator: copies (sampling.top_p=0.9)" in captured.err
