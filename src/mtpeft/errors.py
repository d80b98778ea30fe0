"""User-facing errors: the CLI prints these as one clear line, never a traceback."""

from __future__ import annotations


class MtpeftError(Exception):
    """An error caused by the user's input or configuration."""


class DataError(MtpeftError):
    """A problem with one record of a data file; the message names the file and line."""

    def __init__(self, path: object, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
