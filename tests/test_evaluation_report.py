"""The whole report: names and schema, equal-size subsamples, copying cohorts fail privacy, model scores, HTML, CLI."""
import json
import re

import numpy as np
import pytest

from promptehr.cli.main import main
from promptehr.model.evaluation import SCHEMA_VERSION, build_report
from promptehr.model.evaluation.html import render_html
from promptehr.model.evaluation.model_scores import reconstruction_jaccard, split_half
from promptehr.model.evaluation.schema import Report
from promptehr.model.patient import Patient

CODES = ["4019", "25000", "4280", "41401", "486", "5990", "42731", "496", "2724", "V5861", "5849", "2859", "2449", "53081"]
NAMES = {
    "fidelity": {"unigram_r2", "cooccurrence_r2", "transition_r2", "category_r2", "js_divergence", "top100_overlap",
                 "codes_per_visit_mean", "visits_per_patient_mean"},
    "validity": {"sex_violation_rate", "age_violation_rate", "duplicate_code_rate", "unknown_code_rate"},
    "privacy": {"exact_copy_rate", "exact_copy_rate_multivisit", "mia_auc", "nnaar", "closer_to_train_share"},
    "utility": {"tstr_auroc"},
}


def cohort(n, seed, prefix):
    rng = np.random.default_rng(seed)
    return [Patient(f"{prefix}{i}", float(rng.integers(20, 90)), "FM"[i % 2],
                    [[str(c) for c in rng.choice(CODES, rng.integers(2, 6), replace=False)] for _ in range(rng.integers(1, 4))])
            for i in range(n)]


@pytest.fixture(scope="module")
def cohorts():
    return cohort(400, 0, "t"), cohort(100, 1, "h")


def test_sections_have_the_design_names_and_shape(cohorts):
    train, holdout = cohorts
    report = build_report(cohort(300, 2, "s"), train, holdout)
    d = json.loads(report.to_json())
    assert d["schema_version"] == SCHEMA_VERSION
    assert d["model"] is None
    assert d["data"]["train"] == {"patients": 400, "visits": sum(len(p.visits) for p in train),
                                  "codes": sum(p.n_codes for p in train), "distinct_codes": len(CODES)}
    for section, names in NAMES.items():
        assert names <= set(d[section]), section
        for name, m in d[section].items():
            assert {"value", "limit", "threshold", "pass"} <= set(m), (section, name)
    assert d["utility"]["tstr_auroc"]["limit"] == d["utility"]["trtr_auroc"]["value"]
    equal = d["utility"]["trtr_equal_size_auroc"]  # synthetic (300) is smaller than train (400): a sample of 300
    assert equal["train_patients"] == 300 and equal["full"] == d["utility"]["trtr_auroc"]["value"]
    assert equal["value"] is not None and equal["value"] != equal["full"]
    # synthetic (300) is larger than the holdout (100): scored on 5 subsamples of 100, and whole
    uni = d["fidelity"]["unigram_r2"]
    assert uni["n"] == 5 and uni["spread"] > 0 and uni["full"] > uni["value"]
    assert Report.model_validate(d).fidelity["unigram_r2"].passed == uni["pass"]  # "pass" round-trips


def test_a_cohort_of_train_copies_fails_privacy(cohorts):
    train, holdout = cohorts
    copies = [Patient(f"s{i}", p.age, p.sex, p.visits) for i, p in enumerate(train)]
    report = build_report(copies, train, holdout)
    assert report.privacy["exact_copy_rate"].value == 1.0
    assert report.privacy["exact_copy_rate_multivisit"].value == 1.0
    assert report.privacy["mia_auc"].value > 0.8
    assert report.passed["privacy"] is False
    # the copies are the training data: fidelity is perfect on the whole cohort
    assert report.fidelity["unigram_r2"].full == pytest.approx(1.0)
    assert report.fidelity["js_divergence"].full == pytest.approx(0.0, abs=1e-12)


def test_an_independent_cohort_passes_privacy(cohorts):
    train, holdout = cohorts
    report = build_report(cohort(400, 5, "s"), train, holdout)
    assert report.privacy["exact_copy_rate_multivisit"].value < 0.05
    assert abs(report.privacy["mia_auc"].value - 0.5) < 0.1


class FakeScorer:
    """Completes each record with the true second half (perfect) or nothing."""

    def __init__(self, truth, perfect):
        self.truth = {p.id: p for p in truth}
        self.perfect = perfect

    def perplexity(self, patients):
        return {"masked": 12.5, "next_visit": 30.0, "masked_median_of_medians": 9.0}

    def reconstruct(self, prefixes):
        out = []
        for p in prefixes:
            rest = split_half(self.truth[p.id])[1] if self.perfect else []
            out.append(Patient(p.id, p.age, p.sex, [*p.visits, rest] if rest else p.visits))
        return out


