"""MovieLens as a text-item dataset: RecBole's bundled ml-100k, or a GroupLens folder: ml-100k, the
`::` releases (ml-1m, ml-10m) or the CSV releases (ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m).

Every rating is kept as an implicit interaction (the usual convention for sequential
recommendation: a rating says the user watched the film). Items get modality `text`, built from
`text_fields`, e.g. "Toy Story (1995). Genres: Animation, Children's, Comedy. Year: 1995.". The
title is the GroupLens title (with its year); RecBole's copy drops the year from the title, so it
is put back, and both sources give the same text. Profiles hold gender, age (the raw integer; a
bucket code in ml-1m) and occupation (a name; ml-1m's codes are mapped to their names); the CSV
releases have no user file. Every file is read into memory (fine up to ml-20m on a laptop).
"""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from transrec.data.io import parse_timestamps
from transrec.data.schema import IdMap, Interactions, ItemCatalog, RecDataset, UserProfiles
from transrec.errors import ConfigError, DataError
from transrec.registry import DATASETS

TEXT_FIELDS = ("title", "genres", "year")
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)
#: genre names the later (CSV) releases use besides ml-100k's
GENRES_LATER = ("Children", "IMAX")
_YEAR = re.compile(r"\((\d{4})\)")
#: a movie's (genres, release year) -> its item domain
DomainOf = Callable[[Sequence[str], "str | None"], str]
_INSTALL_HINT = ("run `pip install --no-deps recbole==1.2.1` (it ships ml-100k) or pass path= a GroupLens "
                 "MovieLens folder")


