"""The canonical dataset folder: `interactions`, `items` and optional `users` tables.

Each table is one file, `.csv`, `.jsonl` or `.parquet`. Every problem with a file raises
`DataError` naming the file and the line (csv/jsonl, as a text editor counts: the csv header is
line 1) or row (parquet, 1-based), listing up to five offending rows in one message.

Decisions:
- ids are strings, read verbatim ("007" stays "007"); jsonl/parquet integer ids become their
  decimal string.
- timestamps are numbers (seconds) or ISO-8601 strings, converted to epoch seconds (UTC when no
  offset is given). A bare number is always a number ("2020" is 2020 s, not a year).
- interactions keep file order; repeated (user, item, time) rows are kept (splits decide).
- `rating` and `event` columns are accepted but not kept: `Interactions` holds implicit feedback.
- an interaction `domain` column fills item domains when the items file has none; a conflict
  with the items file is an error.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from transrec.data.schema import MODALITIES, IdMap, Interactions, ItemCatalog, RecDataset, UserProfiles
from transrec.errors import DataError
from transrec.registry import DATASETS

FORMATS = ("csv", "jsonl", "parquet")
TABLES = ("interactions", "items", "users")
MAX_REPORTED = 5
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass
class Table:
    """A file read as object columns, with each row's line (text files) or row number."""

    path: Path
    frame: pd.DataFrame
    locs: np.ndarray
    unit: str  # "line" or "row"

    def __len__(self) -> int:
        return len(self.frame)

    def where(self, i: int) -> str:
        return f"{self.unit} {int(self.locs[i])}"

    def fail(self, problem: str, rows: np.ndarray | list[int], show: Callable[[int], str] | None = None) -> None:
        """Raise one DataError listing the first few offending rows."""
        rows = list(rows)
        shown = [self.where(i) + (f" ({show(i)})" if show else "") for i in rows[:MAX_REPORTED]]
        more = f" and {len(rows) - MAX_REPORTED} more" if len(rows) > MAX_REPORTED else ""
        raise DataError(f"{self.path.name}: {problem} at {', '.join(shown)}{more}")

    def column(self, name: str) -> list:
        return self.frame[name].tolist() if name in self.frame.columns else [None] * len(self)


# ---------------------------------------------------------------------------------- reading


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path.name}: file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path.name}: not valid UTF-8 at line {line} (byte 0x{data[e.start]:02x}); save the file as UTF-8"
        ) from None


