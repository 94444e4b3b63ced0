"""The report's timeline section (gaps, stays, readmissions, span, codes-stay correlation), its HTML
histograms, and privacy with times (schema 1.3)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from promptehr.cli.main import main
from promptehr.model.data import load_patients
from promptehr.model.evaluation import SCHEMA_VERSION, EvaluationConfig, build_report, privacy, timeline
from promptehr.model.evaluation.counts import build_index, encode, patient_matrix
from promptehr.model.evaluation.html import render_html
from promptehr.model.evaluation.schema import Report
from promptehr.model.evaluation.text import summary_lines
from promptehr.model.patient import Patient
from promptehr.model.split import split_patients

CODES = ["4019", "25000", "4280", "41401", "486", "5990", "42731", "496", "2724", "V5861"]
GAPS_HISTOGRAM = 'alt="histogram of days between visits"'
STAYS_HISTOGRAM = 'alt="histogram of lengths of stay"'


def P(pid, visits, days=None, stays=None):
    return Patient(pid, 60.0, "F", visits, visit_days=days, los_days=stays)


def cohort(n, seed, prefix, times=True):
    """Random records of 1-3 visits, gaps of 1-199 days and stays of 0-9 days (or no times)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        visits = [[str(c) for c in rng.choice(CODES, rng.integers(1, 5), replace=False)] for _ in range(k)]
        days = np.r_[0, np.cumsum(rng.integers(1, 200, k - 1))].astype(int).tolist() if times else None
        stays = rng.integers(0, 10, k).tolist() if times else None
        out.append(P(f"{prefix}{i}", visits, days, stays))
    return out


def renamed(patients, prefix):
    return [Patient(f"{prefix}{i}", p.age, p.sex, p.visits, visit_days=p.visit_days, los_days=p.los_days)
            for i, p in enumerate(patients)]


# Train: gaps 10, 40; stays 0, 2, 5, 1; spans 55 (the last visit's end) and 1.
TRAIN = [P("a", [["4019", "486"], ["25000"], ["4280", "496", "2724"]], [0, 10, 50], [0, 2, 5]),
         P("b", [["4019"]], [0], [1])]
# Other: gaps 30, 100; stays 3, 0, 7, 1, 4 beside code counts 2, 1, 1, 3, 4; spans 30, 101, 4.
OTHER = [P("c", [["4019", "486"], ["25000"]], [0, 30], [3, 0]),
         P("d", [["4019"], ["4280", "496", "2724"]], [0, 100], [7, 1]),
         P("e", [["4019", "486", "25000", "5990"]], [0], [4])]


def ecdf_gap(a, b) -> float:
    """KS statistic by definition: the largest gap between the two empirical CDFs."""
    xs = np.union1d(a, b)
    return float(np.max(np.abs(np.searchsorted(np.sort(a), xs, "right") / len(a) - np.searchsorted(np.sort(b), xs, "right") / len(b))))


def test_measures_on_known_gaps_and_stays():
    m = timeline.timeline_measures(timeline.times_of(TRAIN), timeline.times_of(OTHER))
    assert m["gap_ks"] == pytest.approx(0.5) == pytest.approx(ecdf_gap([10, 40], [30, 100]))
    assert m["gap_wasserstein_days"] == pytest.approx((20 + 60) / 2)  # equal sizes: mean gap of the sorted values
    assert m["stay_ks"] == pytest.approx(0.35) == pytest.approx(ecdf_gap([0, 2, 5, 1], [3, 0, 7, 1, 4]))
    # area between the CDFs: [0,1) .05, [1,2) .1, [2,3) .35, [3,4) .15, [4,5) .05, [5,7) 2 x .2
    assert m["stay_wasserstein_days"] == pytest.approx(1.1)
    assert m["readmit_30d"] == pytest.approx(0.5)  # 30 days counts as a readmission, 100 does not
    assert m["span_median_days"] == pytest.approx(30.0)
    codes_rank = np.array([3, 1.5, 1.5, 4, 5])  # code counts 2, 1, 1, 3, 4 with the tie averaged
    stays_rank = np.array([3, 1, 5, 2, 4])  # stays 3, 0, 7, 1, 4
    assert m["codes_stay_spearman"] == pytest.approx(np.corrcoef(codes_rank, stays_rank)[0, 1])
    own = timeline.timeline_measures(timeline.times_of(TRAIN), timeline.times_of(TRAIN))
    assert own["gap_ks"] == 0.0 and own["span_median_days"] == pytest.approx(28.0)  # spans 55 and 1


def test_span_ends_at_the_latest_end_and_undefined_measures_are_none():
    long_first = timeline.times_of([P("x", [["4019"], ["486"]], [0, 1], [20, 0])])
    assert list(long_first.spans) == [20.0]  # the first stay ends after the second visit
    single = timeline.timeline_measures(timeline.times_of(TRAIN), timeline.times_of([P("y", [["4019"]], [0], [2])]))
    assert single["gap_ks"] is None and single["readmit_30d"] is None  # no second visit: no gap
    assert single["codes_stay_spearman"] is None  # one visit: no correlation


