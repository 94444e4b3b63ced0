"""Visit start and end dates kept by the loaders (issue 12): Patient.visit_days / los_days / start_date
from MIMIC-III/IV admittime/dischtime, DE-SynPUF CLM_ADMSN_DT (else CLM_FROM_DT) / CLM_THRU_DT and the
long format's visit_time / visit_end, and kept aligned when convert drops visits."""
from __future__ import annotations

import datetime as dt
import shutil
import warnings

import pandas as pd
import pytest

from promptehr.model.data import load_patients
from promptehr.model.data.convert import convert_patients, keep_visits, write_long
from promptehr.model.data.export import write_export
from promptehr.model.errors import DataError
from promptehr.model.patient import Patient

SOURCES = ["desynpuf-sample/1-sample-10000", "mimic3-demo", "mimic4-demo"]
DESYNPUF_1 = "desynpuf-sample/1-sample-10000/DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv"


def no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a loader warning here: stays lost or clamped
        return fn(*args, **kwargs)


def days_from_raw(visits: pd.DataFrame) -> dict[str, tuple[list[int], list[int], dt.date]]:
    """patient -> (visit_days, los_days, start_date) computed from raw `start`, `end`, `visit` columns,
    in the loader's visit order (time, then visit id as text)."""
    visits = visits.assign(start=visits.start.dt.normalize(), end=visits.end.dt.normalize())
    out = {}
    for pid, v in visits.sort_values(["start", "visit"]).groupby("patient"):
        out[pid] = ((v.start - v.start.iat[0]).dt.days.tolist(), (v.end - v.start).dt.days.tolist(), v.start.iat[0].date())
    return out


def mimic_raw(adm: pd.DataFrame, diag: pd.DataFrame, code_column: str) -> dict:
    # Only admissions with a diagnosis code are visits.
    coded = set(diag.loc[diag[code_column].notna(), "hadm_id"])
    adm = adm[adm.hadm_id.isin(coded)]
    return days_from_raw(pd.DataFrame({"patient": adm.subject_id, "visit": adm.hadm_id,
                                       "start": pd.to_datetime(adm.admittime), "end": pd.to_datetime(adm.dischtime)}))


@pytest.fixture(scope="module")
def loaded(shared_data):
    return {s: no_warnings(load_patients, shared_data / s) for s in SOURCES}


@pytest.mark.parametrize("source", SOURCES)
def test_every_real_patient_has_its_days_and_stays(loaded, source):
    ps = loaded[source]
    assert ps
    for p in ps:
        assert len(p.visit_days) == len(p.visits) == len(p.los_days)
        assert p.visit_days[0] == 0 and all(a <= b for a, b in zip(p.visit_days, p.visit_days[1:]))
        assert min(p.los_days) >= 0 and isinstance(p.start_date, dt.date)
    assert any(d > 0 for p in ps for d in p.visit_days) and any(s > 0 for p in ps for s in p.los_days)


def test_desynpuf_patient_checked_by_hand(loaded, shared_data):
    # The beneficiary the shared data README cross-checks: claims 2009-04-12..18, 2009-08-31..09-02,
    # 2009-09-17..20 and 2010-06-26..07-01.
    p = {p.id: p for p in loaded[SOURCES[0]]}["00016F745862898F"]
    assert (p.visit_days, p.los_days, p.start_date) == ([0, 141, 158, 440], [6, 2, 3, 5], dt.date(2009, 4, 12))
    claims = pd.read_csv(shared_data / DESYNPUF_1, dtype=str)
    c = claims[(claims.DESYNPUF_ID == p.id) & (claims.SEGMENT == "1")]
    start = pd.to_datetime(c.CLM_ADMSN_DT, format="%Y%m%d").fillna(pd.to_datetime(c.CLM_FROM_DT, format="%Y%m%d"))
    raw = days_from_raw(pd.DataFrame({"patient": c.DESYNPUF_ID, "visit": c.CLM_ID, "start": start,
                                      "end": pd.to_datetime(c.CLM_THRU_DT, format="%Y%m%d")}))
    assert raw[p.id] == (p.visit_days, p.los_days, p.start_date)


def test_mimic3_every_patient_matches_the_raw_tables(loaded, shared_data):
    raw = mimic_raw(pd.read_csv(shared_data / "mimic3-demo/ADMISSIONS.csv", dtype=str),
                    pd.read_csv(shared_data / "mimic3-demo/DIAGNOSES_ICD.csv", dtype=str), "icd9_code")
    ps = {p.id: p for p in loaded["mimic3-demo"]}
    assert raw == {i: (p.visit_days, p.los_days, p.start_date) for i, p in ps.items()}
    # the patient with 15 admissions, as read off ADMISSIONS.csv by hand
    assert ps["41976"].visit_days[:4] == [0, 76, 94, 504] and ps["41976"].los_days[:4] == [7, 3, 14, 11]