def _records(text: str) -> list[tuple[int, list[str]]]:
    """(start line, fields) of each csv record, header included; quoted fields may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    out: list[tuple[int, list[str]]] = []
    last = 0
    try:
        for record in reader:
            out.append((last + 1, record))
            last = reader.line_num
    except csv.Error:
        out.append((last + 1, []))
    return out


def _record_lines(text: str) -> np.ndarray:
    return np.asarray([start for start, _ in _records(text)[1:]], dtype=np.int64)


def _parser_line(text: str, message: str) -> str:
    """pandas counts records ('line N' 1-based, 'row N' 0-based); turn that into an editor line."""
    found = re.search(r"in line (\d+)", message) or re.search(r"at row (\d+)", message)
    if not found:
        return ""
    record = int(found.group(1)) - (1 if found.re.pattern.startswith("in") else 0)
    starts = [start for start, _ in _records(text)]
    return f" at line {starts[record] if record < len(starts) else record + 1}"


def _read_csv(path: Path) -> Table:
    text = _decode(path)
    records = _records(text[: text.find("\n") + 1 or None])  # the header (one line is enough)
    header = [h.strip() for h in records[0][1]] if records else []
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataError(f"{path.name}: duplicate column name(s) {dup} in the header (line 1)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                skip_blank_lines=False, index_col=False,
            )
    except pd.errors.ParserWarning:  # a data row longer than the header; pandas would drop fields
        bad = [f"line {start}" for start, fields in _records(text)[1:] if len(fields) > len(header)]
        raise DataError(
            f"{path.name}: more fields than the {len(header)} header columns at "
            f"{', '.join(bad[:MAX_REPORTED]) or 'some line'}"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, ValueError) as e:
        raise DataError(f"{path.name}: malformed csv{_parser_line(text, str(e))}: {str(e).strip()}") from None
    _set_columns(frame, path)
    multiline = any(frame[c].str.contains("[\r\n]", regex=True).any() for c in frame.columns)
    locs = _record_lines(text) if multiline else np.arange(2, len(frame) + 2, dtype=np.int64)
    if len(locs) != len(frame):  # csv module and pandas disagree: fall back to row order
        locs = np.arange(2, len(frame) + 2, dtype=np.int64)
    blank = (frame == "").all(axis=1).to_numpy() if len(frame.columns) else np.zeros(len(frame), bool)
    frame = frame.loc[~blank].reset_index(drop=True).astype(object)
    return Table(path, frame, locs[~blank], "line")


def _set_columns(frame: pd.DataFrame, path: Path) -> None:
    """Strip column names (a space after a comma is common); duplicates are an error."""
    names = [str(c).strip() for c in frame.columns]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path.name}: duplicate column name(s) {dup} in the header")
    frame.columns = names


def _read_jsonl(path: Path) -> Table:
    rows, locs = [], []
    for n, line in enumerate(_decode(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path.name}: line {n}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path.name}: line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        locs.append(n)
    # object columns built by hand: pandas infers float64 for a column mixing ints and floats (or ints
    # beyond int64) and would silently round an id such as 2**62 + 1
    columns = list(dict.fromkeys(key for row in rows for key in row))
    frame = pd.DataFrame({c: pd.Series([row.get(c) for row in rows], dtype=object) for c in columns})
    frame = frame.where(frame.notna(), None)
    return Table(path, frame, np.asarray(locs, dtype=np.int64), "line")


def _read_parquet(path: Path) -> Table:
    if path.stat().st_size == 0:
        raise DataError(f"{path.name}: file is empty")
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for a corrupt file
        raise DataError(f"{path.name}: cannot read parquet file: {e}") from None
    _set_columns(frame, path)
    frame = frame.reset_index(drop=True)
    for c in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[c]):
            frame[c] = frame[c].map(lambda v: None if pd.isna(v) else v.isoformat())
    frame = frame.astype(object)
    frame = frame.where(frame.notna(), None)
    return Table(path, frame, np.arange(1, len(frame) + 1, dtype=np.int64), "row")


READERS: dict[str, Callable[[Path], Table]] = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}


def _find(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}.{fmt}" for fmt in FORMATS if (folder / f"{stem}.{fmt}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several {stem} files ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def read_table(path: Path, required: tuple[str, ...]) -> Table:
    """Read one table file and check that it has rows and the required columns."""
    table = READERS[path.suffix.lstrip(".")](path)
    columns = list(table.frame.columns)
    missing = [c for c in required if c not in columns]
    if missing:
        hint = ""
        if len(columns) == 1:
            for sep, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
                if sep in columns[0]:
                    hint = f"; it looks like {name}-separated, but csv files must be comma-separated"
                    break
        raise DataError(
            f"{path.name}: missing required column(s) {', '.join(missing)}; found columns {columns}{hint}"
        )
    if len(table) == 0:
        raise DataError(f"{path.name}: no data rows")
    return table


# ------------------------------------------------------------------------------ conversion


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v == "") or (isinstance(v, float) and math.isnan(v))


def _as_id(v: Any) -> str | None:
    """A value as an id string; None when empty or not id-like."""
    if _is_missing(v) or isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(v) <= 2**53:
        return str(int(v))  # beyond 2**53 a float is not the integer the user wrote (1e30 -> 1000...656)
    return None


def _ids(table: Table, name: str) -> list[str]:
    values = [_as_id(v) for v in table.column(name)]
    bad = [i for i, v in enumerate(values) if v is None]
    if bad:
        raw = table.column(name)
        table.fail(f"empty or invalid {name}", bad, lambda i: repr(raw[i]))
    return values  # type: ignore[return-value]


def _text(v: Any) -> str | None:
    return None if _is_missing(v) else str(v)


def parse_timestamps(values: list) -> tuple[np.ndarray, np.ndarray]:
    """Numbers or ISO-8601 strings -> (epoch seconds float64, bad mask)."""
    raw = pd.Series(values, dtype=object)
    strings = raw.map(lambda v: isinstance(v, str))
    numeric = raw.map(lambda v: isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))
    out = np.full(len(raw), np.nan)
    out[numeric.to_numpy()] = raw[numeric].astype(float).to_numpy()
    if strings.any():
        text = raw[strings].str.strip()
        as_num = pd.to_numeric(text, errors="coerce")
        rest = as_num.isna() & text.ne("")
        if rest.any():
            dates = pd.to_datetime(text[rest], format="ISO8601", utc=True, errors="coerce")
            as_num[rest] = (dates - _EPOCH) / pd.Timedelta(seconds=1)
        out[strings.to_numpy()] = as_num.to_numpy(dtype=float)
    return out, ~np.isfinite(out)


def _timestamps(table: Table) -> np.ndarray:
    raw = table.column("timestamp")
    out, bad = parse_timestamps(raw)
    if bad.any():
        table.fail(
            "timestamp is not a number or an ISO-8601 date", np.flatnonzero(bad), lambda i: repr(raw[i])
        )
    return out


def _duplicates(table: Table, ids: list[str], kind: str) -> None:
    seen: dict[str, int] = {}
    dup = []
    for i, key in enumerate(ids):
        if key in seen:
            dup.append(i)
        else:
            seen[key] = i
    if dup:
        table.fail(f"duplicate {kind}", dup, lambda i: f"{ids[i]!r}, first at {table.where(seen[ids[i]])}")


def _catalog(table: Table, folder: Path) -> ItemCatalog:
    ids = _ids(table, "item_id")
    _duplicates(table, ids, "item_id")
    modality = [_text(v) or "id" for v in table.column("modality")]
    bad = [i for i, m in enumerate(modality) if m not in MODALITIES]
    if bad:
        table.fail(f"modality must be one of {', '.join(MODALITIES)}", bad, lambda i: repr(modality[i]))
    text = [_text(v) for v in table.column("text")]
    image = [_text(v) for v in table.column("image")]
    for kind, values in (("text", text), ("image", image)):
        bad = [i for i, (m, v) in enumerate(zip(modality, values)) if m == kind and v is None]
        if bad:
            table.fail(f"modality {kind!r} item without {kind}", bad, lambda i: repr(ids[i]))
    domain = [_text(v) or "default" for v in table.column("domain")]
    return ItemCatalog.from_records(ids, modality, text, image, domain, root=folder)


def _user_attributes(table: Table, users: IdMap) -> dict[str, list]:
    ids = _ids(table, "user_id")
    _duplicates(table, ids, "user_id")
    attributes: dict[str, list] = {}
    for name in table.frame.columns:
        if name == "user_id":
            continue
        values = [None if _is_missing(v) else v for v in table.column(name)]
        if table.path.suffix == ".csv" and all(v is None or _canonical_int(v) for v in values):
            values = [None if v is None else int(v) for v in values]
        column: list = [None] * (len(users) + 1)
        for key, v in zip(ids, values):
            if key in users:
                column[users.index(key)] = v
        attributes[name] = column
    return attributes


def _canonical_int(v: str) -> bool:
    """'25' but not '025' or '+25': converting it to int and back gives the same text."""
    try:
        return str(int(v)) == v
    except ValueError:
        return False


@DATASETS.register("folder")
def load_dataset_folder(path: str | Path, name: str | None = None) -> RecDataset:
    """Load a canonical dataset folder (see the module docstring for the rules)."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist" if not folder.exists() else f"{folder} is not a folder")
    inter_path = _find(folder, "interactions")
    if inter_path is None:
        found = sorted(p.name for p in folder.iterdir())
        raise DataError(
            f"{folder}: no interactions file (expected interactions.csv, .jsonl or .parquet); "
            f"found: {', '.join(found[:20]) or 'nothing'}"
        )
    inter = read_table(inter_path, ("user_id", "item_id", "timestamp"))
    user_ids = _ids(inter, "user_id")
    item_ids = _ids(inter, "item_id")
    times = _timestamps(inter)
    inter_domain = [_text(v) for v in inter.column("domain")] if "domain" in inter.frame.columns else None

    items_path = _find(folder, "items")
    if items_path is not None:
        items_table = read_table(items_path, ("item_id",))
        catalog = _catalog(items_table, folder)
        unknown = [i for i, key in enumerate(item_ids) if key not in catalog.ids]
        if unknown:
            inter.fail(f"item_id not in {items_path.name}", unknown, lambda i: repr(item_ids[i]))
        has_domain = "domain" in items_table.frame.columns
    else:
        catalog = ItemCatalog.from_records(list(dict.fromkeys(item_ids)), root=folder)
        has_domain = False
    item_index = catalog.ids.encode(item_ids)
    if inter_domain is not None:
        if has_domain:
            bad = [i for i, d in enumerate(inter_domain) if d is not None and d != catalog.domain[item_index[i]]]
            if bad:
                inter.fail(
                    "domain differs from the item's domain in the items file", bad,
                    lambda i: f"item {item_ids[i]!r}: {inter_domain[i]!r} vs {catalog.domain[item_index[i]]!r}",
                )
        else:
            first: dict[int, int] = {}
            for i, (idx, d) in enumerate(zip(item_index, inter_domain)):
                if d is None:
                    continue
                idx = int(idx)
                if idx in first and inter_domain[first[idx]] != d:
                    inter.fail(
                        "item appears in two domains", [i],
                        lambda i: f"{item_ids[i]!r}: {d!r}, but {inter_domain[first[idx]]!r} at {inter.where(first[idx])}",
                    )
                first.setdefault(idx, i)
                catalog.domain[idx] = d

    users = IdMap(dict.fromkeys(user_ids), kind="user")
    interactions = Interactions(users, users.encode(user_ids), item_index, times)
    profiles = None
    users_path = _find(folder, "users")
    if users_path is not None:
        profiles = UserProfiles(users, _user_attributes(read_table(users_path, ("user_id",)), users))
    return RecDataset(name or folder.resolve().name, catalog, interactions, profiles)


