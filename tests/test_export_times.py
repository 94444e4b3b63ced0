"""Exports use the generated times (issue 12): JSONL carries visit_days/los_days, the long CSV gains
visit_end and ISO datetimes, the MIMIC-III/-IV zips' admittime/dischtime follow the days from a start
date; each reads back through the project's loaders to the JSONL's codes, visit order, gaps and stays.
Records without time give the exports' old bytes, and the CLI and the API say their dates are invented.
(model/data/export.py, cli/generate.py, GET /cohorts/{id}/export.)"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import zipfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from promptehr.cli.generate import write_streamed
from promptehr.cli.main import build_parser, main
from promptehr.model.data import load_patients
from promptehr.model.data.export import (
    DEFAULT_START_DATE,
    FORMATS,
    INVENTED,
    LEARNED,
    check_start_date,
    export_bytes,
    peek_dates,
    write_export,
)
from promptehr.model.patient import Patient
from tests.support.service import assert_problem
from tests.test_icd10_export import stored_cohort

ICD9 = ["4019", "0389", "25000", "V5861", "E8889", "4280", "585", "2765", "V1046", "41401", "5849"]
BOTH = ("icd9", "icd10")
FIXTURES = [HealthCheck.function_scoped_fixture]


def timed(pid: str, age: float, sex: str, visits: list[list[str]], gaps: list[int], stays: list[int]) -> Patient:
    """A record with time: `gaps` between visit starts (one fewer than the visits), a stay per visit."""
    days = [0]
    for g in gaps:
        days.append(days[-1] + g)
    return Patient(pid, age, sex, visits, visit_days=days, los_days=stays)


# Same-day visits (gap 0), same-day stays (0), a stay past the next visit's start, ages 0 and 90.
TIMED = [timed("syn-1-0000000", 70.0, "F", [["4019", "25000"], ["4280"], ["V5861"]], [0, 41], [3, 0, 1]),
         timed("syn-1-0000001", 0.0, "M", [["0389"]], [], [0]),
         timed("syn-1-0000002", 90.0, "F", [["585", "2765"], ["41401"]], [2], [10, 2])]


def unzip(data: bytes, folder) -> dict[str, list[dict]]:
    """The zip's tables as rows (and extracted into `folder` for the loaders)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(folder)
        return {n: list(csv.DictReader(io.TextIOWrapper(zf.open(n), encoding="utf-8"))) for n in zf.namelist()}


def export(patients, fmt, **kw) -> bytes:
    return b"".join(export_bytes(iter(patients), fmt, **kw))


# ---- what each format holds ------------------------------------------------------------------------

def test_jsonl_carries_the_days():
    lines = export(TIMED, "jsonl").decode().splitlines()
    assert lines[0] == ('{"patient_id":"syn-1-0000000","age":70.0,"sex":"F","visits":[["4019","25000"],["4280"],'
                        '["V5861"]],"visit_days":[0,0,41],"los_days":[3,0,1]}')
    assert [Patient.from_dict(json.loads(line)) for line in lines] == TIMED


def test_long_csv_has_visit_end_and_iso_datetimes():
    text = export(TIMED[:2], "csv").decode()
    assert text == (
        "patient_id,visit_id,visit_time,visit_end,code,age,sex\n"
        "syn-1-0000000,syn-1-0000000-001,2020-01-01T08:00:00,2020-01-04T12:00:00,4019,70,F\n"
        "syn-1-0000000,syn-1-0000000-001,2020-01-01T08:00:00,2020-01-04T12:00:00,25000,70,F\n"
        "syn-1-0000000,syn-1-0000000-002,2020-01-01T08:00:00,2020-01-01T12:00:00,4280,70,F\n"
        "syn-1-0000000,syn-1-0000000-003,2020-02-11T08:00:00,2020-02-12T12:00:00,V5861,70,F\n"
        "syn-1-0000001,syn-1-0000001-001,2020-01-01T08:00:00,2020-01-01T12:00:00,0389,0,M\n")
    mixed = [timed("syn-1-0000009", 50.0, "M", [["icd10:I10", "4019"]], [], [2])]
    assert export(mixed, "csv", code_systems=BOTH).decode().splitlines() == [
        "patient_id,visit_id,visit_time,visit_end,code,code_system,age,sex",
        "syn-1-0000009,syn-1-0000009-001,2020-01-01T08:00:00,2020-01-03T12:00:00,I10,icd10,50,M",
        "syn-1-0000009,syn-1-0000009-001,2020-01-01T08:00:00,2020-01-03T12:00:00,4019,icd9,50,M"]


