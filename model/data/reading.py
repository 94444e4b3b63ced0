"""Reading tables strictly: every failure becomes a DataError naming the file, line and column.

CSV goes through pyarrow rather than pandas' C parser because pandas silently accepts rows with too
many fields once `usecols` is given, and we want both: read only the needed columns *and* reject
malformed rows. Every frame carries `_line` (the file's physical line, header = line 1, assuming one
row per line; for Parquet the 1-based row) and `_file` (an index into the caller's list of paths), so
that a bad value found after merging can still be traced to where it came from.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pacompute
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from promptehr.model.data.opening import active_limits, open_data_file
from promptehr.model.errors import DataError

CSV_SUFFIXES = (".csv", ".csv.gz")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")


def is_table(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(TABLE_SUFFIXES)


def find_table(folder: Path, stem: str) -> Path:
    """The file `stem`.csv or `stem`.csv.gz in folder, matching the name without regard to case."""
    wanted = {stem.lower() + s for s in CSV_SUFFIXES}
    hits = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower() in wanted) if folder.is_dir() else []
    if not hits:
        raise DataError(folder / f"{stem}.csv", f"missing file: expected {stem}.csv or {stem}.csv.gz in {folder}")
    return hits[0]


# The header is read with a bounded readline: a "header" of gigabytes (one runaway line, a gzip bomb
# without a newline) is refused here instead of being read into memory.
MAX_HEADER_BYTES = 1 << 20


def _first_line(path: Path) -> bytes:
    with open_data_file(path) as f:
        line = f.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        raise DataError(path, f"header line longer than {MAX_HEADER_BYTES:,} bytes: expected a CSV header row", line=1)
    return line


def read_header(path: Path) -> list[str]:
    raw = _first_line(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text (byte {raw[e.start]:#04x}): expected a UTF-8 CSV header", line=1) from None
    if not text.strip():
        raise DataError(path, "empty file: expected a CSV header row", line=1)
    try:
        return next(csv.reader(io.StringIO(text.rstrip("\r\n"))))  # as spelled: pyarrow selects by exact name
    except csv.Error as e:  # e.g. a field over csv.field_size_limit() (131,072 characters)
        raise DataError(path, f"unreadable CSV header ({e}): expected column names", line=1) from None


def _match_columns(path: Path, present: list[str], columns: list[str], optional: tuple[str, ...]) -> dict[str, str]:
    """canonical lower-case name -> name as spelled in the file (headers may be upper- or lower-case)."""
    by_lower = {c.strip().lower(): c for c in present}
    found = {c: by_lower[c] for c in columns if c in by_lower}
    for c in columns:
        if c not in found and c not in optional:
            raise DataError(path, f"missing column: expected columns {', '.join(c for c in columns)} (any case); found {', '.join(present)}", column=c)
    return found


def _line_of_bad_utf8(path: Path) -> int | None:
    """The line of the first byte that is not UTF-8, streamed (the file may be large, or a bomb)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, offset = 1, 0
    with open_data_file(path) as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                # e.start counts from the bytes the decoder still held from the previous chunk.
                return lines + chunk.count(b"\n", 0, max(0, e.start - offset))
            lines += chunk.count(b"\n")
            offset = len(decoder.getstate()[0])
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:  # the file ends inside a character
        return lines
    return None


def _read_csv_arrow(path: Path, names: list[str], use_threads: bool) -> pa.Table:
    # Read from our guarded stream, not the path: pyarrow would open a FIFO, follow any symlink and
    # inflate a .gz file without limit (the stream already hands out decompressed bytes).
    with open_data_file(path) as f:
        return pacsv.read_csv(
            f,
            read_options=pacsv.ReadOptions(use_threads=use_threads),
            # Quoted newlines are legal CSV; allowing them costs little and avoids a false "malformed row".
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=names,
                column_types={n: pa.string() for n in names},  # ids and codes are text: keep leading zeros
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )


def _read_csv(path: Path, columns: list[str], optional: tuple[str, ...]) -> pd.DataFrame:
    found = _match_columns(path, read_header(path), columns, optional)
    names = list(found.values())
    try:
        table = _read_csv_arrow(path, names, use_threads=True)
    except pa.ArrowInvalid as e:
        msg = str(e)
        if "UTF8" in msg or "UTF-8" in msg:
            raise DataError(path, "not UTF-8 text: expected UTF-8 encoded CSV", line=_line_of_bad_utf8(path)) from None
        if "CSV parse error" in msg:
            # Threaded parsing does not know line numbers; parse again single-threaded to find it.
            try:
                _read_csv_arrow(path, names, use_threads=False)
            except pa.ArrowInvalid as e2:
                msg = str(e2)
            m = re.search(r"Row #(\d+)", msg)
            detail = re.sub(r"^.*?(Row #\d+: )?(?=Expected)", "", msg)
            raise DataError(path, f"malformed CSV row ({detail[:200]}): expected one field per header column", line=int(m.group(1)) if m else None) from None
        raise DataError(path, f"cannot parse CSV ({msg[:200]})") from None
    except (pa.ArrowException, OSError, EOFError) as e:
        raise DataError(path, f"cannot read file ({str(e)[:200]}): expected CSV text or gzipped CSV") from None
    df = table.to_pandas()
    df.columns = [c.strip().lower() for c in df.columns]
    df["_line"] = np.arange(2, len(df) + 2, dtype=np.int64)
    return df