def test_mimic4_every_patient_matches_the_raw_tables(loaded, shared_data):
    hosp = shared_data / "mimic4-demo/hosp"
    raw = mimic_raw(pd.read_csv(hosp / "admissions.csv.gz", dtype=str),
                    pd.read_csv(hosp / "diagnoses_icd.csv.gz", dtype=str), "icd_code")
    assert raw == {p.id: (p.visit_days, p.los_days, p.start_date) for p in loaded["mimic4-demo"]}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_long_format_with_dates_and_visit_end(tmp_path, suffix):
    # The columns in the order our own CSV export writes them, ends as "YYYY-MM-DD HH:MM:SS".
    df = pd.DataFrame([
        ("p1", "a", "2020-03-01 23:00:00", "2020-03-04 08:00:00", "4019"),
        ("p1", "a", "2020-03-01 23:30:00", "2020-03-05 01:00:00", "25000"),  # the visit: earliest start, latest end
        ("p1", "b", "2020-03-02 01:00:00", "2020-03-02 03:00:00", "0389"),   # 2 hours later, the next calendar day
        ("p1", "c", "2021-03-01", "2021-03-01", "V5861"),
        ("p2", "x", "2019-12-31T10:00:00", "2020-01-02T10:00:00", "4280"),  # ISO with a T
    ], columns=["patient_id", "visit_id", "visit_time", "visit_end", "code"])
    path = tmp_path / f"x{suffix}"
    if suffix == ".parquet":  # Parquet keeps real timestamps
        df.assign(visit_time=pd.to_datetime(df.visit_time, format="ISO8601"),
                  visit_end=pd.to_datetime(df.visit_end, format="ISO8601")).to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    p1, p2 = no_warnings(load_patients, path)
    assert p1.visits == [["4019", "25000"], ["0389"], ["V5861"]]
    assert (p1.visit_days, p1.los_days, p1.start_date) == ([0, 1, 365], [4, 0, 0], dt.date(2020, 3, 1))
    assert (p2.visit_days, p2.los_days, p2.start_date) == ([0], [2], dt.date(2019, 12, 31))


def test_reads_our_own_long_csv_export_back(tmp_path):
    made = [Patient("syn-1", 70.0, "F", [["4019"], ["25000", "4280"], ["V5861"]], visit_days=[0, 0, 400], los_days=[0, 3, 12]),
            Patient("syn-2", 45.0, "M", [["0389"]], visit_days=[0], los_days=[1])]
    write_export(iter(made), tmp_path / "c.csv", "csv", start_date=dt.date(2021, 2, 27))
    assert pd.read_csv(tmp_path / "c.csv", nrows=0).columns[2:4].tolist() == ["visit_time", "visit_end"]
    back = no_warnings(load_patients, tmp_path / "c.csv")
    assert [(p.id, p.visits, p.visit_days, p.los_days, p.start_date) for p in back] == [
        (p.id, p.visits, p.visit_days, p.los_days, dt.date(2021, 2, 27)) for p in made]


