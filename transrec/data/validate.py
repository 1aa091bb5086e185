"""Check a canonical dataset folder and report every problem, each with its file and line.

The loader (`transrec.data.io`) stops at the first kind of problem, which makes fixing a big file
a loop of edit-and-retry. This pass reads the same tables with the same parser (`read_table`) but
keeps going, so one run lists everything. Errors are what the loader or the leave-one-out split
would refuse (the data cannot be trained on); warnings are data that trains but perhaps not as
meant (duplicates, timestamps out of file order, users the filter will drop, unused content).
`transrec train` runs it for `data.source=folder` and stops on errors; `transrec data validate`
prints the report.

Unreadable images and blank texts are errors by default, as they stop a content model; with
`data.on_bad_content=placeholder` (the content store then encodes a blank image / empty text and
counts it) they are warnings. Text items without any text and image items without an image path
are always errors: the loader refuses them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from transrec.data.io import TABLES, Table, _as_id, _find, _text, parse_timestamps, read_table
from transrec.data.schema import MODALITIES
from transrec.errors import DataError

log = logging.getLogger(__name__)

ERROR, WARNING = "error", "warning"
MIN_INTERACTIONS = 3  # leave-one-out: train + valid + test
KEPT_PER_CHECK = 200  # findings stored per check; the rest are only counted
SHOWN_PER_CHECK = 5  # findings printed per check
CONTENT_CHECKS = ("bad-image", "blank-text")  # what data.on_bad_content=placeholder tolerates
_CONTENT_HINT = "data.on_bad_content=placeholder replaces bad images and blank texts (and counts them)"


@dataclass
class Finding:
    level: str  # ERROR or WARNING
    check: str  # short name of the check, e.g. "unknown-item"
    file: str
    where: str  # "line 3", "row 2" (parquet) or "" (the whole file)
    message: str

    def __str__(self) -> str:
        return f"{self.file}{' ' + self.where if self.where else ''}: {self.message}"

    def sort_key(self) -> tuple[str, int]:
        return self.file, int(self.where.split()[-1]) if self.where else 0


@dataclass
class Report:
    """What `validate_folder` found: summary lines, findings, and how many of each check."""

    folder: Path
    summary: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # (level, check) -> number found

    def add(self, level: str, check: str, file: str, where: str, message: str) -> None:
        self.counts[level, check] += 1
        if self.counts[level, check] <= KEPT_PER_CHECK:
            self.findings.append(Finding(level, check, file, where, message))

    @property
    def errors(self) -> list[Finding]:
        return sorted((f for f in self.findings if f.level == ERROR), key=Finding.sort_key)

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    def count(self, level: str) -> int:
        return sum(n for (lv, _), n in self.counts.items() if lv == level)

    def format(self) -> str:
        lines = [f"dataset folder: {self.folder}", *(f"  {s}" for s in self.summary)]
        for level, title in ((ERROR, "errors (the data cannot be trained on)"), (WARNING, "warnings")):
            if not self.count(level):
                continue
            lines.append(f"{title}:")
            shown: Counter = Counter()
            for f in sorted(self.findings, key=Finding.sort_key):
                if f.level == level:
                    shown[f.check] += 1
                    if shown[f.check] <= SHOWN_PER_CHECK:
                        lines.append(f"  {f}")
            for (lv, check), n in sorted(self.counts.items()):
                if lv == level and n > SHOWN_PER_CHECK:
                    lines.append(f"  ... and {n - SHOWN_PER_CHECK} more {check}")
        n_err, n_warn = self.count(ERROR), self.count(WARNING)
        verdict = "the data cannot be trained on" if n_err else "the data can be trained on"
        if any(self.counts[ERROR, c] for c in CONTENT_CHECKS):
            lines.append(f"note: {_CONTENT_HINT}")
        lines.append(f"{n_err} error(s), {n_warn} warning(s): {verdict}")
        return "\n".join(lines)

    def raise_or_log(self) -> None:
        """For `transrec train`: one DataError listing the first errors, else log the warnings."""
        if self.errors:
            shown = "; ".join(str(f) for f in self.errors[:SHOWN_PER_CHECK])
            more = self.count(ERROR) - min(len(self.errors), SHOWN_PER_CHECK)
            hint = f"; {_CONTENT_HINT}" if any(self.counts[ERROR, c] for c in CONTENT_CHECKS) else ""
            raise DataError(f"{self.folder}: the data cannot be trained on: {shown}"
                            f"{f' (and {more} more)' if more else ''}; "
                            f"run `transrec data validate {self.folder}` for the full report{hint}")
        for (level, check), n in sorted((+self.counts).items()):  # + drops zero counts
            first = next(f for f in self.findings if (f.level, f.check) == (level, check))
            log.warning("data check: %d x %s, e.g. %s", n, check, first)


def _read(report: Report, path: Path, required: tuple[str, ...]) -> Table | None:
    """`read_table`, with a file-level problem recorded as an error instead of raised."""
    try:
        return read_table(path, required)
    except DataError as err:
        report.add(ERROR, "unreadable-file", path.name, "", str(err).removeprefix(f"{path.name}: "))
        return None


def _ids(report: Report, table: Table, name: str) -> list[str | None]:
    values = [_as_id(v) for v in table.column(name)]
    raw = table.column(name)
    for i, v in enumerate(values):
        if v is None:
            report.add(ERROR, f"invalid-{name}", table.path.name, table.where(i), f"empty or invalid {name} {raw[i]!r}")
    return values


def _duplicate_ids(report: Report, table: Table, ids: list[str | None], name: str) -> None:
    first: dict[str, int] = {}
    for i, key in enumerate(ids):
        if key is None:
            continue
        if key in first:
            report.add(ERROR, f"duplicate-{name}", table.path.name, table.where(i),
                       f"duplicate {name} {key!r}, first at {table.where(first[key])}")
        first.setdefault(key, i)


def image_problem(path: Path) -> str | None:
    """Why an image file cannot be used (None if PIL opens and verifies it)."""
    from PIL import Image

    if not path.is_file():
        return "file not found"
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad files
        return f"corrupt or unreadable image ({type(err).__name__}: {err})"
    return None


def _add_rows(report: Report, level: str, check: str, table: Table, rows, message: Callable[[int], str]) -> None:
    """One finding per row; messages are built only for the rows kept (a big file can have millions)."""
    rows = [int(i) for i in rows]
    for i in rows[:KEPT_PER_CHECK]:
        report.add(level, check, table.path.name, table.where(i), message(i))
    if len(rows) > KEPT_PER_CHECK:
        report.counts[level, check] += len(rows) - KEPT_PER_CHECK


def _check_interactions(report: Report, table: Table) -> tuple[list[str | None], list[str | None]]:
    name = table.path.name
    users, items = _ids(report, table, "user_id"), _ids(report, table, "item_id")
    raw_times = table.column("timestamp")
    times, bad = parse_timestamps(raw_times)
    _add_rows(report, ERROR, "bad-timestamp", table, np.flatnonzero(bad),
              lambda i: f"timestamp is not a number or an ISO-8601 date: {raw_times[i]!r}")
    frame = pd.DataFrame({"u": pd.Series(users, dtype=object), "i": pd.Series(items, dtype=object), "t": times})
    ok = frame[frame.u.notna() & frame.i.notna() & ~bad]
    key = ["u", "i", "t"]
    first = pd.Series(ok.index, index=ok.index).groupby([ok.u, ok.i, ok.t], sort=False).transform("first")
    dup = ok.index[ok.duplicated(key).to_numpy()]
    _add_rows(report, WARNING, "duplicate-row", table, dup,
              lambda i: f"same user, item and timestamp as {table.where(first[i])} ({users[i]!r}, {items[i]!r}); "
                        f"both are kept")
    previous = pd.Series(ok.index, index=ok.index).groupby(ok.u, sort=False).shift()  # user's previous row
    has_previous = previous.notna().to_numpy()
    earlier = ok.index[has_previous][times[ok.index[has_previous]] < times[previous[has_previous].astype(int)]]
    _add_rows(report, WARNING, "time-order", table, earlier,
              lambda i: f"user {users[i]!r}: timestamp {raw_times[i]!r} is earlier than at "
                        f"{table.where(int(previous[i]))}; sequences follow timestamps, not file order")
    known = frame[frame.u.notna()]
    per_user = known.u.value_counts(sort=False)
    first_row = pd.Series(known.index, index=known.index).groupby(known.u, sort=False).first()
    counts = per_user.to_numpy() if len(per_user) else np.zeros(1, np.int64)
    report.summary.append(f"{name}: {len(table)} rows, {len(per_user)} users, {frame.i.nunique()} distinct items")
    report.summary.append(f"interactions per user: min {counts.min()}, median {np.median(counts):g}, max {counts.max()}")
    if len(ok):
        at_latest = ok[ok.t == ok.groupby("u").t.transform("max")].groupby("u").size()
        tied, two = int((at_latest >= 2).sum()), int((ok.u.value_counts() >= 2).sum())
        if tied:
            report.summary.append(f"users whose two latest interactions share a timestamp: {tied} of {two} "
                                  f"({100 * tied / max(two, 1):.0f}%; data.tie_order picks their test item)")
    short = per_user[per_user < MIN_INTERACTIONS]
    _add_rows(report, WARNING, "short-user", table, sorted(first_row[short.index]),
              lambda i: f"user {users[i]!r} has {per_user[users[i]]} interaction(s); users with fewer than "
                        f"{MIN_INTERACTIONS} are dropped")
    if len(per_user) and counts.max() < MIN_INTERACTIONS:
        report.add(ERROR, "no-trainable-user", name, "",
                   f"no user has at least {MIN_INTERACTIONS} interactions (leave-one-out needs train, valid and test)")
    return users, items


def _check_items(report: Report, table: Table, folder: Path, content_level: str) -> set[str]:
    name = table.path.name
    ids = _ids(report, table, "item_id")
    _duplicate_ids(report, table, ids, "item_id")
    modality = [_text(v) or "id" for v in table.column("modality")]
    texts, images = table.column("text"), table.column("image")
    checked: dict[Path, str | None] = {}
    per_modality: Counter = Counter()
    for i, (key, mod) in enumerate(zip(ids, modality)):
        where = table.where(i)
        per_modality[mod] += 1
        if mod not in MODALITIES:
            report.add(ERROR, "bad-modality", name, where, f"item {key!r}: modality {mod!r} is not one of {MODALITIES}")
        text = _text(texts[i])
        if mod == "text" and text is None:
            report.add(ERROR, "empty-text", name, where, f"text item {key!r} has an empty text")
        elif text is not None and not text.strip():
            report.add(content_level if mod == "text" else WARNING, "blank-text", name, where,
                       f"item {key!r} has a blank text {text!r}")
        image = _text(images[i])
        if image is None:
            if mod == "image":
                report.add(ERROR, "missing-image", name, where, f"image item {key!r} has no image path")
            continue
        path = Path(image) if os.path.isabs(image) else folder / image
        if path not in checked:
            checked[path] = image_problem(path)
        if checked[path] is not None:
            level = content_level if mod == "image" else WARNING  # only image items are encoded from it
            report.add(level, "bad-image", name, where, f"item {key!r}: image {image}: {checked[path]}")
    report.summary.append(f"{name}: {len(table)} items ("
                          + ", ".join(f"{n} {m}" for m, n in sorted(per_modality.items())) + ")")
    return {k for k in ids if k is not None}


def validate_folder(path: str | Path, load: bool = True, on_bad_content: str = "fail") -> Report:
    """Check a canonical dataset folder (see `transrec.data.io`) without stopping at the first problem.

    With `load`, a folder without errors is also loaded, so the loader's remaining checks (e.g. an
    item in two domains) show up here too; `transrec train` skips that, as it loads the data next."""
    folder = Path(path)
    report = Report(folder)
    if not folder.is_dir():
        report.add(ERROR, "no-folder", str(folder), "", "does not exist" if not folder.exists() else "is not a folder")
        return report
    files: dict[str, Path | None] = {}
    for stem in TABLES:
        try:
            files[stem] = _find(folder, stem)
        except DataError as err:
            report.add(ERROR, "several-files", stem, "", str(err))
            files[stem] = None
    if files["interactions"] is None and not report.errors:
        report.add(ERROR, "no-interactions", str(folder), "",
                   "no interactions file (expected interactions.csv, .jsonl or .parquet)")
    inter = _read(report, files["interactions"], ("user_id", "item_id", "timestamp")) if files["interactions"] else None
    users, items = _check_interactions(report, inter) if inter is not None else ([], [])
    if files["items"] is not None:
        table = _read(report, files["items"], ("item_id",))
        if table is not None:
            known = _check_items(report, table, folder, ERROR if on_bad_content == "fail" else WARNING)
            if inter is not None:
                for i, key in enumerate(items):
                    if key is not None and key not in known:
                        report.add(ERROR, "unknown-item", inter.path.name, inter.where(i),
                                   f"item_id {key!r} is not in {table.path.name}")
                unused = len(known - set(items))
                if unused:
                    report.summary.append(f"{table.path.name}: {unused} item(s) without interactions")
    if files["users"] is not None:
        table = _read(report, files["users"], ("user_id",))
        if table is not None:
            ids = _ids(report, table, "user_id")
            _duplicate_ids(report, table, ids, "user_id")
            strangers = len(set(ids) - set(users) - {None})
            report.summary.append(f"{table.path.name}: {len(table)} users"
                                  + (f", {strangers} without interactions (ignored)" if strangers else ""))
    if load and not report.errors:
        from transrec.data.io import load_dataset_folder

        try:
            load_dataset_folder(folder)
        except DataError as err:
            report.add(ERROR, "loader", str(folder), "", str(err))
    return report


# ------------------------------------------------------------------------ broken example

_BROKEN_INTERACTIONS = """user_id,item_id,timestamp
alice,book1,1
alice,book2,2
alice,photo1,3
alice,photo2,4
alice,photo2,4
bob,book1,10
bob,book3,yesterday
bob,ghost,12
bob,photo1,11
carol,book2,5
"""
_BROKEN_ITEMS = """item_id,modality,text,image,domain
book1,text,A quiet novel about the sea.,,books
book2,text,,,books
book3,text,Poems for rainy days.,,books
photo1,image,,images/photo1.png,photos
photo2,image,,images/photo2.png,photos
photo3,image,,images/photo3.png,photos
"""


def write_broken_example(path: str | Path) -> Path:
    """A small dataset folder with one of each common problem, for the README and the tests:
    a corrupt PNG, a missing image, an unknown item id, an empty text, a non-numeric timestamp,
    a duplicate row, a timestamp out of file order and a user with a single interaction."""
    from PIL import Image

    folder = Path(path)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "interactions.csv").write_text(_BROKEN_INTERACTIONS)
    (folder / "items.csv").write_text(_BROKEN_ITEMS)
    Image.new("RGB", (8, 8), (200, 40, 40)).save(folder / "images" / "photo1.png")
    (folder / "images" / "photo2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 4)
    return folder