def test_mimic_zips_admit_and_discharge_from_the_days(tmp_path):
    m3 = unzip(export(TIMED, "mimic3"), tmp_path / "m3")
    m4 = unzip(export(TIMED, "mimic4"), tmp_path / "m4")
    times = [("2020-01-01 08:00:00", "2020-01-04 12:00:00"), ("2020-01-01 08:00:00", "2020-01-01 12:00:00"),
             ("2020-02-11 08:00:00", "2020-02-12 12:00:00"), ("2020-01-01 08:00:00", "2020-01-01 12:00:00"),
             ("2020-01-01 08:00:00", "2020-01-11 12:00:00"), ("2020-01-03 08:00:00", "2020-01-05 12:00:00")]
    assert [(r["ADMITTIME"], r["DISCHTIME"]) for r in m3["ADMISSIONS.csv"]] == times
    assert [(r["admittime"], r["dischtime"]) for r in m4["admissions.csv"]] == times
    # DOB: the first admission's date `age` years earlier; anchor_year: the first admission's year
    assert [r["DOB"] for r in m3["PATIENTS.csv"]] == ["1950-01-01 00:00:00", "2020-01-01 00:00:00", "1930-01-01 00:00:00"]
    assert [(r["anchor_age"], r["anchor_year"]) for r in m4["patients.csv"]] == [("70", "2020"), ("0", "2020"), ("90", "2020")]


@pytest.mark.parametrize("start", [dt.date(2024, 2, 29), dt.date(1999, 12, 31), dt.date(1900, 1, 1)])
def test_ages_read_back_through_the_loaders_from_any_start_date(tmp_path, start):
    patients = [timed(f"syn-1-{i:07d}", float(age), "FM"[i % 2], [["4019"], ["25000"]], [400], [1, 0])
                for i, age in enumerate([0, 1, 17, 45, 89, 90])]
    for fmt in ("mimic3", "mimic4"):
        unzip(export(patients, fmt, start_date=start), tmp_path / fmt)
        back = load_patients(tmp_path / fmt, format=fmt)
        assert [p.age for p in back] == [p.age for p in patients], fmt


# ---- the round trip --------------------------------------------------------------------------------

@st.composite
def timed_cohorts(draw, codes=ICD9):
    out = []
    for i in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, 8))
        visits = [draw(st.lists(st.sampled_from(codes), min_size=1, max_size=4, unique=True)) for _ in range(n)]
        gaps = draw(st.lists(st.one_of(st.just(0), st.integers(0, 7304)), min_size=n - 1, max_size=n - 1))
        stays = draw(st.lists(st.one_of(st.just(0), st.integers(0, 400)), min_size=n, max_size=n))
        out.append(timed(f"syn-{draw(st.integers(0, 99))}-{i:07d}", float(draw(st.integers(0, 90))),
                         draw(st.sampled_from("MF")), visits, gaps, stays))
    return out


def times_of(p: Patient) -> tuple:
    """What the round trip keeps: codes in visit order, gaps and stays in days, age, sex."""
    return p.visits, p.visit_days, p.los_days, p.age, p.sex


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURES)
@given(timed_cohorts(), st.dates(dt.date(1990, 1, 1), dt.date(2100, 12, 31)))
@example([timed("syn-0-0000000", 0.0, "M", [["E8889"]], [], [0])], dt.date(2000, 1, 1))  # found by CI: ambiguous alone
def test_round_trip_through_the_loaders(tmp_path, patients, start):
    jsonl = tmp_path / "c.jsonl"
    write_export(iter(patients), jsonl, "jsonl")
    records = [Patient.from_dict(json.loads(line)) for line in jsonl.read_text().splitlines()]
    for fmt in ("mimic3", "mimic4"):
        zipped = tmp_path / f"{fmt}.zip"
        write_export(iter(patients), zipped, fmt, start_date=start)
        unzip(zipped.read_bytes(), tmp_path / fmt)
        back = load_patients(tmp_path / fmt, format=fmt)  # subject ids: the position in the export
        assert [times_of(b) for b in back] == [times_of(r) for r in records], fmt
        assert all(b.start_date == start for b in back), fmt  # every record's first visit on the start date
    long = tmp_path / "c.csv"
    write_export(iter(patients), long, "csv", start_date=start)
    # an ICD-9 cohort's CSV has no code_system column: a cohort whose only codes are valid in both systems
    # (E8889 alone) is refused as ambiguous without the system (tests/test_data_icd10.py), so give it
    back = {p.id: p for p in load_patients(long, format="long", code_system="icd9")}
    assert {i: times_of(p) for i, p in back.items()} == {r.id: times_of(r) for r in records}


