"""The PeterRec / Conure published file formats.

- pretraining file: one user per line, comma-separated item ids in time order, left-padded with
  the token `0` (padding, never an item). A `0` after the first real item is an error: it means
  the file is not in this format.
- fine-tuning file: `source_items,,target1,target2,...`; line i is the same user as line i of the
  pretraining file. For profile tasks the targets are class labels.

Tokens are kept as strings (numeric or not); blank lines are errors because they would shift the
line alignment between the two files. Users are named `line{n}` (1-based line number) and get
synthetic timestamps 0, 1, 2, ... (the file order is the time order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transrec.data.schema import IdMap, Interactions, ItemCatalog, RecDataset, UserProfiles
from transrec.errors import DataError
from transrec.registry import DATASETS

PADDING = "0"


def _lines(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"PeterRec file {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path.name}: not valid UTF-8 at line {line}") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():  # trailing newline(s) at the end of the file
        lines.pop()
    if not lines:
        raise DataError(f"{path.name}: file is empty")
    return lines


def _sequence(tokens: list[str], name: str, n: int, what: str) -> list[str]:
    """Strip the left padding; check that what remains is a non-empty run of real item ids."""
    tokens = [t.strip() for t in tokens]
    start = 0
    while start < len(tokens) and tokens[start] == PADDING:
        start += 1
    items = tokens[start:]
    if not items:
        raise DataError(f"{name}: line {n}: {what} has no items (only padding)")
    for k, t in enumerate(items):
        if t == "":
            hint = " (a ',,' belongs in the fine-tuning file)" if what == "sequence" else ""
            raise DataError(f"{name}: line {n}: empty item id at position {start + k + 1}{hint}")
        if t == PADDING:
            raise DataError(f"{name}: line {n}: padding token '0' after an item at position {start + k + 1}")
    return items


def _read_pretrain(path: str | Path) -> list[list[str]]:
    name = Path(path).name
    sequences = []
    for n, line in enumerate(_lines(Path(path)), start=1):
        if not line.strip():
            raise DataError(f"{name}: line {n} is blank (every line is one user)")
        sequences.append(_sequence(line.split(","), name, n, "sequence"))
    return sequences


def load_peterrec_pretrain(path: str | Path) -> RecDataset:
    """A pretraining file as a RecDataset (items in order of first appearance, ID modality)."""
    sequences = _read_pretrain(path)
    users = IdMap((f"line{n}" for n in range(1, len(sequences) + 1)), kind="user")
    items = ItemCatalog.from_records(list(dict.fromkeys(t for seq in sequences for t in seq)))
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    user = np.repeat(np.arange(1, len(sequences) + 1, dtype=np.int64), lengths)
    item = items.ids.encode(t for seq in sequences for t in seq)
    timestamp = np.concatenate([np.arange(k, dtype=np.float64) for k in lengths])
    return RecDataset(Path(path).stem, items, Interactions(users, user, item, timestamp))


def load_peterrec_finetune(path: str | Path) -> list[tuple[list[str], list[str]]]:
    """A fine-tuning file as (source item ids, targets) per line."""
    name = Path(path).name
    rows = []
    for n, line in enumerate(_lines(Path(path)), start=1):
        if not line.strip():
            raise DataError(f"{name}: line {n} is blank (every line is one user)")
        if ",," not in line:
            raise DataError(f"{name}: line {n}: no ',,' between the source items and the targets")
        source, targets = line.split(",,", 1)
        targets_list = [t.strip() for t in targets.split(",")]
        if not targets or any(t == "" for t in targets_list):
            raise DataError(f"{name}: line {n}: empty target after ',,' (got {targets!r})")
        rows.append((_sequence(source.split(","), name, n, "source"), targets_list))
    return rows


def load_peterrec_pair(pretrain_path: str | Path, finetune_path: str | Path) -> RecDataset:
    """Pretraining sequences plus per-user fine-tuning targets in `profiles.attributes['targets']`.

    The files must have the same number of lines (line i = the same user); fine-tuning sources
    are the user's source-domain behaviour and are not compared with the pretraining line.
    """
    dataset = load_peterrec_pretrain(pretrain_path)
    rows = load_peterrec_finetune(finetune_path)
    n_pre, n_fine = dataset.interactions.num_users, len(rows)
    if n_pre != n_fine:
        more, fewer = (Path(pretrain_path).name, Path(finetune_path).name)[:: 1 if n_pre > n_fine else -1]
        raise DataError(
            f"{Path(pretrain_path).name} has {n_pre} users (lines) but {Path(finetune_path).name} has {n_fine}: "
            f"line i of both files must be the same user ({more} has {abs(n_pre - n_fine)} more than {fewer})"
        )
    targets: list = [None] + [t for _, t in rows]
    dataset.profiles = UserProfiles(dataset.interactions.users, {"targets": targets})
    return dataset


@DATASETS.register("peterrec")
def load_peterrec(pretrain: str | Path, finetune: str | Path | None = None) -> RecDataset:
    """Config entry point: `{"source": "peterrec", "pretrain": ..., "finetune": ...}`."""
    return load_peterrec_pair(pretrain, finetune) if finetune is not None else load_peterrec_pretrain(pretrain)
