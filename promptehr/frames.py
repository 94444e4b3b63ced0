"""pandas DataFrames in the project's long format, to and from lists of Patient.

In: a DataFrame goes through the long-format loader (promptehr/model/data/long_format.py) exactly as a
long CSV file does: it is written to a temporary CSV and read back by `load_patients(format="long")`,
so the same columns are accepted (patient_id, visit_id, visit_time, code[, code_system, age, sex], any
case) and the same checks give the same errors, told of the DataFrame's row instead of a file line.

Out: patients become the bytes `promptehr generate --format csv` writes (model/data/export.py) and are
parsed with the dtypes below, so the frame holds the CSV's values: ids and codes as strings (leading
zeros kept: "0389"), visit_time as the CSV's ISO date text (records with time: ISO datetimes, and a
visit_end column beside it), age as a number, sex "M"/"F".
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pandas as pd

# The text columns of the long CSV export; age is left to pandas (whole years: integers).
TEXT_COLUMNS = ("patient_id", "visit_id", "visit_time", "visit_end", "code", "code_system", "sex")
SOURCE = "DataFrame"  # what an error names in place of a file


def frame_patients(df: pd.DataFrame, code_system: str | None = None) -> list:
    """The patients of a long-format DataFrame (one row per diagnosis); a DataError names the bad column
    and row, as the loader names a file's column and line."""
    from promptehr.model.data import load_patients
    from promptehr.model.errors import DataError

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame in long format, got {type(df).__name__}")
    if len(df.columns) == 0:
        raise DataError(SOURCE, "no columns: expected columns patient_id, visit_id, visit_time, code "
                                "(and optionally code_system, age, sex)")
    with tempfile.TemporaryDirectory(prefix="promptehr-frame-") as tmp:
        path = Path(tmp) / "frame.csv"
        df.to_csv(path, index=False)
        try:
            return load_patients(path, format="long", code_system=code_system)
        except DataError as e:
            raise frame_error(e, str(path), df) from None


def frame_error(e, path: str, df: pd.DataFrame):
    """The loader's DataError about the temporary CSV, retold of the DataFrame: line n is row n - 2
    (the header is line 1), with the row's index label where it is not the position."""
    from promptehr.model.errors import DataError

    if e.path != path:
        return e
    expected = e.expected.replace(path, SOURCE)
    if e.line is not None and e.line >= 2:
        row = e.line - 2
        label = df.index[row] if row < len(df) else row
        label = label.item() if hasattr(label, "item") else label  # numpy scalars print as plain numbers
        where = f"row {row}" + (f" (index {label!r})" if label != row else "")
        expected = f"{where}: {expected}"
    return DataError(SOURCE, expected, column=e.column)


def records_frame(patients, code_systems, start_date=None) -> pd.DataFrame:
    """The long-format DataFrame of `patients`: the CSV `promptehr generate --format csv` writes, parsed.
    `start_date`: the first visit's date of records with time (a datetime.date or "YYYY-MM-DD"; None:
    the export's DEFAULT_START_DATE)."""
    import datetime as dt

    from promptehr.model.data.export import export_bytes

    if isinstance(start_date, str):
        try:
            start_date = dt.date.fromisoformat(start_date)
        except ValueError:
            raise ValueError(f"start_date: expected a date as YYYY-MM-DD, got {start_date!r}") from None
    data = b"".join(export_bytes(patients, "csv", code_systems=tuple(code_systems), start_date=start_date))
    return read_long_csv(io.BytesIO(data))


def read_long_csv(source) -> pd.DataFrame:
    """A long CSV of the export (a path or a binary file) as records_frame gives it."""
    return pd.read_csv(source, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