@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURES)
@given(timed_cohorts(codes=["4019", "icd10:I10", "icd10:E119", "V5861", "icd10:Z7901"]))
def test_round_trip_of_a_mixed_cohort(tmp_path, patients):
    unzip(export(patients, "mimic4", code_systems=BOTH), tmp_path / "m4")
    assert [times_of(b) for b in load_patients(tmp_path / "m4", format="mimic4")] == [times_of(p) for p in patients]
    long = tmp_path / "c.csv"
    write_export(iter(patients), long, "csv", code_systems=BOTH)
    back = {p.id: p for p in load_patients(long, format="long")}
    assert {i: times_of(p) for i, p in back.items()} == {p.id: times_of(p) for p in patients}


def test_the_start_date_moves_the_dates_and_nothing_else(tmp_path):
    later = dt.date(2031, 7, 15)
    shift = later - DEFAULT_START_DATE
    assert export(TIMED, "jsonl", start_date=later) == export(TIMED, "jsonl")
    a = list(csv.reader(io.StringIO(export(TIMED, "csv").decode())))
    b = list(csv.reader(io.StringIO(export(TIMED, "csv", start_date=later).decode())))
    assert [r[:2] + r[4:] for r in a] == [r[:2] + r[4:] for r in b]  # all but visit_time, visit_end
    assert [[dt.datetime.fromisoformat(t) + shift for t in r[2:4]] for r in a[1:]] == \
           [[dt.datetime.fromisoformat(t) for t in r[2:4]] for r in b[1:]]
    for fmt in ("mimic3", "mimic4"):
        a = unzip(export(TIMED, fmt), tmp_path / f"a-{fmt}")
        b = unzip(export(TIMED, fmt, start_date=later), tmp_path / f"b-{fmt}")
        diag = "DIAGNOSES_ICD.csv" if fmt == "mimic3" else "diagnoses_icd.csv"
        assert a[diag] == b[diag]
        adm = a["ADMISSIONS.csv" if fmt == "mimic3" else "admissions.csv"]
        moved = b["ADMISSIONS.csv" if fmt == "mimic3" else "admissions.csv"]
        for ra, rb in zip(adm, moved, strict=True):
            for k in ra:
                if k.lower() in ("admittime", "dischtime"):
                    assert dt.datetime.fromisoformat(ra[k]) + shift == dt.datetime.fromisoformat(rb[k])
                else:
                    assert ra[k] == rb[k], k
        assert [(p.id, *times_of(p)) for p in load_patients(tmp_path / f"a-{fmt}", format=fmt)] == \
               [(p.id, *times_of(p)) for p in load_patients(tmp_path / f"b-{fmt}", format=fmt)]


# ---- records without time: the old bytes --------------------------------------------------------------

UNTIMED = [Patient("syn-1-0000000", 70.0, "F", [["4019", "25000"], ["4280"], ["V5861", "E8889"]]),
           Patient("syn-1-0000001", 45.5, "M", [["0389"]]),
           Patient("syn-1-0000002", 90.0, "F", [["585", "2765"], ["41401"]]),
           Patient("syn-1-0000003", 0.0, "M", [["V3000"], ["7742"], ["4019"], ["25000"]])]
UNTIMED_MIXED = UNTIMED + [Patient("syn-1-0000004", 33.0, "F", [["icd10:I10", "4019"], ["icd10:E119"]])]
# sha256 of these patients' exports by model/data/export.py before time (git HEAD before issue 12: the
# zips' members, since a zip's own bytes hold the time it was written)
BEFORE = {
    ("jsonl", "icd9"): "a27e8ada48f4ec06b519b9cdbc51e04f7a9dbbf4008b3210ae8d9c54801e7151",
    ("csv", "icd9"): "66ac42b4aef1f883dc5f471b8e60105441dd15cacc3461e27d771b7994dafb01",
    ("mimic3", "icd9"): {
        "DIAGNOSES_ICD.csv": "42cfd9fd06b1ae4ed9e59bfd79fff2b0c579abd36c3db5f9cbb583ad9997b553",
        "PATIENTS.csv": "9d6e9db54c2b9e28caf079ea5563ea049081419042e558b5e7ca521edb9127f1",
        "ADMISSIONS.csv": "c1bce1b86d43deb6f21a600739acbab2dd82b38e438c867001a8b677c8e424bb"},
    ("mimic4", "icd9"): {
        "diagnoses_icd.csv": "9c51e83863c034a127a0c0b658e709d5757313a3bf0b1427b1367cddce97255d",
        "patients.csv": "2223fbdf4976d0d025bd2209d62450d6917df75475291185c388fc814c9530b4",
        "admissions.csv": "72555f4feae321a81a21b9ca30be134800723256fb52aad81b9a5c2a1df36aac"},
    ("jsonl", "both"): "50b1b76a647d5cb15e1735c6caa2991ae36414174a9fe0db7d76a5ceadf61c30",
    ("csv", "both"): "fd88da0b659622d17703651df14377fc309aab279392b37c2319df56dee9c384",
    ("mimic4", "both"): {
        "diagnoses_icd.csv": "0d642834588973a06c5fed967295f23933c5974b348cdadf286415ee6e126cbf",
        "patients.csv": "b0bd01bc078c172f63ce620f39741d272c7f18b376b119c237819af99ea606df",
        "admissions.csv": "4462c7488e9e963bd2071d97993a8e452e395ad38e07a8df07c6467f9d7a06d6"},
}


