"""Long format: round trips through CSV and Parquet, and its own rules (sex spellings, ties, optional columns)."""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from promptehr.model.data import detect_format, load_patients
from promptehr.model.patient import Patient


def visit_span(p: Patient, i: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Visit i's start and end as datetimes from the patient's time fields (at noon: the time of day is ignored)."""
    start = pd.Timestamp(p.start_date) + pd.Timedelta(days=p.visit_days[i], hours=12)
    return start, start + pd.Timedelta(days=p.los_days[i])


def to_long(patients: list[Patient]) -> pd.DataFrame:
    """One row per code; patients and visits written newest/last first, codes of a visit in order."""
    rows = [
        (-n, -i, p.id, f"{p.id}-{i}", *visit_span(p, i), c, p.age, p.sex)
        for n, p in enumerate(patients) for i, v in enumerate(p.visits) for c in v
    ]
    df = pd.DataFrame(rows, columns=["pn", "vn", "patient_id", "visit_id", "visit_time", "visit_end", "code", "age", "sex"])
    return df.sort_values(["pn", "vn"], kind="stable").drop(columns=["pn", "vn"])


@pytest.fixture(scope="module")
def demo(shared_data):
    return load_patients(shared_data / "mimic3-demo")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_round_trip(demo, tmp_path, suffix):
    df = to_long(demo)
    path = tmp_path / f"long{suffix}"
    df.to_parquet(path, index=False) if suffix == ".parquet" else df.to_csv(path, index=False)
    assert detect_format(path) == "long"
    assert load_patients(path) == demo


def test_folder_of_files_numeric_times_and_visit_order(demo, tmp_path):
    df = pd.DataFrame(
        [(p.id, f"v{i:03d}", float(len(p.visits) - i), c, p.age, p.sex) for p in demo for i, v in enumerate(p.visits) for c in v],
        columns=["patient_id", "visit_id", "visit_time", "code", "age", "sex"],
    )
    half = len(df) // 2
    df.iloc[:half].to_csv(tmp_path / "a.csv", index=False)
    df.iloc[half:].to_parquet(tmp_path / "b.parquet", index=False)
    assert detect_format(tmp_path) == "long"
    got = load_patients(tmp_path)
    # times count down, so the visits come back reversed
    assert [p.visits for p in got] == [p.visits[::-1] for p in demo]


def test_sex_spellings_ties_duplicates_and_leading_zeros(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(
        "\ufeffPATIENT_ID, Visit_ID ,visit_time,code,age,sex\r\n"  # BOM, blanks around a name, CRLF
        "p2,b,2020-01-01,0389,50,FEMALE\n"
        "p2,a,2020-01-01,4019,,female\n"   # same time as b: tie broken by visit id
        "p2,a,2020-01-01,4019,,female\n"   # repeated code in a visit
        "p1,z,2019-05-05T10:00,E8889,95,Male\n"
        "p1,z,2019-05-05T10:00,  V5861 ,95,m\n"
    )
    ps = load_patients(path)
    assert ps == [Patient("p1", 90.0, "M", [["E8889", "V5861"]], visit_days=[0], start_date=dt.date(2019, 5, 5)),
                  Patient("p2", 50.0, "F", [["4019"], ["0389"]], visit_days=[0, 0], start_date=dt.date(2020, 1, 1))]


def test_age_and_sex_are_optional(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("patient_id,visit_id,visit_time,code\n1,1,3,250\n")
    (p,) = load_patients(path)
    assert p.visits == [["250"]] and p.sex == "U" and math.isnan(p.age)


def test_parquet_with_integer_ids(tmp_path):
    path = tmp_path / "x.parquet"
    pd.DataFrame({"patient_id": [7, 7], "visit_id": [2, 1], "visit_time": [20.0, 10.0], "code": ["0389", "V5861"],
                  "age": [40, 40], "sex": ["f", "f"]}).to_parquet(path, index=False)
    assert load_patients(path) == [Patient("7", 40.0, "F", [["V5861"], ["0389"]])]