def test_model_section_with_a_scorer(cohorts):
    train, holdout = cohorts
    report = build_report(cohort(100, 2, "s"), train, holdout, model_scorer=FakeScorer(holdout, True),
                          generator={"model": "tiny", "temperature": 1.0}, seeds={"cohort": 7}, split_seed=3)
    d = report.to_dict()
    assert d["model"]["perplexity"]["masked"] == 12.5
    assert d["model"]["reconstruction_jaccard"] == pytest.approx(1.0)
    assert d["generator"]["model"] == "tiny" and d["seeds"] == {"cohort": 7} and d["split_seed"] == 3
    bad = build_report(cohort(100, 2, "s"), train, holdout, model_scorer=FakeScorer(holdout, False))
    assert bad.model.reconstruction_jaccard == 0.0


def test_split_half_and_jaccard():
    p = Patient("1", 50, "F", [["a", "b", "c"], ["d", "e"]])
    prefix, rest = split_half(p)
    assert prefix.visits == [["a", "b"]] and rest == ["c", "d", "e"]
    done = Patient("1", 50, "F", [["a", "b", "c"], ["x"]])
    assert reconstruction_jaccard([prefix], [done], [rest]) == pytest.approx(1 / 4)  # {c, x} vs {c, d, e}


def test_html_is_self_contained(cohorts):
    train, holdout = cohorts
    page = render_html(build_report(cohort(200, 2, "s"), train, holdout))
    assert page.count("data:image/png;base64,") >= 5
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", page)
    assert "<script" not in page
    for name in ("unigram_r2", "mia_auc", "tstr_auroc", "Pneumonia, organism unspecified"):
        assert name in page



def test_a_report_read_back_from_json_renders_its_tables(cohorts):
    train, holdout = cohorts
    again = Report.model_validate_json(build_report(cohort(100, 2, "s"), train, holdout).to_json())
    page = render_html(again)
    assert "unigram_r2" in page and "data:image/png" not in page


def test_cli_evaluate_writes_json_and_html(tmp_path, shared_data, capsys):
    real = shared_data / "mimic3-demo"
    synthetic = tmp_path / "cohort.jsonl"
    synthetic.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in cohort(50, 2, "s")))
    out, page = tmp_path / "report.json", tmp_path / "report.html"
    assert main(["evaluate", "--synthetic", str(synthetic), "--real", str(real), "--out", str(out), "--html", str(page)]) == 0
    d = json.loads(out.read_text())
    assert d["split_seed"] == 0 and d["data"]["synthetic"]["patients"] == 50
    assert d["data"]["train"]["patients"] + d["data"]["holdout"]["patients"] < 100  # validation is left out
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_cli_evaluate_rejects_bad_input(tmp_path, shared_data, capsys):
    real = str(shared_data / "mimic3-demo")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"patient_id": "1", "age": 50, "sex": "F", "visits": [["4019"]]}\n{"patient_id": "2"}\n')
    assert main(["evaluate", "--synthetic", str(bad), "--real", real, "--out", str(tmp_path / "r.json")]) == 2
    assert "line 2" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"patient_id": "1", "age": 50, "sex": "F", "visits": [["4019"]]}\n')
    rc = main(["evaluate", "--synthetic", str(good), "--real", real, "--out", str(tmp_path / "r.json"), "--model", str(tmp_path)])
    err = capsys.readouterr().err
    try:
        import promptehr.model.evaluation.scorer  # noqa: F401
    except ModuleNotFoundError:
        assert rc == 2 and "model/scoring.py" in err


def test_tiny_and_degenerate_cohorts_do_not_crash():
    train = [Patient("a", 50, "F", [["4019"]]), Patient("b", 60, "M", [["4019", "25000"], ["486"]])]
    holdout = [Patient("c", 50, "F", [["4019"]])]
    for synthetic in ([Patient("s", 40, "F", [])], [Patient("s", 40, "F", [["XYZ"]])]):
        report = build_report(synthetic, train, holdout)
        render_html(report)
        assert report.privacy["nnaar"].value is None  # needs two records per set
    assert report.validity["unknown_code_rate"].value == 1.0 and report.passed["validity"] is False


def test_hierarchical_categories_reach_validity(cohorts):
    train, holdout = cohorts
    synthetic = [Patient("s", 50, "F", [["4019", "25000"]])]
    report = build_report(synthetic, train, holdout, synthetic_categories=[[["401", "401"]]])
    assert report.validity["category_mismatch_rate"].value == 0.5