# ---------------------------------------------------------------------------------- writing


def _number(t: float) -> int | float:
    return int(t) if float(t).is_integer() else float(t)


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        out = frame.copy()
        for c in out.columns:  # lists/dicts (e.g. PeterRec targets) as JSON text
            out[c] = _objects(json.dumps(v) if isinstance(v, (list, dict)) else v for v in out[c])
        out.to_csv(path, index=False)
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for row in frame.to_dict(orient="records"):
                f.write(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False) + "\n")
    else:
        out = frame.copy()
        for c in out.columns:  # pyarrow needs one type per column
            kinds = {type(v) for v in out[c] if v is not None}
            if out[c].dtype == object and len(kinds) > 1 and not kinds <= {int, float}:
                out[c] = _objects(None if v is None else str(v) for v in out[c])
        out.to_parquet(path, index=False)


def _objects(values: Any) -> pd.Series:
    """An object column as given (Series.map would turn ints with None into floats)."""
    return pd.Series(list(values), dtype=object)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


@dataclass
class _Columns:
    """Build a DataFrame of object columns without pandas type inference."""

    data: dict[str, list]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in self.data.items()})


def write_dataset_folder(dataset: RecDataset, path: str | Path, fmt: str = "csv", overwrite: bool = False) -> Path:
    """Write `dataset` as a canonical folder; `load_dataset_folder` reads it back unchanged.

    Image paths are rewritten relative to the new folder so they still point at the same files.
    Existing canonical files are an error unless `overwrite`, which replaces them (all formats).
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    existing = [folder / f"{t}.{f}" for t in TABLES for f in FORMATS if (folder / f"{t}.{f}").exists()]
    if existing and not overwrite:
        raise DataError(f"{folder} already holds {', '.join(p.name for p in existing)}; pass overwrite=True")
    for p in existing:
        p.unlink()

    inter, items = dataset.interactions, dataset.items
    ts = [_number(t) for t in inter.timestamp] if fmt != "parquet" else list(inter.timestamp.astype(float))
    _write(_Columns({
        "user_id": inter.users.decode(inter.user),
        "item_id": items.ids.decode(inter.item),
        "timestamp": ts,
    }).frame(), folder / f"interactions.{fmt}", fmt)

    images = []
    for img in items.image[1:]:
        if img is not None and items.root is not None and not os.path.isabs(img):
            img = Path(os.path.relpath(Path(items.root).resolve() / img, folder.resolve())).as_posix()
        images.append(img)
    _write(_Columns({
        "item_id": items.ids.to_list(),
        "modality": items.modality[1:],
        "text": items.text[1:],
        "image": images,
        "domain": items.domain[1:],
    }).frame(), folder / f"items.{fmt}", fmt)

    if dataset.profiles is not None:
        cols = {"user_id": dataset.profiles.users.to_list()}
        cols.update({k: list(v[1:]) for k, v in dataset.profiles.attributes.items()})
        _write(_Columns(cols).frame(), folder / f"users.{fmt}", fmt)
    return folder