def test_synthetic_equal_to_the_holdout_has_every_value_at_its_limit():
    train, holdout = cohort(300, 0, "t"), cohort(100, 1, "h")
    report = build_report(renamed(holdout, "s"), train, holdout)
    t = report.timeline
    assert t.learned and t.measured and t.note is None
    assert t.timed_records == {"train": 300, "holdout": 100, "synthetic": 100}
    assert set(t.measures) == {"gap_ks", "gap_wasserstein_days", "stay_ks", "stay_wasserstein_days", "readmit_30d",
                               "span_median_days", "codes_stay_spearman"}
    for name, m in t.measures.items():
        assert m.value == pytest.approx(m.limit), name
    assert t.measures["gap_ks"].threshold == 0.15 and t.measures["gap_wasserstein_days"].threshold is None
    assert t.measures["readmit_30d"].reference == pytest.approx(timeline.readmit_share(timeline.times_of(train).gaps))
    assert report.passed["timeline"] == all(m.passed for m in t.measures.values() if m.passed is not None)
    rows = [line.split() for line in summary_lines(report) if line.startswith("timeline ")]
    assert [r[1] for r in rows] == list(t.measures)


def test_a_cohort_without_time_says_the_timeline_was_not_learned():
    train, holdout = cohort(300, 0, "t"), cohort(100, 1, "h")
    report = build_report(cohort(100, 2, "s", times=False), train, holdout)
    d = json.loads(report.to_json())
    assert d["timeline"] == {"learned": False, "measured": False, "note": timeline.NOT_LEARNED, "measures": {},
                             "timed_records": {"train": 300, "holdout": 100, "synthetic": 0}}
    assert "timeline" not in d["passed"]  # no measure, no verdict: not a pass
    assert f"timeline: {timeline.NOT_LEARNED}" in summary_lines(report)
    page = render_html(report)
    assert timeline.NOT_LEARNED in page
    assert GAPS_HISTOGRAM in page  # the real data's timeline is still drawn


def test_real_data_without_dates_is_not_measured():
    report = build_report(cohort(100, 2, "s"), cohort(300, 0, "t", times=False), cohort(100, 1, "h", times=False))
    assert (report.timeline.learned, report.timeline.measured) == (True, False)
    assert report.timeline.note == timeline.NO_REAL_DATES == "not measured: the real data has no dates"
    assert f"timeline: {timeline.NO_REAL_DATES}" in summary_lines(report)


def test_records_without_times_among_timed_ones_are_a_warning_naming_the_count():
    train, holdout = cohort(300, 0, "t"), cohort(100, 1, "h")
    synthetic = cohort(99, 2, "s") + cohort(1, 3, "u", times=False)
    report = build_report(synthetic, train, holdout)
    [w] = [w for w in report.warnings if w.kind == "timeline_partial"]
    assert w.about == "the cohort" and w.value == pytest.approx(0.01)
    assert w.message.startswith("1 of 100 synthetic records carry no visit_days") and "the other 99" in w.message
    assert report.timeline.measured and report.timeline.timed_records["synthetic"] == 99


def test_html_draws_the_gap_and_stay_histograms():
    train, holdout = cohort(300, 0, "t"), cohort(100, 1, "h")
    page = render_html(build_report(cohort(100, 2, "s"), train, holdout))
    assert page.count(GAPS_HISTOGRAM) == 1 and page.count(STAYS_HISTOGRAM) == 1
    assert "Timeline: days between visits and length of stay" in page and "gap_wasserstein_days" in page
    bare = render_html(build_report(cohort(100, 2, "s", False), cohort(300, 0, "t", False), cohort(100, 1, "h", False)))
    assert GAPS_HISTOGRAM not in bare and page.count("data:image/png") == bare.count("data:image/png") + 2


def test_a_copy_of_codes_with_other_days_is_a_copy_only_without_times():
    train = [P("t", [["4019", "25000"], ["486"]], [0, 12], [3, 0])]
    moved = P("s", [["25000", "4019"], ["486"]], [0, 40], [3, 1])
    same = P("s2", [["4019", "25000"], ["486"]], [0, 12], [3, 0])
    assert list(privacy.exact_copies([moved, same], train)) == [True, True]
    assert list(privacy.exact_copies([moved, same], train, times=True)) == [False, True]
    # distances: the codes alone are identical; with times the moved record's gap and stay items differ
    index = build_index(train, [moved, same])
    codes = [patient_matrix(encode(c, index)) for c in (train, [moved, same])]
    plain, _ = privacy.nearest(codes[1], codes[0])
    timed, _ = privacy.nearest(privacy.with_time_items(codes[1], [moved, same]), privacy.with_time_items(codes[0], train))
    assert list(plain) == [0.0, 0.0]
    # moved: 3 codes + gap 40 + stays 3, 1 against 3 codes + gap 12 + stay 3, 0: 4 shared of 8 items
    assert timed[0] == pytest.approx(1 - 4 / 8) and timed[1] == 0.0


