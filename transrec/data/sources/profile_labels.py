"""User-profile label files: a CSV with a header `user_id,<label name>` and one user per row.

Every malformed row is reported with its line number (all of them at once, up to a limit), so a
broken file is fixed in one pass: wrong field count, empty user id or label, a user listed twice.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from transrec.errors import DataError

MAX_REPORTED = 10


def load_profile_labels(path: str | Path) -> tuple[str, dict[str, str]]:
    """(label name, {user_id: label}) from a two-column CSV file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"profile label file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path.name}: not valid UTF-8 at byte {err.start}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]][:1] != ["user_id"] or len(rows[0]) != 2:
        raise DataError(f"{path.name}: line 1 must be the header 'user_id,<label name>', got {','.join(rows[0]) if rows else 'nothing'!r}")
    name = rows[0][1].strip()
    if not name:
        raise DataError(f"{path.name}: line 1: the label column has no name")
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    problems: list[str] = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue  # blank lines carry no user
        if len(row) != 2:
            problems.append(f"line {n}: expected 2 fields (user_id,{name}), got {len(row)}")
            continue
        user, label = row[0].strip(), row[1].strip()
        if not user:
            problems.append(f"line {n}: empty user_id")
        elif not label:
            problems.append(f"line {n}: user {user!r} has an empty {name}")
        elif user in labels:
            problems.append(f"line {n}: user {user!r} already labelled at line {first_line[user]}")
        else:
            labels[user], first_line[user] = label, n
    if problems:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{path.name}: {len(problems)} malformed row(s): " + "; ".join(problems[:MAX_REPORTED]) + more)
    if not labels:
        raise DataError(f"{path.name}: no labelled users")
    return name, labels