def _read(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise DataError(f"{path.parent}: missing {path.name}")
    try:
        return path.read_bytes().decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{path.name}: not valid {encoding} (byte {e.start}); is this the right file?") from None


def _rows(path: Path, sep: str, fields: int, encoding: str, header: bool = False) -> list[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank line; a wrong field count is a DataError."""
    rows, bad = [], []
    for n, line in enumerate(_read(path, encoding).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() or (header and n == 1):
            continue
        parts = line.split(sep)
        if len(parts) != fields:
            bad.append(f"line {n} ({len(parts)} fields)")
        rows.append((n, parts))
    if bad:
        raise DataError(f"{path.name}: expected {fields} {sep!r}-separated fields at {', '.join(bad[:5])}")
    if not rows:
        raise DataError(f"{path.name}: no data rows")
    return rows


def _item_text(title: str, genres: Sequence[str], year: str | None, fields: Sequence[str]) -> str:
    parts = {
        "title": f"{title}.",
        "genres": f"Genres: {', '.join(genres)}." if genres else "",
        "year": f"Year: {year}." if year else "",
    }
    return " ".join(parts[f] for f in fields if parts[f])


def _year(title: str, fallback: str = "") -> str | None:
    found = _YEAR.findall(title)
    if found:
        return found[-1]
    tail = fallback.strip()[-4:]
    return tail if tail.isdigit() else None


def _build(
    name: str,
    ratings: list[tuple[str, str, str, str, int]],  # user, item, raw timestamp, file name, line
    movies: list[tuple[str, str, list[str], str | None]],  # id, title, genres, year
    users: dict[str, dict[str, object]],
    fields: Sequence[str],
    root: Path | None,
    domain_of: DomainOf | None = None,
) -> RecDataset:
    catalog = ItemCatalog.from_records(
        [m[0] for m in movies],
        modality=["text"] * len(movies),
        text=[_item_text(title, genres, year, fields) for _, title, genres, year in movies],
        domain=[domain_of(genres, year) for _, _, genres, year in movies] if domain_of else None,
        root=root,
    )
    unknown = [r for r in ratings if r[1] not in catalog.ids]
    if unknown:
        shown = ", ".join(f"line {r[4]} ({r[1]!r})" for r in unknown[:5])
        raise DataError(f"{unknown[0][3]}: item id not in the movie file at {shown}")
    times, bad = parse_timestamps([r[2] for r in ratings])
    if bad.any():
        shown = ", ".join(f"line {ratings[i][4]} ({ratings[i][2]!r})" for i in np.flatnonzero(bad)[:5])
        raise DataError(f"{ratings[0][3]}: timestamp is not a number at {shown}")
    user_ids = [r[0] for r in ratings]
    user_map = IdMap(dict.fromkeys(user_ids), kind="user")
    interactions = Interactions(
        user_map, user_map.encode(user_ids), catalog.ids.encode(r[1] for r in ratings), times
    )
    attributes: dict[str, list] = {k: [None] * (len(user_map) + 1) for k in ("gender", "age", "occupation")}
    for uid, attrs in users.items():
        if uid in user_map:
            for k in attributes:
                attributes[k][user_map.index(uid)] = attrs[k]
    return RecDataset(name, catalog, interactions, UserProfiles(user_map, attributes))


def era_domain(year: str | None, split: int) -> str:
    """Two disjoint item domains by release era (cold-start transfer on MovieLens): "before<Y>" and
    "from<Y>"; a movie without a year counts as before."""
    return f"from{split}" if year is not None and int(year) >= split else f"before{split}"


def genre_domain(genres: Sequence[str], genre: str) -> str:
    """Two disjoint item domains by genre: "<genre>" (the movies that have it, any case) and
    "non<genre>" (all the others), in lower case, e.g. "drama" / "nondrama"."""
    name = genre.lower()
    return name if any(g.lower() == name for g in genres) else f"non{name}"


def item_split(era_split: int = 0, genre_split: str = "") -> DomainOf | None:
    """The item-domain rule for `era_split` or `genre_split` (at most one), or None for neither."""
    if era_split and genre_split:
        raise ConfigError(f"data.era_split={era_split} and data.genre_split={genre_split!r}: choose one item split")
    if era_split:
        return lambda genres, year: era_domain(year, era_split)
    if genre_split:
        known = {g.lower() for g in (*GENRES_100K[1:], *GENRES_LATER)}
        if genre_split.lower() not in known:
            raise ConfigError(f"data.genre_split={genre_split!r} is not a MovieLens genre; "
                              f"one of {', '.join(GENRES_100K[1:])}")
        return lambda genres, year: genre_domain(genres, genre_split)
    return None


def _release(folder: Path, default: str) -> str:
    """The dataset's name: the GroupLens folder name (ml-10M100K, ml-latest-small, ...) or `default`."""
    return folder.name if folder.name.lower().startswith("ml-") else default


def _age(value: str, path: Path, line: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path.name}: line {line}: age {value!r} is not an integer") from None


def _load_grouplens_100k(folder: Path, fields: Sequence[str], domain_of: DomainOf | None = None) -> RecDataset:
    data = folder / "u.data"
    ratings = [(p[0], p[1], p[3], data.name, n) for n, p in _rows(data, "\t", 4, "latin-1")]
    movies = []
    for _, p in _rows(folder / "u.item", "|", 24, "latin-1"):
        genres = [g for g, flag in zip(GENRES_100K, p[5:]) if flag.strip() == "1" and g != "unknown"]
        movies.append((p[0], p[1], genres, _year(p[1], p[2])))
    users = {}
    if (folder / "u.user").exists():
        path = folder / "u.user"
        for n, p in _rows(path, "|", 5, "latin-1"):
            users[p[0]] = {"age": _age(p[1], path, n), "gender": p[2], "occupation": p[3]}
    return _build("ml-100k", ratings, movies, users, fields, folder, domain_of)


def _load_grouplens_1m(folder: Path, fields: Sequence[str], domain_of: DomainOf | None = None) -> RecDataset:
    data = folder / "ratings.dat"
    ratings = [(p[0], p[1], p[3], data.name, n) for n, p in _rows(data, "::", 4, "latin-1")]
    movies = []
    for _, p in _rows(folder / "movies.dat", "::", 3, "latin-1"):
        genres = [g for g in p[2].split("|") if g and g != "(no genres listed)"]
        movies.append((p[0], p[1], genres, _year(p[1])))
    users = {}
    if (folder / "users.dat").exists():
        path = folder / "users.dat"
        for n, p in _rows(path, "::", 5, "latin-1"):
            code = p[3].strip()
            # isdecimal + isascii: '²' (latin-1 0xB2) is a digit to str.isdigit but not to int()
            known = code.isascii() and code.isdecimal() and int(code) < len(OCCUPATIONS_1M)
            occupation = OCCUPATIONS_1M[int(code)] if known else code
            users[p[0]] = {"gender": p[1], "age": _age(p[2], path, n), "occupation": occupation}
    return _build(_release(folder, "ml-1m"), ratings, movies, users, fields, folder, domain_of)


def _csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """A GroupLens CSV file (header row, quoted fields, utf-8) as (line, {column: value}) rows."""
    reader = csv.reader(_read(path, "utf-8-sig").splitlines())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path.name}: empty file") from None
    except csv.Error as e:
        raise DataError(f"{path.name}: line 1: {e}") from None
    missing = [r for r in required if r not in header]
    if missing:
        raise DataError(f"{path.name}: missing column(s) {', '.join(missing)} in header {header}")
    rows, bad = [], []
    try:
        for parts in reader:
            if not any(p.strip() for p in parts):
                continue
            if len(parts) != len(header):
                bad.append(f"line {reader.line_num} ({len(parts)} fields)")
            rows.append((reader.line_num, dict(zip(header, parts))))
    except csv.Error as e:
        raise DataError(f"{path.name}: line {reader.line_num}: {e}") from None
    if bad:
        raise DataError(f"{path.name}: expected {len(header)} comma-separated fields at {', '.join(bad[:5])}")
    if not rows:
        raise DataError(f"{path.name}: no data rows")
    return rows


def _load_grouplens_csv(folder: Path, fields: Sequence[str], domain_of: DomainOf | None = None) -> RecDataset:
    data = folder / "ratings.csv"
    ratings = [(r["userId"], r["movieId"], r["timestamp"], data.name, n)
               for n, r in _csv_rows(data, ("userId", "movieId", "timestamp"))]
    movies = []
    for _, r in _csv_rows(folder / "movies.csv", ("movieId", "title", "genres")):
        title = r["title"].strip()
        genres = [g for g in r["genres"].split("|") if g and g != "(no genres listed)"]
        movies.append((r["movieId"], title, genres, _year(title)))
    return _build(_release(folder, "ml-latest"), ratings, movies, {}, fields, folder, domain_of)


def _atomic(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """A RecBole atomic file (tab-separated, header `name:type`) as (line, {name: value}) rows."""
    header = _read(path, "utf-8").split("\n", 1)[0].rstrip("\r").split("\t")
    names = [h.split(":", 1)[0] for h in header]
    missing = [r for r in required if r not in names]
    if missing:
        raise DataError(f"{path.name}: missing column(s) {', '.join(missing)} in header {header}")
    return [(n, dict(zip(names, p))) for n, p in _rows(path, "\t", len(names), "utf-8", header=True)]


def _load_recbole(folder: Path, stem: str, fields: Sequence[str], domain_of: DomainOf | None = None) -> RecDataset:
    inter = folder / f"{stem}.inter"
    ratings = [(r["user_id"], r["item_id"], r["timestamp"], inter.name, n) for n, r in _atomic(inter, ("user_id", "item_id", "timestamp"))]
    movies = []
    for _, r in _atomic(folder / f"{stem}.item", ("item_id",)):
        year = r.get("release_year", "")
        title = r.get("movie_title", "")
        if year and not year.lower().startswith("unk"):  # RecBole writes 'unkonwn'
            title = f"{title} ({year})"
        genres = [g for g in r.get("class", "").split() if g != "unknown"]
        movies.append((r["item_id"], title, genres, _year(title)))
    users = {}
    user_file = folder / f"{stem}.user"
    if user_file.exists():
        for n, r in _atomic(user_file, ("user_id", "age", "gender", "occupation")):
            users[r["user_id"]] = {
                "age": _age(r["age"], user_file, n), "gender": r["gender"], "occupation": r["occupation"],
            }
    return _build(stem, ratings, movies, users, fields, folder, domain_of)


def recbole_ml100k_dir() -> Path:
    """RecBole's bundled ml-100k folder, found without importing recbole (its deps may be missing)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"MovieLens-100k needs RecBole's bundled copy: {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        raise DataError(f"{folder} has no ml-100k.inter; reinstall recbole==1.2.1 or pass a GroupLens folder path")
    return folder


@DATASETS.register("movielens")
def load_movielens(
    path: str | Path | None = None,
    variant: str = "ml-100k",
    text_fields: Sequence[str] = TEXT_FIELDS,
    era_split: int = 0,
    genre_split: str = "",
) -> RecDataset:
    """Load MovieLens; `path=None` reads RecBole's offline ml-100k, else a GroupLens/RecBole folder
    (its format found from the files it holds).
    `era_split=Y` puts items in two domains by release year (`era_domain`), `genre_split=G` by
    whether they have genre G (`genre_domain`)."""
    domain_of = item_split(era_split, genre_split)
    if isinstance(text_fields, str):
        text_fields = (text_fields,)
    unknown = [f for f in text_fields if f not in TEXT_FIELDS]
    if unknown or not text_fields:
        raise ConfigError(f"text_fields {list(text_fields)} must be a non-empty subset of {TEXT_FIELDS}")
    if path is None:
        if variant != "ml-100k":
            raise DataError(f"only ml-100k ships offline; pass path= (data.path= in a config) "
                            f"a GroupLens {variant} folder")
        return _load_recbole(recbole_ml100k_dir(), "ml-100k", text_fields, domain_of)
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"MovieLens folder {folder} does not exist")
    if (folder / variant).is_dir():
        folder = folder / variant
    if (folder / "u.data").is_file():
        return _load_grouplens_100k(folder, text_fields, domain_of)
    if (folder / "ratings.dat").is_file():
        return _load_grouplens_1m(folder, text_fields, domain_of)
    if (folder / "ratings.csv").is_file():
        return _load_grouplens_csv(folder, text_fields, domain_of)
    inter = sorted(folder.glob("*.inter"))
    if inter:
        return _load_recbole(folder, inter[0].stem, text_fields, domain_of)
    found = ", ".join(sorted(p.name for p in folder.iterdir())[:20]) or "nothing"
    raise DataError(
        f"{folder} is not a MovieLens folder (expected u.data + u.item for ml-100k, ratings.dat + movies.dat "
        f"for ml-1m / ml-10m, ratings.csv + movies.csv for ml-latest(-small) / ml-20m / ml-25m / ml-32m, or "
        f"RecBole's <name>.inter); found: {found}"
    )