def fingerprint(data: bytes, fmt: str):
    if not fmt.startswith("mimic"):
        return hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist()}


@pytest.mark.parametrize("fmt, systems", list(BEFORE))
def test_records_without_time_give_the_old_bytes_whatever_the_start_date(fmt, systems):
    patients, code_systems = (UNTIMED_MIXED, BOTH) if systems == "both" else (UNTIMED, ("icd9",))
    for start in (None, dt.date(2031, 7, 15)):
        data = export(patients, fmt, code_systems=code_systems, start_date=start)
        assert fingerprint(data, fmt) == BEFORE[fmt, systems], (fmt, start)
    if fmt == "csv":
        assert b"visit_end" not in data.split(b"\n")[0]
        assert data.split(b"\n")[1].split(b",")[2] == b"2010-04-27"  # a date from the id's hash, no time of day


# ---- one kind of dates per export ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_refuses_a_patient_whose_times_disagree_with_the_first(fmt):
    with pytest.raises(ValueError, match="patient 'syn-1-0000001' has no visit times .* first patient "
                                         "'syn-1-0000000' has visit times"):
        export([TIMED[0], UNTIMED[1]], fmt)
    with pytest.raises(ValueError, match="patient 'syn-1-0000001' has visit times .* first patient "
                                         "'syn-1-0000000' has no visit times"):
        export([UNTIMED[0], TIMED[1]], fmt)


def test_peek_dates_decides_from_the_first_patient_and_keeps_them_all():
    kind, rest = peek_dates(iter(TIMED))
    assert kind == LEARNED and list(rest) == TIMED
    kind, rest = peek_dates(iter(UNTIMED))
    assert kind == INVENTED and list(rest) == UNTIMED
    assert peek_dates(iter([]))[0] == INVENTED


def test_days_without_stays_and_bad_start_dates_are_refused():
    days_only = Patient("syn-1-0000005", 50.0, "M", [["4019"], ["25000"]], visit_days=[0, 3])
    with pytest.raises(ValueError, match="patient 'syn-1-0000005' has visit_days but no los_days"):
        export([days_only], "csv")
    for bad in (dt.date(1899, 12, 31), dt.date(3000, 1, 1)):
        with pytest.raises(ValueError, match=f"start date {bad.isoformat()}: expected a date in the years 1900 to 2999"):
            export_bytes(iter(TIMED), "mimic3", start_date=bad)  # refused by the call, before any byte
    with pytest.raises(TypeError, match="start date: expected a date"):
        check_start_date("2020-01-01")
    far = timed("syn-1-0000006", 50.0, "M", [["4019"]] * 3, [7304 * 100, 7304 * 300], [0, 0, 0])
    with pytest.raises(ValueError, match="patient 'syn-1-0000006': its visits, up to 2921600 days after the first, .* pass the year 9999"):
        export([far], "csv", start_date=dt.date(2999, 1, 1))


# ---- the CLI ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_the_cli_warns_that_dates_are_invented_and_only_then(tmp_path, capsys, fmt):
    out = tmp_path / f"c.{fmt}"
    write_streamed(iter(UNTIMED), out, fmt, ["icd9"], dt.date(2031, 7, 15))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("promptehr generate: warning: this model did not learn visit times: ")
    assert ("no visit_days/los_days" if fmt == "jsonl" else "dates are invented") in line
    assert line.endswith("(--start-date has no effect)")
    count, _ = write_streamed(iter(TIMED), out, fmt, ["icd9"], dt.date(2031, 7, 15))
    assert count == len(TIMED) and capsys.readouterr().err == ""
    assert fingerprint(out.read_bytes(), fmt) == fingerprint(export(TIMED, fmt, start_date=dt.date(2031, 7, 15)), fmt)


