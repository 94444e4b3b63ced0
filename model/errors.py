"""Errors for bad input: each names the file (and line or column where known) and what was expected."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Input data that cannot be loaded. The message is one line, fit to print as a CLI error."""

    def __init__(self, path: str | Path | None, expected: str, *, line: int | None = None, column: str | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        self.expected = expected
        where = self.path or "<input>"
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {expected}".replace("\n", " "))


class CheckpointError(ValueError):
    """A checkpoint directory that is incomplete, tampered with or of an unknown version."""


class TrainingError(RuntimeError):
    """Training that cannot give a usable model (its loss became NaN or infinite); one line, like DataError."""
