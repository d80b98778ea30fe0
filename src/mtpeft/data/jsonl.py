"""Read JSON Lines files (plain or .gz) record by record, naming file:line on every problem."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, TypeVar

from mtpeft.errors import DataError


@dataclass(frozen=True)
class Record:
    """One parsed JSON object with where it came from, so later checks can name file:line too."""

    path: Path
    line: int
    data: dict[str, Any]

    def error(self, message: str) -> DataError:
        return DataError(self.path, self.line, message)


@dataclass
class SkipCounter:
    """Counts records skipped for being malformed when the user asked to skip rather than stop.

    With ``enabled`` False (the default) the first bad record raises; the run never loses data silently.
    """

    enabled: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    seen: set[tuple[str, int | None]] = field(default_factory=set, repr=False)

    def handle(self, error: DataError) -> None:
        if not self.enabled:
            raise error
        key = str(error.path)
        if error.line is not None and (key, error.line) in self.seen:
            return  # the same file read again (e.g. a functions file per split): one record, one skip
        self.seen.add((key, error.line))
        self.counts[key] = self.counts.get(key, 0) + 1
        self.examples.setdefault(key, str(error))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self) -> dict[str, Any]:
        return {"skipped": dict(self.counts), "first_error": dict(self.examples)}


T = TypeVar("T")


def read_records(path: str | Path, skips: SkipCounter | None, parse: Callable[[Record], T | None]) -> Iterator[T]:
    """``parse`` applied to every record of a JSON Lines file: a record it rejects (DataError) is
    raised or, when skipping, counted; a record it maps to None is left out on purpose."""
    skips = skips or SkipCounter()
    for record in read_jsonl(path, skips):
        try:
            item = parse(record)
        except DataError as error:
            skips.handle(error)
            continue
        if item is not None:
            yield item


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_jsonl(path: str | Path, skips: SkipCounter | None = None) -> Iterator[Record]:
    """Yield every JSON object of a .jsonl / .jsonl.gz file; blank lines are ignored.

    Lines are decoded one by one (strict UTF-8) so that a bad byte is reported with its own line.
    """
    path = Path(path)
    skips = skips or SkipCounter()
    if not path.exists():
        raise DataError(path, None, "file not found")
    line_no = 0
    try:
        with _open_binary(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    skips.handle(DataError(path, line_no, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"))
                    continue
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    skips.handle(DataError(path, line_no, f"malformed JSON ({exc.msg} at column {exc.colno})"))
                    continue
                except (ValueError, RecursionError) as exc:  # a 5,000-digit number, arrays nested 100,000 deep
                    skips.handle(DataError(path, line_no, f"unreadable JSON ({type(exc).__name__}: {str(exc)[:80]})"))
                    continue
                if not isinstance(data, dict):
                    skips.handle(DataError(path, line_no, f"expected a JSON object, got {type(data).__name__}"))
                    continue
                yield Record(path, line_no, data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(path, line_no + 1, f"cannot read compressed file ({exc})") from None
    except OSError as exc:
        raise DataError(path, None, f"cannot read file ({exc})") from None