def test_report_privacy_says_what_it_compares():
    train, holdout = cohort(300, 0, "t"), cohort(100, 1, "h")
    # train's codes, every gap one day longer
    moved = [Patient(f"s{i}", p.age, p.sex, p.visits, visit_days=[d + k for k, d in enumerate(p.visit_days)],
                     los_days=p.los_days) for i, p in enumerate(train)]
    default = build_report(moved, train, holdout)
    assert default.privacy["exact_copy_rate"].value == 1.0
    assert default.to_dict()["privacy_records"] == {"with_times": False, "note": privacy.CODES_ONLY}
    with_times = build_report(moved, train, holdout, config=EvaluationConfig(privacy_times=True))
    multi = sum(len(p.visits) > 1 for p in train) / len(train)
    assert with_times.privacy["exact_copy_rate"].value == pytest.approx(1 - multi)  # one-visit records are unchanged
    assert with_times.privacy_records.with_times and with_times.evaluation.privacy_times
    assert f"privacy: {privacy.WITH_TIMES}" in summary_lines(with_times)
    with pytest.raises(ValueError, match="1 of 100 holdout records have none"):
        build_report(moved, train, holdout[:99] + cohort(1, 4, "u", times=False), config=EvaluationConfig(privacy_times=True))


def test_schema_1_3_and_a_1_2_report_still_reads():
    train, holdout = cohort(300, 0, "t"), cohort(100, 1, "h")
    d = json.loads(build_report(cohort(100, 2, "s"), train, holdout).to_json())
    assert d["schema_version"] == SCHEMA_VERSION == "1.3"
    old = {k: v for k, v in d.items() if k not in ("timeline", "privacy_records")}
    old["schema_version"], old["evaluation"] = "1.2", {k: v for k, v in d["evaluation"].items() if k != "privacy_times"}
    old["passed"] = {k: v for k, v in d["passed"].items() if k != "timeline"}
    again = Report.model_validate(old)
    assert again.timeline is None and again.privacy_records is None and again.evaluation.privacy_times is False
    page = render_html(again)
    assert "<th colspan=\"8\" style=\"text-align:left\">timeline" not in page and "unigram_r2" in page


@pytest.fixture(scope="module")
def desynpuf(shared_data):
    """DE-SynPUF sample 1 through the loader: its claims' dates are the records' times."""
    train, validation, holdout = split_patients(load_patients(shared_data / "desynpuf-sample" / "1-sample-10000"), 0)
    return train, validation, holdout


def test_desynpuf_sample_1_real_times(desynpuf):
    train, validation, holdout = desynpuf
    first = next(p for p in train + validation + holdout if p.id == "00016F745862898F")
    assert first.los_days[0] == 6  # claim 196201177000368: 2009-04-12 to 2009-04-18 (data README)
    t_tr, t_ho = timeline.times_of(train), timeline.times_of(holdout)
    assert t_tr.untimed == 0 and t_ho.untimed == 0 and len(t_ho.gaps) > 100
    limit = timeline.timeline_measures(t_tr, t_ho)
    # a real sample is well inside the bands the thresholds set (samples 1-6: 0.029 and 0.015)
    assert limit["gap_ks"] < 0.1 and limit["stay_ks"] < 0.1
    train_readmit = timeline.readmit_share(t_tr.gaps)
    assert 0.1 < train_readmit < 0.5 and abs(limit["readmit_30d"] - train_readmit) / train_readmit < 0.2
    # every stay one day longer is a wrong timeline: it fails the stay KS that the real sample passes
    longer = timeline.times_of([Patient(p.id, p.age, p.sex, p.visits, visit_days=p.visit_days,
                                        los_days=[d + 1 for d in p.los_days]) for p in validation])
    assert timeline.timeline_measures(t_tr, longer)["stay_ks"] > 0.15


def test_desynpuf_report_with_validation_as_the_cohort(desynpuf):
    train, validation, holdout = desynpuf
    report = build_report(validation, train, holdout, config=EvaluationConfig(privacy_times=True))
    t = report.timeline
    assert t.measured and t.measures["gap_ks"].passed and t.measures["stay_ks"].passed
    assert report.passed["timeline"] is t.measures["readmit_30d"].passed  # the three measures with a threshold
    assert report.privacy["exact_copy_rate_multivisit"].value < 0.01  # real patients with times copy no one


def test_cli_privacy_times(tmp_path, shared_data, capsys):
    real = str(shared_data / "desynpuf-sample" / "1-sample-10000")
    untimed = tmp_path / "untimed.jsonl"
    untimed.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in cohort(30, 2, "s", times=False)))
    out = tmp_path / "r.json"
    assert main(["evaluate", "--synthetic", str(untimed), "--real", real, "--out", str(out), "--privacy-times"]) == 2
    assert "--privacy-times: privacy with times needs every record's visit_days and los_days; 30 of 30 synthetic" \
           in capsys.readouterr().err
    timed = tmp_path / "timed.jsonl"
    timed.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in cohort(30, 2, "s")))
    assert main(["evaluate", "--synthetic", str(timed), "--real", real, "--out", str(out), "--privacy-times"]) == 0
    d = json.loads(out.read_text())
    assert d["privacy_records"]["with_times"] is True and d["evaluation"]["privacy_times"] is True
    assert d["timeline"]["measured"] is True
