"""Format readers: every source becomes numbered raw rows, nothing more.

Row numbers are 1-based counts of data rows, as a person counts them when looking at the data:
- CSV: the header line is NOT counted (row 1 is the first record after the header); blank lines are
  skipped and not counted; a quoted field spanning lines is still one row.
- JSONL: non-blank lines (row n is the n-th non-blank line; equal to the line number without blanks).
- JSON: the n-th element of the top-level list (or of its "data" list).
- Parquet, `load_from_disk` directories, hub data sets: the n-th record.
A line that cannot be parsed (bad JSON, wrong CSV field count) yields a `RowProblem` in place of the
row, so the caller applies one policy (raise or skip) to every kind of malformed row.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securefed.errors import ConfigError, DataError

_EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
               ".parquet": "parquet", ".pq": "parquet"}
# owner/name or name: what `datasets.load_dataset` accepts as a hub id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class RowProblem:
    """A row that could not even be parsed; `reason` completes "<origin> row <n>: ..."."""

    reason: str


@dataclass(frozen=True)
class RawRows:
    """Parsed rows of one source. `origin` names the source in error messages."""

    origin: str
    rows: tuple[tuple[int, Any], ...]


def resolve_format(source: str, fmt: str) -> str:
    """The concrete format for `source` ("auto" picks by extension, directory or hub-id shape)."""
    path = Path(source).expanduser()
    if fmt == "hub":
        return "hub"
    if fmt != "auto":
        if not path.exists():
            raise DataError(f"data file not found: {source}")
        if fmt == "disk" and not path.is_dir():
            raise DataError(f"{source}: format 'disk' needs a directory saved by datasets.save_to_disk")
        return fmt
    if path.is_dir():
        return "disk"
    if path.is_file():
        try:
            return _EXTENSIONS[data_suffix(path)]
        except KeyError:
            raise ConfigError(
                f"data.format: cannot tell the format of {source} from its extension; "
                f"set data.format to one of json, jsonl, csv, parquet"
            ) from None
    # Not on disk. Something shaped like a file path is a missing file, not a hub id.
    looks_like_path = (
        data_suffix(path) in _EXTENSIONS
        or source.startswith(("/", ".", "~"))
        or "\\" in source
        or not _HUB_ID.match(source)
    )
    if looks_like_path:
        raise DataError(f"data file not found: {source}")
    return "hub"


def read_rows(source: str, fmt: str, split: str, encoding: str) -> RawRows:
    """Read all raw rows of a local file/directory or hub data set (`fmt` already resolved)."""
    readers = {
        "json": _read_json,
        "jsonl": _read_jsonl,
        "csv": _read_csv,
        "parquet": _read_parquet,
    }
    if fmt in readers:
        try:
            rows = tuple(readers[fmt](Path(source).expanduser(), source, encoding))
        except (gzip.BadGzipFile, EOFError) as exc:  # a corrupt or truncated .gz, found while reading
            raise DataError(f"{source}: not a readable gzip file ({exc})") from None
        return RawRows(origin=source, rows=rows)
    if fmt == "disk":
        return RawRows(origin=source, rows=tuple(_number(_load_disk(source, split))))
    if fmt == "hub":
        origin = f"hub data set {source} (split {split})"
        return RawRows(origin=origin, rows=tuple(_number(_load_hub(source, split))))
    raise ConfigError(f"data.format: unknown format {fmt!r}")


def data_suffix(path: Path) -> str:
    """The format suffix, looking through a trailing .gz (data.jsonl.gz reads as jsonl)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def read_text(path: Path, encoding: str = "utf-8-sig") -> str:
    """A whole local text file, strictly decoded; a .gz file is decompressed as it is read (in place,
    never unpacked beside shared data). DataError on a corrupt .gz or undecodable bytes."""
    try:
        with _open_text(path, str(path), encoding, errors="strict") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        name = "UTF-8" if encoding.lower().startswith("utf-8") else encoding
        raise DataError(f"{path}: not {name} text ({exc.reason} at byte {exc.start})") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None


def _open_text(path: Path, source: str, encoding: str, errors: str = "replace"):
    # errors="replace" for training data: a few mis-encoded characters (common in scraped CSVs such
    # as Financial PhraseBank) must not make a whole data set unreadable.
    try:
        if path.suffix.lower() == ".gz":  # read in place: shared data is never copied to unpack it
            return gzip.open(path, "rt", encoding=encoding, errors=errors, newline="")
        return path.open("r", encoding=encoding, errors=errors, newline="")
    except FileNotFoundError:
        raise DataError(f"data file not found: {source}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {source}: {exc.strerror or exc}") from None


def _read_json(path: Path, source: str, encoding: str) -> Iterator[tuple[int, Any]]:
    with _open_text(path, source, encoding) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if not isinstance(doc, list):
        raise DataError(f"{source}: expected a JSON list of rows or an object with a 'data' list")
    yield from _number(doc)


def _read_jsonl(path: Path, source: str, encoding: str) -> Iterator[tuple[int, Any]]:
    with _open_text(path, source, encoding) as f:
        number = 0
        for line in f:
            if not line.strip():
                continue
            number += 1
            try:
                # Without its line ending: a line cut short otherwise fails at "line 2 column 1".
                yield number, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                yield number, RowProblem(f"invalid JSON: {exc.msg} (column {exc.colno})")


def _read_csv(path: Path, source: str, encoding: str) -> Iterator[tuple[int, Any]]:
    with _open_text(path, source, encoding) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{source}: cannot parse the CSV header: {exc}") from None
        header = [h.lstrip("\ufeff").strip() for h in header]  # tolerate a UTF-8 BOM
        number = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # The reader's state after a parse error is unreliable: stop here, naming the row.
                raise DataError(f"{source} row {number + 1}: cannot parse CSV: {exc}") from None
            if not record or all(not cell.strip() for cell in record):
                continue
            number += 1
            if len(record) != len(header):
                yield number, RowProblem(
                    f"has {len(record)} fields, the header has {len(header)}"
                )
            else:
                yield number, dict(zip(header, record))


def _read_parquet(path: Path, source: str, encoding: str) -> Iterator[tuple[int, Any]]:
    del encoding  # parquet strings are UTF-8 by definition
    import pyarrow.parquet as pq  # lazy: only parquet users pay the import

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"data file not found: {source}") from None
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{source}: cannot read Parquet: {exc}") from None
    yield from _number(table.to_pylist())


def _load_disk(source: str, split: str):
    import datasets  # lazy: heavy import

    try:
        loaded = datasets.load_from_disk(str(Path(source).expanduser()))
    except FileNotFoundError as exc:
        raise DataError(f"{source}: not a data set saved by datasets.save_to_disk ({exc})") from None
    return _pick_split(loaded, split, source)


def _load_hub(hub_id: str, split: str):
    # Network access happens here only; tests never reach this with a real hub id.
    import datasets

    try:
        loaded = datasets.load_dataset(hub_id, split=split)
    except Exception as exc:  # many network/auth/not-found types; all mean "cannot load"
        raise DataError(f"cannot load hub data set {hub_id!r} (split {split!r}): {exc}") from None
    return _pick_split(loaded, split, f"hub data set {hub_id}")


def _pick_split(loaded: Any, split: str, origin: str):
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(
                f"{origin}: no split {split!r}; available: {', '.join(sorted(loaded))} "
                f"(set data.split)"
            )
        return loaded[split]
    return loaded


def _number(rows) -> Iterator[tuple[int, Any]]:
    for index, row in enumerate(rows):
        yield index + 1, row