@pytest.mark.parametrize("value, message", [
    ("2020-13-01", "expected a date as YYYY-MM-DD, got '2020-13-01'"),
    ("yesterday", "expected a date as YYYY-MM-DD, got 'yesterday'"),
    ("1850-01-01", "start date 1850-01-01: expected a date in the years 1900 to 2999"),
])
def test_a_bad_start_date_exits_2(tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", str(tmp_path), "--n", "1", "--out", str(tmp_path / "c.csv"), "--start-date", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --start-date" in err and message in err


def test_the_cli_and_api_name_the_one_default_start_date():
    (generate,) = [a for a in build_parser()._subparsers._group_actions[0].choices["generate"]._actions
                   if "--start-date" in a.option_strings]
    assert f"default {DEFAULT_START_DATE.isoformat()}" in generate.help
    assert generate.type("2031-07-15") == dt.date(2031, 7, 15)
    from promptehr.service.routes.cohorts import export_cohort, router

    (route,) = [r for r in router.routes if r.endpoint is export_cohort]
    assert f"default {DEFAULT_START_DATE.isoformat()}" in route.description


# ---- GET /cohorts/{id}/export ----------------------------------------------------------------------

def test_the_api_exports_learned_dates_from_its_start_date(client, auth, session, tmp_path):
    cid = stored_cohort(session, TIMED, None)
    for fmt in FORMATS:
        r = client.get(f"/cohorts/{cid}/export?format={fmt}", headers=auth)
        assert r.status_code == 200, r.text
        assert r.headers["PromptEHR-Dates"] == "learned"
        assert fingerprint(r.content, fmt) == fingerprint(export(TIMED, fmt), fmt), fmt
        r = client.get(f"/cohorts/{cid}/export?format={fmt}&start_date=2031-07-15", headers=auth)
        assert r.status_code == 200 and r.headers["PromptEHR-Dates"] == "learned"
        assert fingerprint(r.content, fmt) == fingerprint(export(TIMED, fmt, start_date=dt.date(2031, 7, 15)), fmt)
    unzip(r.content, tmp_path / "m4")
    assert [times_of(p) for p in load_patients(tmp_path / "m4", format="mimic4")] == [times_of(p) for p in TIMED]


def test_the_api_says_when_dates_are_invented(client, auth, session):
    cid = stored_cohort(session, UNTIMED, None)
    for fmt in FORMATS:
        r = client.get(f"/cohorts/{cid}/export?format={fmt}&start_date=2031-07-15", headers=auth)
        assert r.status_code == 200 and r.headers["PromptEHR-Dates"] == "invented", fmt
        assert fingerprint(r.content, fmt) == BEFORE[fmt, "icd9"], fmt


@pytest.mark.parametrize("value, message", [
    ("2020-02-30", "expected a date as YYYY-MM-DD, got '2020-02-30'"),
    ("1850-01-01", "start date 1850-01-01: expected a date in the years 1900 to 2999"),
    ("0", "pattern"),
    ("2020-1-1", "pattern"),
])
def test_a_bad_start_date_is_a_422(client, auth, session, value, message):
    cid = stored_cohort(session, TIMED, None)
    r = client.get(f"/cohorts/{cid}/export?format=csv&start_date={value}", headers=auth)
    problem = assert_problem(r, 422, "query.start_date")
    assert message in json.dumps(problem)


# ---- the notebook API (promptehr.frames, which Synthesizer.sample returns) ---------------------------

def test_records_frame_takes_the_start_date():
    from promptehr.frames import records_frame

    frame = records_frame(TIMED, ["icd9"], "2031-07-15")
    assert list(frame.columns) == ["patient_id", "visit_id", "visit_time", "visit_end", "code", "age", "sex"]
    assert (frame["visit_time"].iloc[0], frame["visit_end"].iloc[0]) == ("2031-07-15T08:00:00", "2031-07-18T12:00:00")
    assert records_frame(TIMED, ["icd9"], dt.date(2031, 7, 15)).equals(frame)
    assert records_frame(TIMED, ["icd9"])["visit_time"].iloc[0] == "2020-01-01T08:00:00"
    with pytest.raises(ValueError, match="start_date: expected a date as YYYY-MM-DD, got '15/07/2031'"):
        records_frame(TIMED, ["icd9"], "15/07/2031")