def test_long_format_numeric_visit_time_has_no_time(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("patient_id,visit_id,visit_time,code,age,sex\np1,v2,2,0389,60,F\np1,v1,1,4019,60,F\np2,w,7,V5861,50,M\n")
    assert no_warnings(load_patients, path) == [Patient("p1", 60.0, "F", [["4019"], ["0389"]]),
                                                Patient("p2", 50.0, "M", [["V5861"]])]
    assert all(not p.has_time and p.to_dict().keys() == {"patient_id", "age", "sex", "visits"} for p in load_patients(path))


def test_visit_end_needs_dates_in_visit_time(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("patient_id,visit_id,visit_time,visit_end,code\np1,v1,1,,4019\np1,v2,2,2020-01-01,0389\n")
    with pytest.raises(DataError, match="visit_end needs dates in visit_time") as e:
        load_patients(path)
    assert (e.value.line, e.value.column) == (3, "visit_end")
    path.write_text("patient_id,visit_id,visit_time,visit_end,code\np1,v1,1,,4019\n")  # an empty column is no end
    (p,) = no_warnings(load_patients, path)
    assert p.visits == [["4019"]] and not p.has_time and p.los_days is None


def test_some_ends_missing_drops_every_stay_with_one_warning(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("patient_id,visit_id,visit_time,visit_end,code\n"
                    "p1,a,2020-01-01,2020-01-03,4019\np1,b,2020-02-01,,0389\np2,c,2020-05-05,,V5861\n")
    with pytest.warns(UserWarning) as got:
        ps = load_patients(path)
    assert [str(w.message) for w in got] == [(f"{path}: 2 of 3 visits have no end date (visit_end): lengths of stay are "
                                              "left out for the whole data set")]
    assert [(p.visit_days, p.los_days) for p in ps] == [([0, 31], None), ([0], None)]


def test_long_end_before_start_is_a_zero_day_stay_with_one_warning(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("patient_id,visit_id,visit_time,visit_end,code\n"
                    "p1,a,2020-01-05 10:00,2020-01-03 09:00,4019\np1,b,2020-02-01 08:00,2020-02-01 07:00,0389\n"
                    "p2,c,2020-05-05,2020-05-01,V5861\np2,d,2020-06-01,2020-06-02,4280\n")
    with pytest.warns(UserWarning) as got:
        ps = load_patients(path)
    # a same-day end an hour early is no earlier date: only two stays are clamped
    assert [str(w.message) for w in got] == [
        (f"{path}: 2 visits end before they start (visit_end before the visit's start date; the first is visit a of "
         "patient p1): their stays are taken as 0 days")]
    assert [p.los_days for p in ps] == [[0, 0], [0, 1]]


def test_mimic3_discharge_before_admission_names_admissions(loaded, shared_data, tmp_path):
    folder = tmp_path / "m3"
    folder.mkdir()
    for t in ("PATIENTS", "DIAGNOSES_ICD"):
        shutil.copy(shared_data / f"mimic3-demo/{t}.csv", folder)
    adm = pd.read_csv(shared_data / "mimic3-demo/ADMISSIONS.csv", dtype=str)
    row = adm.index[adm.subject_id == "41976"][0]
    admit = pd.Timestamp(adm.at[row, "admittime"])
    adm.at[row, "dischtime"] = str(admit - pd.Timedelta(days=2))
    adm.to_csv(folder / "ADMISSIONS.csv", index=False)
    with pytest.warns(UserWarning, match=r"ADMISSIONS\.csv: 1 visits end before they start \(dischtime before") as got:
        ps = {p.id: p for p in load_patients(folder)}
    assert len(got) == 1
    p, before = ps["41976"], {p.id: p for p in loaded["mimic3-demo"]}["41976"]
    k = p.visit_days.index((admit.date() - p.start_date).days)  # the edited admission
    assert p.los_days[k] == 0 < before.los_days[k]
    assert p.los_days[:k] + p.los_days[k + 1:] == before.los_days[:k] + before.los_days[k + 1:]
    assert p.visit_days == before.visit_days


def test_desynpuf_thru_before_admission_is_clamped(shared_data, tmp_path):
    src = shared_data / "desynpuf-ohdsi-test0"
    for f in src.glob("*Beneficiary*"):
        shutil.copy(f, tmp_path)
    claims = (src / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_0.csv").read_text()
    assert claims.count(",20090208,20090210,") == 1
    (tmp_path / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_0.csv").write_text(claims.replace(",20090208,20090210,", ",20090208,20090201,"))
    assert [p.los_days for p in no_warnings(load_patients, src)] == [[2], [3]]
    with pytest.warns(UserWarning, match=r"Inpatient_Claims_Sample_0\.csv: 1 visits end before they start \(CLM_THRU_DT") as got:
        ps = load_patients(tmp_path)
    assert len(got) == 1 and [p.los_days for p in ps] == [[0], [3]]


def test_convert_rebases_the_kept_visits():
    p = Patient("a", 50.0, "F", [["36570"], ["4019"], ["36570"], ["V5861"]],  # 36570 maps to nothing
                visit_days=[0, 10, 15, 40], los_days=[1, 2, 3, 4], start_date=dt.date(2020, 12, 25))
    (out,), s = convert_patients([p], "icd10")
    assert out == Patient("a", 50.0, "F", [["icd10:I10"], ["icd10:Z7901"]],
                          visit_days=[0, 30], los_days=[2, 4], start_date=dt.date(2021, 1, 4))
    assert s.visits_dropped == 2
    assert keep_visits(Patient("b", 1.0, "M", [["1"], ["2"]]), [1], [["1"], ["2"]]) == Patient("b", 1.0, "M", [["2"]])


def test_kept_visits_of_real_patients_stay_at_their_dates(loaded):
    # No real data set here loses a visit in convert (every visit keeps a mappable code), so the
    # subset it takes is taken directly: every other visit, the first one dropped.
    def dated(p):
        return [(p.start_date + dt.timedelta(days=d), stay) for d, stay in zip(p.visit_days, p.los_days)]

    many = [p for p in loaded["mimic4-demo"] if len(p.visits) >= 2]
    assert len(many) > 40
    for p in many:
        kept = list(range(1, len(p.visits), 2))
        q = keep_visits(p, kept, p.visits)
        assert q.visits == [p.visits[i] for i in kept] and q.visit_days[0] == 0
        assert dated(q) == [dated(p)[i] for i in kept] and q.start_date == dated(p)[1][0]


def test_write_long_keeps_dates_only_when_every_patient_has_them(tmp_path):
    dated = Patient("a", 50.0, "F", [["4019"], ["0389"]], visit_days=[0, 3], los_days=[1, 0], start_date=dt.date(2020, 2, 28))
    write_long([dated], tmp_path / "d.csv")
    assert pd.read_csv(tmp_path / "d.csv", dtype=str)[["visit_time", "visit_end"]].values.tolist() == [
        ["2020-02-28", "2020-02-29"], ["2020-03-02", "2020-03-02"]]
    assert load_patients(tmp_path / "d.csv") == [dated]
    with pytest.warns(UserWarning, match=r"1 of 2 patients have no visit dates: visit_time is written as visit numbers"):
        write_long([dated, Patient("b", 60.0, "M", [["V5861"]])], tmp_path / "m.csv")
    assert [p.has_time for p in load_patients(tmp_path / "m.csv")] == [False, False]
