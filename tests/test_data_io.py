"""Loading datasets from files: the canonical folder, MovieLens and the PeterRec formats."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transrec.data.io import load_dataset_folder, write_dataset_folder
from transrec.data.schema import RecDataset
from transrec.data.sources import (
    load_movielens,
    load_peterrec_finetune,
    load_peterrec_pair,
    load_peterrec_pretrain,
    load_source,
)
from transrec.errors import ConfigError, DataError

INTER = [  # user, item, timestamp
    ("u1", "007", 3), ("u2", "i2", 1), ("u1", "i2", 1), ("u2", "007", 2), ("u3", "i3", 5), ("u1", "007", 3),
]
ITEMS = [  # item, modality, text, image, domain
    ("i2", "text", "a, \"quoted\" title", None, "books"),
    ("007", "image", None, "img/007.png", "movies"),
    ("i3", "id", None, None, "books"),
    ("i9", "text", "never seen", None, "books"),
]
USERS = [("u2", "F", 30), ("u1", "M", 25), ("ghost", "M", 99)]


def write_folder(path: Path, fmt: str, inter=INTER, items=ITEMS, users=USERS) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    tables = {
        "interactions": pd.DataFrame(inter, columns=["user_id", "item_id", "timestamp"]),
        "items": pd.DataFrame(items, columns=["item_id", "modality", "text", "image", "domain"]) if items else None,
        "users": pd.DataFrame(users, columns=["user_id", "gender", "age"]) if users else None,
    }
    for name, frame in tables.items():
        if frame is None:
            continue
        if fmt == "csv":
            frame.to_csv(path / f"{name}.csv", index=False)
        elif fmt == "jsonl":
            frame.to_json(path / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
        else:
            frame.to_parquet(path / f"{name}.parquet", index=False)
    return path


def write_text(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


def as_plain(ds: RecDataset) -> dict:
    """Everything a round trip must preserve, in comparable form."""
    seqs = ds.interactions.sequences()
    users = ds.interactions.users
    return {
        "users": users.to_list(),
        "sequences": {users.ids[u]: ds.items.ids.decode(s) for u, s in enumerate(seqs) if u},
        "times": sorted(zip(users.decode(ds.interactions.user), ds.interactions.timestamp.tolist())),
        "items": ds.items.ids.to_list(),
        "modality": ds.items.modality,
        "text": ds.items.text,
        "image": [None if i is None else os.path.normpath((ds.items.root or Path(".")) / i) for i in ds.items.image],
        "domain": ds.items.domain,
        "profiles": None if ds.profiles is None else ds.profiles.attributes,
    }


def error(tmp_path: Path, files: dict[str, str | bytes]) -> str:
    with pytest.raises(DataError) as info:
        load_dataset_folder(write_text(tmp_path / "ds", files))
    return str(info.value)


# ------------------------------------------------------------------------- canonical folder


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_folder_loads_and_formats_agree(tmp_path, fmt):
    ds = load_dataset_folder(write_folder(tmp_path / fmt, fmt))
    ref = load_dataset_folder(write_folder(tmp_path / "ref", "csv"))
    assert as_plain(ds)["sequences"] == as_plain(ref)["sequences"]
    assert {k: v for k, v in as_plain(ds).items() if k != "image"} == {
        k: v for k, v in as_plain(ref).items() if k != "image"
    }
    assert ds.name == fmt
    assert ds.items.ids.to_list() == ["i2", "007", "i3", "i9"]  # items-file order, "007" kept
    assert ds.interactions.users.to_list() == ["u1", "u2", "u3"]  # first appearance
    u1 = ds.interactions.users.index("u1")
    assert ds.items.ids.decode(ds.interactions.sequences()[u1]) == ["i2", "007", "007"]  # duplicate kept
    assert ds.items.text[1] == 'a, "quoted" title' and ds.items.modality[2] == "image"
    assert ds.items.root == tmp_path / fmt and ds.items.image[2] == "img/007.png"
    attrs = ds.profiles.attributes
    assert attrs["gender"] == [None, "M", "F", None] and attrs["age"] == [None, 25, 30, None]


def test_items_file_optional(tmp_path):
    ds = load_dataset_folder(write_folder(tmp_path / "d", "csv", items=None, users=None))
    assert ds.items.ids.to_list() == ["007", "i2", "i3"]
    assert set(ds.items.modality[1:]) == {"id"} and ds.profiles is None


def test_iso_timestamps_and_interaction_domains(tmp_path):
    folder = write_text(tmp_path / "d", {"interactions.csv": (
        "user_id,item_id,timestamp,domain,rating\n"
        "a,x,2020-01-01T00:00:10Z,books,5\n"
        "a,y,1577836805,movies,4\n"
        "a,z,2020-01-01,books,\n"
        "b,x,2020-01-01T02:00:00+02:00,books,1\n"
        "b,y,12.5,movies,3\n"
    )})
    ds = load_dataset_folder(folder)
    assert ds.interactions.timestamp.tolist() == [1577836810.0, 1577836805.0, 1577836800.0, 1577836800.0, 12.5]
    assert ds.items.ids.decode(ds.interactions.sequences()[1]) == ["z", "y", "x"]
    assert ds.items.domain[1:] == ["books", "movies", "books"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_round_trip(tmp_path, fmt):
    (tmp_path / "src" / "img").mkdir(parents=True)
    items = ITEMS + [("multi", "text", "line one\nline two, with comma", None, "books")]
    inter = INTER + [("u4", "multi", 1.25)]
    first = load_dataset_folder(write_folder(tmp_path / "src", "csv", inter=inter, items=items))
    second = load_dataset_folder(write_dataset_folder(first, tmp_path / "out", fmt))
    third = load_dataset_folder(write_dataset_folder(second, tmp_path / "out2", fmt))
    assert as_plain(first) == as_plain(second) == as_plain(third)
    with pytest.raises(DataError, match="overwrite"):
        write_dataset_folder(first, tmp_path / "out", "csv")
    write_dataset_folder(first, tmp_path / "out", "csv", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["interactions.csv", "items.csv", "users.csv"]


def test_multiline_csv_fields_keep_editor_line_numbers(tmp_path):
    msg = error(tmp_path, {
        "items.csv": 'item_id,modality,text\na,text,"two\nlines"\nb,bogus,x\n',
        "interactions.csv": "user_id,item_id,timestamp\nu,a,1\n",
    })
    assert "items.csv" in msg and "line 4" in msg and "'bogus'" in msg


ERROR_CASES = {
    "empty file": ({"interactions.csv": ""}, ["interactions.csv", "empty"]),
    "header only": ({"interactions.csv": "user_id,item_id,timestamp\n"}, ["interactions.csv", "no data rows"]),
    "missing column": (
        {"interactions.csv": "user,item_id,timestamp\nu,i,1\n"},
        ["interactions.csv", "user_id", "found columns", "'user'"],
    ),
    "semicolon": ({"interactions.csv": "user_id;item_id;timestamp\nu;i;1\n"}, ["interactions.csv", "';'-separated"]),
    "tab": ({"interactions.csv": "user_id\titem_id\ttimestamp\nu\ti\t1\n"}, ["interactions.csv", "tab-separated"]),
    "empty ids": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,i,1\n,i,2\nu,i,3\n,i,4\n"},
        ["interactions.csv", "empty or invalid user_id", "line 3", "line 5"],
    ),
    "bad timestamp": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,i,1\nu,i,yesterday\nu,i,\n"},
        ["interactions.csv", "line 3", "'yesterday'", "line 4"],
    ),
    "unknown item": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,a,1\nu,zz,2\n", "items.csv": "item_id\na\n"},
        ["interactions.csv", "line 3", "'zz'", "items.csv"],
    ),
    "duplicate item": ({"interactions.csv": "user_id,item_id,timestamp\nu,a,1\n", "items.csv": "item_id\na\nb\na\n"},
                       ["items.csv", "duplicate item_id", "line 4", "'a'", "first at line 2"]),
    "bad modality": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,a,1\n", "items.csv": "item_id,modality\na,video\n"},
        ["items.csv", "line 2", "'video'"],
    ),
    "text item without text": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,a,1\n", "items.csv": "item_id,modality,text\na,text,\n"},
        ["items.csv", "line 2", "without text"],
    ),
    "not utf-8": (
        {"interactions.csv": b"user_id,item_id,timestamp\nu,caf\xe9,1\n"},
        ["interactions.csv", "UTF-8", "line 2"],
    ),
    "stray quote": ({"interactions.csv": 'user_id,item_id,timestamp\nu,"i,1\nu,j,2\n'}, ["interactions.csv", "malformed", "line 2"]),
    "too many fields": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,i,1\nu,i,2,9\n"},
        ["interactions.csv", "malformed", "line 3"],
    ),
    "too many fields after multiline": (
        {"interactions.csv": 'user_id,item_id,timestamp\nu,"i\nj",1\nu,i,2,9\n'},
        ["interactions.csv", "malformed", "line 4"],
    ),
    "too many fields first row": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,i,1,9\n"},
        ["interactions.csv", "more fields", "line 2"],
    ),
    "bad json": (
        {"interactions.jsonl": '{"user_id": "u", "item_id": "i", "timestamp": 1}\n\n{"user_id": "u",\n'},
        ["interactions.jsonl", "line 3", "invalid JSON"],
    ),
    "json not object": ({"interactions.jsonl": "[1, 2, 3]\n"}, ["interactions.jsonl", "line 1", "JSON object"]),
    "json missing key": (
        {"interactions.jsonl": '{"user_id": "u", "item_id": "i", "timestamp": 1}\n{"user_id": "u", "timestamp": 2}\n'},
        ["interactions.jsonl", "line 2", "item_id"],
    ),
    "no interactions": ({"items.csv": "item_id\na\n", "notes.txt": "x"}, ["no interactions file", "items.csv", "notes.txt"]),
    "two formats": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,i,1\n", "interactions.jsonl": "{}\n"},
        ["interactions.csv", "interactions.jsonl"],
    ),
    "duplicate user": (
        {"interactions.csv": "user_id,item_id,timestamp\nu,i,1\n", "users.csv": "user_id,age\nu,1\nu,2\n"},
        ["users.csv", "line 3", "duplicate user_id"],
    ),
    "parquet garbage": ({"interactions.parquet": b"PAR1 not really"}, ["interactions.parquet"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_name_file_and_line(tmp_path, case):
    files, fragments = ERROR_CASES[case]
    msg = error(tmp_path, files)
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_error_lists_at_most_five_rows(tmp_path):
    rows = "".join(f"u,i,bad{k}\n" for k in range(8))
    msg = error(tmp_path, {"interactions.csv": "user_id,item_id,timestamp\n" + rows})
    assert "line 2" in msg and "line 6" in msg and "line 7" not in msg and "3 more" in msg


def test_parquet_errors_name_rows(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    pd.DataFrame({"user_id": ["u", None], "item_id": ["i", "i"], "timestamp": [1, 2]}).to_parquet(
        folder / "interactions.parquet"
    )
    with pytest.raises(DataError, match=r"interactions\.parquet.*row 2"):
        load_dataset_folder(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset_folder(tmp_path / "nope")


# ------------------------------------------------------------------------------- movielens

ML100K_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
    "3|Caf\xe9 (1996)|01-Jan-1996||http://x|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)


def write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("7\t2\t3\t881250949\n5\t1\t4\t881250950\n7\t1\t5\t881250940\n7\t3\t1\t881250999\n")
    (folder / "u.item").write_bytes(ML100K_ITEM.encode("latin-1"))
    (folder / "u.user").write_text("5|24|M|technician|85711\n7|53|F|other|94043\n9|1|F|x|0\n")
    return folder


def test_movielens_100k_grouplens(tmp_path):
    ds = load_movielens(write_ml100k(tmp_path / "ml-100k"))
    assert ds.name == "ml-100k" and ds.items.ids.to_list() == ["1", "2", "3"]
    assert ds.items.text[1] == "Toy Story (1995). Genres: Animation, Children's, Comedy. Year: 1995."
    assert ds.items.text[3] == "Caf\xe9 (1996). Year: 1996."  # latin-1 decoded, 'unknown' genre dropped
    assert set(ds.items.modality[1:]) == {"text"}
    assert ds.interactions.users.to_list() == ["7", "5"] and len(ds.interactions) == 4  # all ratings kept
    assert ds.items.ids.decode(ds.interactions.sequences()[1]) == ["1", "2", "3"]
    assert ds.profiles.attributes == {"gender": [None, "F", "M"], "age": [None, 53, 24], "occupation": [None, "other", "technician"]}
    # the parent folder and the variant name also work; fields can be chosen
    ds2 = load_movielens(tmp_path, variant="ml-100k", text_fields=("title",))
    assert ds2.items.text[2] == "GoldenEye (1995)."


def test_movielens_item_splits_by_era_and_by_genre(tmp_path):
    folder = write_ml100k(tmp_path / "ml-100k")
    by_era = load_movielens(folder, era_split=1996)
    assert by_era.items.domain[1:] == ["before1996", "before1996", "from1996"]
    by_genre = load_source({"source": "movielens", "path": str(folder), "genre_split": "comedy"})  # any case
    assert by_genre.items.domain[1:] == ["comedy", "noncomedy", "noncomedy"]
    assert load_movielens(folder).items.domain[1:] == ["default"] * 3  # no split: one domain
    with pytest.raises(ConfigError, match="not a MovieLens genre.*Drama"):
        load_movielens(folder, genre_split="Dramas")
    with pytest.raises(ConfigError, match="choose one"):
        load_movielens(folder, era_split=1994, genre_split="Drama")


def test_movielens_1m_grouplens(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (folder / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children's|Musical\n".encode("latin-1")
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = load_movielens(folder, variant="ml-1m", text_fields=("genres", "year", "title"))
    assert ds.name == "ml-1m" and ds.items.ids.to_list() == ["1193", "661"]
    assert ds.items.text[2] == "Genres: Animation, Children's, Musical. Year: 1996. James and the Giant Peach (1996)."
    assert ds.items.ids.decode(ds.interactions.sequences()[1]) == ["1193", "661"]
    assert ds.profiles.attributes["occupation"][1:] == ["K-12 student", "self-employed"]
    assert ds.profiles.attributes["age"][1:] == [1, 56]


def write_ml_latest(folder: Path, ratings: str = "", movies: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings or "userId,movieId,rating,timestamp\n"
                                        "1,11,4.0,964981247\n1,1,4.0,964982703\n2,1,5.0,964982224\n")
    (folder / "movies.csv").write_text(movies or "movieId,title,genres\n"
                                       "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
                                       '11,"American President, The (1995)",Comedy|Drama|Romance\n'
                                       "7,Untitled,(no genres listed)\n", encoding="utf-8")
    return folder


def test_movielens_csv_releases(tmp_path):
    """ml-latest(-small) / ml-20m / ml-25m / ml-32m: ratings.csv + movies.csv, quoted titles, no user file."""
    ds = load_movielens(write_ml_latest(tmp_path / "ml-latest-small"))
    assert ds.name == "ml-latest-small" and ds.items.ids.to_list() == ["1", "11", "7"]
    assert ds.items.text[2] == "American President, The (1995). Genres: Comedy, Drama, Romance. Year: 1995."
    assert ds.items.text[3] == "Untitled."  # no genres, no year
    assert ds.items.ids.decode(ds.interactions.sequences()[1]) == ["11", "1"]  # time order
    assert len(ds.interactions) == 3 and ds.profiles.attributes["gender"] == [None, None, None]
    assert load_movielens(tmp_path / "ml-latest-small", genre_split="imax").items.domain[1:] == ["nonimax"] * 3
    assert load_movielens(tmp_path / "ml-latest-small", genre_split="children").items.domain[1:] == [
        "children", "nonchildren", "nonchildren"]
    bad = {
        "userId,movieId,rating\n1,1,4\n": r"ratings\.csv: missing column\(s\) timestamp",
        "userId,movieId,rating,timestamp\n1,1,4,964981247\n1,1,4\n": r"ratings\.csv: expected 4 .*line 3",
        "userId,movieId,rating,timestamp\n1,99,4,964981247\n":
            r"ratings\.csv: item id not in the movie file.*line 2 \('99'\)",
        "userId,movieId,rating,timestamp\n1,1,4,yesterday\n": r"ratings\.csv: timestamp is not a number.*line 2",
        "userId,movieId,rating,timestamp\n": r"ratings\.csv: no data rows",
    }
    for ratings, message in bad.items():
        with pytest.raises(DataError, match=message):
            load_movielens(write_ml_latest(tmp_path / "broken", ratings=ratings))
    write_ml_latest(tmp_path / "broken", movies="movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    (tmp_path / "broken" / "movies.csv").write_bytes(b"movieId,title,genres\n1,Caf\xe9 (1995),Drama\n")
    with pytest.raises(DataError, match=r"movies\.csv: not valid utf-8"):
        load_movielens(tmp_path / "broken")


def test_movielens_errors(tmp_path, monkeypatch):
    folder = write_ml100k(tmp_path / "ml-100k")
    (folder / "u.data").write_text("7\t2\t3\t881250949\n7\t2\t3\n")
    with pytest.raises(DataError, match=r"u\.data.*line 2"):
        load_movielens(folder)
    (folder / "u.data").write_text("7\t99\t3\t881250949\n")
    with pytest.raises(DataError, match=r"u\.data.*line 1.*'99'"):
        load_movielens(folder)
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a MovieLens folder"):
        load_movielens(tmp_path / "x")
    with pytest.raises(ConfigError):
        load_movielens(folder, text_fields=("plot",))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match="pip install --no-deps recbole==1.2.1"):
        load_movielens()


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="recbole not installed")
def test_movielens_recbole_copy():
    ds = load_movielens()
    assert (ds.interactions.num_users, ds.items.num_items, len(ds.interactions)) == (943, 1682, 100000)
    assert ds.items.text[ds.items.ids.index("1")] == "Toy Story (1995). Genres: Animation, Children's, Comedy. Year: 1995."
    assert set(ds.profiles.attributes) == {"gender", "age", "occupation"}
    assert all(isinstance(a, int) for a in ds.profiles.attributes["age"][1:])


# -------------------------------------------------------------------------------- peterrec


def test_peterrec_formats(tmp_path):
    pre = tmp_path / "pre.csv"
    pre.write_text("0,0,0,12,45,7\n0,45,3,3\n8,9,10,11,12,13\n")
    fine = tmp_path / "fine.csv"
    fine.write_text("0,0,12,45,,101,102\n0,45,3,,1\n9,,2\n")
    ds = load_peterrec_pretrain(pre)
    assert ds.interactions.users.to_list() == ["line1", "line2", "line3"]
    assert ds.items.ids.to_list()[:4] == ["12", "45", "7", "3"] and "0" not in ds.items.ids
    seqs = ds.interactions.sequences()
    assert ds.items.ids.decode(seqs[2]) == ["45", "3", "3"]
    assert ds.interactions.timestamp[:3].tolist() == [0.0, 1.0, 2.0]
    assert load_peterrec_finetune(fine) == [(["12", "45"], ["101", "102"]), (["45", "3"], ["1"]), (["9"], ["2"])]
    pair = load_peterrec_pair(pre, fine)
    assert pair.profiles.attributes["targets"] == [None, ["101", "102"], ["1"], ["2"]]
    assert load_source({"source": "peterrec", "pretrain": str(pre), "finetune": str(fine)}).profiles is not None


@pytest.mark.parametrize(
    "pre, fine, fragments",
    [
        ("1,2\n3,4\n5\n", "1,,2\n3,,4\n", ["pre.csv has 3 users", "fine.csv has 2", "1 more"]),
        ("1,2\n\n3\n", "1,,2\n", ["pre.csv", "line 2", "blank"]),
        ("1,2\n0,0\n", "1,,2\n", ["pre.csv", "line 2", "only padding"]),
        ("1,0,2\n", "1,,2\n", ["pre.csv", "line 1", "padding token"]),
        ("1,2,,3\n", "1,,2\n", ["pre.csv", "line 1", "empty item id", "fine-tuning"]),
        ("1\n2\n", "1,,2\n2,3\n", ["fine.csv", "line 2", "no ',,'"]),
        ("1\n2\n", "1,,2\n0,,3\n", ["fine.csv", "line 2", "source has no items"]),
        ("1\n2\n", "1,,2\n2,,\n", ["fine.csv", "line 2", "empty target"]),
        ("", "1,,2\n", ["pre.csv", "empty"]),
    ],
)
def test_peterrec_errors(tmp_path, pre, fine, fragments):
    (tmp_path / "pre.csv").write_text(pre)
    (tmp_path / "fine.csv").write_text(fine)
    with pytest.raises(DataError) as info:
        load_peterrec_pair(tmp_path / "pre.csv", tmp_path / "fine.csv")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


# ---------------------------------------------------------------------------- dispatcher


def test_load_source(tmp_path):
    folder = write_folder(tmp_path / "d", "csv")
    assert load_source({"source": "folder", "path": str(folder)}).items.num_items == 4
    assert load_source(str(folder)).name == "d"
    assert load_source({"source": "movielens", "path": str(write_ml100k(tmp_path / "ml"))}).name == "ml-100k"
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_source({"source": "movielenz"})
    with pytest.raises(ConfigError, match="pth"):
        load_source({"source": "folder", "pth": str(folder)})
    with pytest.raises(ConfigError, match="source"):
        load_source({"path": str(folder)})
    with pytest.raises(ConfigError, match="path"):
        load_source({"source": "folder"})


# ---------------------------------------------------------------------------- properties

ids = st.text(alphabet="ab0 7,;\"'\n\u00e9x-", min_size=1, max_size=4).filter(lambda s: s.strip() == s and s)
stamps = st.one_of(st.integers(-(10**12), 10**12), st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(ids, ids, stamps), min_size=1, max_size=20), fmt=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_property_round_trip(tmp_path_factory, rows, fmt):
    base = tmp_path_factory.mktemp("rt")
    src = write_text(base / "src", {"interactions.jsonl": "".join(
        json.dumps({"user_id": u, "item_id": i, "timestamp": t}) + "\n" for u, i, t in rows
    )})
    first = load_dataset_folder(src)
    assert first.interactions.users.decode(first.interactions.user) == [r[0] for r in rows]
    assert first.items.ids.decode(first.interactions.item) == [r[1] for r in rows]
    assert first.interactions.timestamp.tolist() == [float(r[2]) for r in rows]
    second = load_dataset_folder(write_dataset_folder(first, base / "out", fmt))
    assert as_plain(first) == as_plain(second)
    assert np.array_equal(first.interactions.timestamp, second.interactions.timestamp)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), st.text(alphabet='ab,;\t"\n0{}:[]', max_size=200).map(str.encode)),
       name=st.sampled_from(["interactions.csv", "interactions.jsonl", "interactions.parquet", "items.csv"]))
def test_property_garbage_only_raises_data_error(tmp_path_factory, data, name):
    folder = tmp_path_factory.mktemp("junk")
    files = {name: data}
    if name == "items.csv":
        files["interactions.csv"] = "user_id,item_id,timestamp\nu,a,1\n"
    write_text(folder, files)
    try:
        load_dataset_folder(folder)
    except DataError:
        pass


# -------------------------------------------------------------------------------- several sources


def test_extra_sources_merge_keeps_each_sources_items_users_and_sequences_apart(tmp_path):
    from PIL import Image

    from transrec.config import load_config
    from transrec.data.multisource import cases_by_source
    from transrec.data.pipeline import prepare_data

    main = write_ml100k(tmp_path / "ml-100k")
    extra = write_text(tmp_path / "shop", {
        "interactions.csv": "user_id,item_id,timestamp\n7,a,1\n7,b,2\n7,c,3\n8,c,1\n8,a,2\n8,b,3\n8,d,4\n",
        "items.csv": "item_id,modality,text,image,domain\na,text,red shoe,,S\nb,text,blue shoe,,S\n"
                     "c,image,,pics/c.png,S\nd,text,green hat,,T\n",
    })
    (extra / "pics").mkdir()
    Image.new("RGB", (8, 8), "red").save(extra / "pics" / "c.png")
    spec = {"name": "shop", "source": "folder", "path": str(extra), "domain": "S"}
    cfg = load_config(None, ["data.source=movielens", f"data.path={main}", f"data.extra_sources=[{spec}]"])
    data = prepare_data(cfg.data)
    items = data.dataset.items
    assert items.ids.to_list() == ["1", "2", "3", "shop:a", "shop:b", "shop:c"]  # domain T's item filtered out
    assert items.domain[1:] == ["default"] * 3 + ["shop:S"] * 3 and items.text[4] == "red shoe"
    assert items.image[6] == str(extra / "pics/c.png")  # the extra source's image paths are made absolute
    users = data.dataset.interactions.users.to_list()
    assert users == ["7", "5", "shop:7", "shop:8"]  # user 7 of each source stays two users
    assert [len(s) for s in data.split.train] == [0, 1, 0, 1, 1]  # user 5 (one rating) filtered, as without extras
    seqs = data.dataset.interactions.sequences()
    assert items.ids.decode(seqs[1]) == ["1", "2", "3"]
    assert items.ids.decode(seqs[3]) == ["shop:a", "shop:b", "shop:c"]
    assert data.dataset.profiles.attributes["gender"] == [None, "F", "M", None, None]
    main_cases, shop_cases = cases_by_source(data.split.valid, data.dataset.interactions.users, ["shop"])
    assert main_cases.users.tolist() == [1] and shop_cases.users.tolist() == [3, 4]  # calibration weighs each alike
    assert shop_cases.targets.tolist() == data.split.valid.targets[1:].tolist()
    # a wrong key names the nearest valid one; the prefix must be unique and ':'-free
    bad = [({"source": "folder", "path": str(extra), "domian": "S"},
            r"extra_sources\[0\]\.domian.*'data\.extra_sources\[0\]\.domain'"),
           ({"path": str(extra)}, "a 'source' key"),
           ({"name": "a:b", "source": "folder", "path": str(extra)}, "cannot contain ':'")]
    for extra_spec, message in bad:
        cfg = load_config(None, ["data.source=movielens", f"data.path={main}", f"data.extra_sources=[{extra_spec}]"])
        with pytest.raises(ConfigError, match=message):
            prepare_data(cfg.data)
    twice = load_config(None, ["data.source=movielens", f"data.path={main}", f"data.extra_sources=[{spec}, {spec}]"])
    with pytest.raises(ConfigError, match="names must differ"):
        prepare_data(twice.data)
