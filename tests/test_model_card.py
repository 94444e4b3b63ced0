"""The model card (card.json, model/training/card.py) in every checkpoint training writes, and its
section in the HTML report; the warning of a model that ends worse than the unigram baseline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from promptehr.model.data import load_patients
from promptehr.model.evaluation import build_report
from promptehr.model.evaluation.html import render_html
from promptehr.model.nn.checkpoint import CARD, MANIFEST, POPULATION, load_checkpoint, read_card, write_manifest
from promptehr.model.nn.config import train_config
from promptehr.model.split import split_patients
from promptehr.model.training.card import card_warnings, worse_than_unigram
from promptehr.model.training.train import train

REPO = Path(__file__).resolve().parents[1]
# timeline: the MIMIC-III demo has dates and the model learns them, so the check cohort's timeline is measured
SECTIONS = {"fidelity", "validity", "privacy", "utility", "timeline"}


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory, one_thread):
    """Tiny preset, 2 epochs on the MIMIC-III demo, with its holdout and a named source."""
    train_set, val_set, holdout = split_patients(load_patients(shared_data / "mimic3-demo"), 0)
    out = tmp_path_factory.mktemp("card") / "model"
    result = train(train_set, val_set, train_config("tiny", epochs=2), out, device="cpu", holdout=holdout,
                   source={"format": "mimic3", "paths": ["mimic3-demo"]})
    return out, result, train_set, holdout


@pytest.mark.slow
def test_card_fields_in_the_checkpoint(trained):
    out, result, train_set, holdout = trained
    card = read_card(out)
    assert card == result.card
    manifest = json.loads((out / MANIFEST).read_text())["files"]
    assert CARD in manifest and POPULATION in manifest  # hashed like the other files
    assert card["data"]["source"] == {"format": "mimic3", "paths": ["mimic3-demo"]}
    assert card["data"]["splits"]["train"]["patients"] == len(train_set)
    assert card["data"]["splits"]["holdout"]["patients"] == len(holdout)
    assert set(card["data"]["splits"]["train"]) == {"patients", "visits", "codes", "distinct_codes"}
    assert (card["preset"], card["epochs"], card["epochs_run"], card["code_systems"]) == ("tiny", 2, 2, ["icd9"])
    assert card["training_seconds"] > 0 and card["card_seconds"] > 0
    ppl = card["perplexity"]
    assert ppl["heldout"] == "holdout" and ppl["patients"] == len([p for p in holdout if p.visits])
    assert ppl["ppl"] > 1 and ppl["baseline_ppl"] > 1
    assert ppl["worse_than_unigram"] == (ppl["ppl"] >= ppl["baseline_ppl"])
    check = card["check_cohort"]
    assert check["patients"] == 300 and set(check["passed"]) == SECTIONS
    assert set(check["verdict"]) == {"passed", "failed_sections"}
    assert set(check["demographics"]) == {"age_mean_gap", "age_sd_gap", "age_histogram_tv", "female_share_gap"}
    assert card["population"] == json.loads((out / POPULATION).read_text())


@pytest.mark.slow
def test_report_shows_the_model_card_and_the_demographics(trained, tmp_path):
    out = trained[0]
    cohort = tmp_path / "c.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "promptehr.cli", "-q", "generate", "--model", str(out), "--n", "200",
                        "--threads", "1", "--out", str(cohort)], cwd=REPO, capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    html_path = tmp_path / "r.html"
    r = subprocess.run([sys.executable, "-m", "promptehr.cli", "-q", "evaluate", "--synthetic", str(cohort), "--real",
                        str(Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared/data")) / "mimic3-demo"),
                        "--model", str(out), "--model-patients", "5", "--out", str(tmp_path / "r.json"),
                        "--html", str(html_path)], cwd=REPO, capture_output=True, text=True, env=env, timeout=600,
                       check=False)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model_card"]["preset"] == "tiny"
    page = html_path.read_text()
    assert "<h2>Model card</h2>" in page and "unigram baseline perplexity" in page
    assert "Demographics: the cohort beside the population asked for" in page


def test_a_report_without_a_card_has_no_card_section(shared_data):
    train_set, _, holdout = split_patients(load_patients(shared_data / "mimic3-demo"), 0)
    report = build_report(holdout, train_set, holdout)
    assert report.model_card is None and "Model card" not in render_html(report)
    assert report.population["requested"]["source"].startswith("the training split")
    with_card = build_report(holdout, train_set, holdout, model_card={"preset": "tiny", "warnings": ["bad model"]})
    page = render_html(with_card)
    assert "<h2>Model card</h2>" in page and "Warning: bad model" in page


@pytest.mark.slow
def test_a_checkpoint_without_card_still_loads(trained, tmp_path):
    out, _, _, _ = trained
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / CARD).unlink()
    (old / POPULATION).unlink()
    write_manifest(old)
    load_checkpoint(old)
    assert read_card(old) is None
    (old / CARD).write_text("{}")  # a file the manifest does not list is not the checkpoint's
    load_checkpoint(old)


def test_worse_than_unigram_says_so(capsys):
    from promptehr.cli.train import print_card

    assert worse_than_unigram(480.0, 423.7) and worse_than_unigram(423.7, 423.7)
    assert not worse_than_unigram(215.2, 483.6) and not worse_than_unigram(None, 423.7)
    card = {"perplexity": {"heldout": "holdout", "patients": 327, "ppl": 498.7, "baseline_ppl": 423.7,
                           "worse_than_unigram": True},
            "check_cohort": {"skipped": "5 held-out patients (fewer than 10)"}, "card_seconds": 1.0}
    card["warnings"] = card_warnings(card)
    assert len(card["warnings"]) == 1 and "not below the unigram baseline" in card["warnings"][0]
    print_card(card)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("model card: held-out perplexity 498.7 (unigram 423.7")
    assert err[1].startswith("promptehr train: warning: held-out perplexity 498.70 is not below")
    better = {**card, "perplexity": {**card["perplexity"], "ppl": 200.0, "worse_than_unigram": False}}
    assert card_warnings(better) == []