def _read_parquet_columns(path: Path, parquet: pq.ParquetFile, names: list[str]) -> pa.Table:
    """The columns, decoded a batch at a time: Parquet pages are compressed and dictionary-encoded,
    so a small file can decode to gigabytes; the decoded bytes count against the decompression limit
    as they come, and the read stops there."""
    limit = active_limits().max_decompressed_bytes
    batches, total = [], 0
    for batch in parquet.iter_batches(batch_size=65_536, columns=names, use_threads=False):
        total += batch.nbytes
        if limit is not None and total > limit:
            raise DataError(path, f"decoded data over the limit of {limit:,} bytes")
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=pa.schema([parquet.schema_arrow.field(n) for n in names]))


def _read_parquet(path: Path, columns: list[str], optional: tuple[str, ...]) -> pd.DataFrame:
    try:
        with open_data_file(path) as f:
            parquet = pq.ParquetFile(f)
            found = _match_columns(path, parquet.schema_arrow.names, columns, optional)
            table = _read_parquet_columns(path, parquet, list(found.values()))
    except DataError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise DataError(path, f"cannot read Parquet file ({str(e)[:200]})") from None
    df = table.to_pandas()
    df.columns = [c.strip().lower() for c in df.columns]
    df["_line"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df


def read_table(path: Path, columns: list[str], *, file_index: int = 0, optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Only the named columns (canonical lower-case names), plus `_line` and `_file`.

    CSV columns come back as strings with empty fields as missing; Parquet columns keep their types.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.name.lower().endswith(".parquet"):
        df = _read_parquet(path, columns, optional)
    else:
        df = _read_csv(path, columns, optional)
    df["_file"] = np.full(len(df), file_index, dtype=np.int32)
    return df


def _shown(text: str, limit: int = 60) -> str:
    # A bad value can be megabytes long (one runaway field); the message stays one short line.
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text):,} characters)"


def fail(paths: list[Path], df: pd.DataFrame, bad: pd.Series | np.ndarray, expected: str, column: str | None = None, *,
         name: str | Callable[[pd.DataFrame, int], str] | None = None):
    """Raise a DataError at the first row where `bad` is true, naming its file, line and value.

    `name` is the column as the user knows it, where the frame has renamed it (visit_id -> hadm_id),
    or a function (df, row position) -> name (DE-SynPUF: the slot column a code came from).
    """
    i = int(np.flatnonzero(np.asarray(bad))[0])
    if callable(name):
        name = name(df, i)
    path = Path(paths[int(df["_file"].iat[i])])
    line = int(df["_line"].iat[i])
    value = df[column].iat[i] if column is not None and column in df else None
    if isinstance(value, pd.Timestamp):
        value = value.isoformat(sep=" ")
    got = f" (got {_shown(str(value))})" if value is not None else ""
    column = name or column
    if path.name.lower().endswith(".parquet"):
        raise DataError(path, f"row {line}: {expected}{got}", column=column)
    raise DataError(path, f"{expected}{got}", line=line, column=column)


def require(paths: list[Path], df: pd.DataFrame, columns: list[str]) -> None:
    for c in columns:
        missing = df[c].isna().to_numpy()
        if missing.any():
            fail(paths, df, missing, "empty value: expected a value", column=c)


def parse_times(paths: list[Path], df: pd.DataFrame, column: str, fmt: str = "ISO8601") -> pd.Series:
    """Datetime column, microsecond resolution; an unparseable value names its file, line and column."""
    s = df[column]
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s
    else:
        out = pd.to_datetime(s, format=fmt, errors="coerce")
    bad = (out.isna() & s.notna()).to_numpy()
    if bad.any():
        fail(paths, df, bad, f"unparseable date: expected {'YYYYMMDD' if fmt == '%Y%m%d' else 'an ISO date or datetime'}", column=column)
    return out.astype("datetime64[us]")


def parse_numbers(paths: list[Path], df: pd.DataFrame, column: str) -> pd.Series:
    s = df[column]
    try:  # arrow's cast is ~10x faster than to_numeric on arrow strings; it only fails on bad input
        return pd.Series(pacompute.cast(pa.array(s), pa.float64()).to_numpy(zero_copy_only=False), index=s.index)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    out = pd.to_numeric(s, errors="coerce").astype(float)
    bad = (out.isna() & s.notna()).to_numpy()
    if bad.any():
        fail(paths, df, bad, "not a number: expected a number", column=column)
    return out


def parse_sex(paths: list[Path], df: pd.DataFrame, column: str, mapping: dict[str, str]) -> pd.Series:
    """Map source sex codes to "M"/"F" (case-insensitive); anything else is an error."""
    out = df[column].str.strip().str.lower().map({k.lower(): v for k, v in mapping.items()})
    bad = (out.isna() & df[column].notna()).to_numpy()
    if bad.any():
        fail(paths, df, bad, f"unknown sex code: expected one of {', '.join(mapping)}", column=column)
    return out.astype(object)
