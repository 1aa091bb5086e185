"""Hardening: bad data is reported (validator), malformed files only raise transrec errors
(property-based), a SIGKILLed run resumes exactly, checkpoints load safely, impossible memory
settings fail early with the setting named."""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from test_data_io import as_plain, write_text

from transrec.cli import main
from transrec.config import load_config
from transrec.data.io import load_dataset_folder, write_dataset_folder
from transrec.data.sources import load_movielens, load_peterrec_finetune, load_peterrec_pair, load_peterrec_pretrain
from transrec.data.validate import ERROR, WARNING, validate_folder, write_broken_example
from transrec.errors import CheckpointError, ConfigError, DataError, TransrecError
from transrec.hub import load_model, save_model
from transrec.models.recommender import SequentialRecommender
from transrec.training.checkpoint import BEST_NAME, TrainerState, find_checkpoint, load_checkpoint, save_checkpoint
from transrec.training.guards import check_memory

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ validator

BROKEN_FINDINGS = {  # (level, check, file, where) of every problem write_broken_example plants
    (ERROR, "bad-timestamp", "interactions.csv", "line 8"),
    (ERROR, "unknown-item", "interactions.csv", "line 9"),
    (ERROR, "empty-text", "items.csv", "line 3"),
    (ERROR, "bad-image", "items.csv", "line 6"),  # corrupt PNG
    (ERROR, "bad-image", "items.csv", "line 7"),  # missing file
    (WARNING, "duplicate-row", "interactions.csv", "line 6"),
    (WARNING, "time-order", "interactions.csv", "line 10"),
    (WARNING, "short-user", "interactions.csv", "line 11"),
}


def test_validate_broken_example(tmp_path, capsys):
    assert main(["data", "broken-example", str(tmp_path / "broken")]) == 0
    report = validate_folder(tmp_path / "broken")
    assert {(f.level, f.check, f.file, f.where) for f in report.findings} == BROKEN_FINDINGS
    assert "interactions per user: min 1, median 4, max 5" in report.summary
    # alice's two latest rows share timestamp 4; bob's (12 and 11) do not; carol has one row
    assert "users whose two latest interactions share a timestamp: 1 of 2 (50%; data.tie_order picks their test item)" \
        in report.summary
    capsys.readouterr()
    assert main(["data", "validate", str(tmp_path / "broken")]) == 2
    out, err = capsys.readouterr()
    for line in ("interactions.csv line 8: timestamp is not a number or an ISO-8601 date: 'yesterday'",
                 "interactions.csv line 9: item_id 'ghost' is not in items.csv",
                 "items.csv line 7: item 'photo3': image images/photo3.png: file not found",
                 "5 error(s), 3 warning(s): the data cannot be trained on"):
        assert line in out, out
    assert "corrupt or unreadable image" in out and err.strip().startswith("transrec: error:")
    # with placeholders for bad content, the images are warnings; the rest still stops training
    relaxed = validate_folder(tmp_path / "broken", on_bad_content="placeholder")
    assert {f.check for f in relaxed.errors} == {"bad-timestamp", "unknown-item", "empty-text"}


def test_readme_section_shows_the_real_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_broken_example("broken")
    section = (Path(__file__).resolve().parents[1] / "assets" / "bad_data_section.md").read_text()
    assert validate_folder("broken").format() in section


def test_validate_clean_world_and_train_refuses_broken(tiny_world, tmp_path, capsys):
    report = validate_folder(tiny_world)
    assert report.findings == [] and "0 error(s), 0 warning(s)" in report.format()
    assert main(["data", "validate", str(tiny_world)]) == 0
    broken = write_broken_example(tmp_path / "broken")
    code = main(["train", "--output-dir", str(tmp_path / "run"), "data.source=folder", f"data.path={broken}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("transrec: error:") == 1, err
    for fragment in ("cannot be trained on", "interactions.csv line 8", "'yesterday'", "'ghost'", "items.csv line 6",
                     "transrec data validate", "data.on_bad_content=placeholder"):
        assert fragment in err, (fragment, err)


def test_train_logs_data_warnings(tmp_path):
    from transrec.config import DataConfig
    from transrec.data.pipeline import load_raw_dataset

    rows = [f"u,i{k},{k}" for k in range(4)] + ["u,i3,3", "v,i1,1"]  # a duplicate row and a short user
    folder = write_text(tmp_path / "d", {"interactions.csv": _table(INTER, *rows)})
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transrec.data.validate")
    logger.addHandler(handler)
    try:
        load_raw_dataset(DataConfig(source="folder", path=str(folder)))
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert any("duplicate-row" in m and "line 6" in m for m in messages), messages
    assert any("short-user" in m and "'v'" in m for m in messages), messages


def _table(header: str, *rows: str) -> str:
    return "\n".join([header, *rows]) + "\n"


INTER = "user_id,item_id,timestamp"
VALIDATOR_CASES = {  # files -> expected (level, check, file, where) among the findings
    "missing folder": (None, (ERROR, "no-folder")),
    "no interactions": ({"items.csv": "item_id\na\n"}, (ERROR, "no-interactions")),
    "two formats": ({"interactions.csv": _table(INTER, "u,a,1"), "interactions.jsonl": "{}\n"},
                    (ERROR, "several-files")),
    "semicolons": ({"interactions.csv": "user_id;item_id;timestamp\nu;a;1\n"},
                   (ERROR, "unreadable-file", "interactions.csv", "")),
    "bad json": ({"interactions.jsonl": '{"user_id": "u"\n'}, (ERROR, "unreadable-file", "interactions.jsonl", "")),
    "not utf-8": ({"interactions.csv": b"user_id,item_id,timestamp\nu,caf\xe9,1\n"},
                  (ERROR, "unreadable-file", "interactions.csv", "")),
    "empty id": ({"interactions.csv": _table(INTER, "u,a,1", ",a,2")}, (ERROR, "invalid-user_id", "interactions.csv", "line 3")),
    "nan timestamp": ({"interactions.csv": _table(INTER, "u,a,1", "u,b,NaN")},
                      (ERROR, "bad-timestamp", "interactions.csv", "line 3")),
    "nobody trainable": ({"interactions.csv": _table(INTER, "u,a,1", "v,b,2")}, (ERROR, "no-trainable-user")),
    "duplicate item": ({"interactions.csv": _table(INTER, "u,a,1"), "items.csv": _table("item_id", "a", "a")},
                       (ERROR, "duplicate-item_id", "items.csv", "line 3")),
    "bad modality": ({"interactions.csv": _table(INTER, "u,a,1"), "items.csv": _table("item_id,modality", "a,video")},
                     (ERROR, "bad-modality", "items.csv", "line 2")),
    "blank text": ({"interactions.csv": _table(INTER, "u,a,1"), "items.csv": _table("item_id,modality,text", "a,text,  ")},
                   (ERROR, "blank-text", "items.csv", "line 2")),
    "image item without path": ({"interactions.csv": _table(INTER, "u,a,1"),
                                 "items.csv": _table("item_id,modality,image", "a,image,")},
                                (ERROR, "missing-image", "items.csv", "line 2")),
    "unused bad image": ({"interactions.csv": _table(INTER, "u,a,1"),
                          "items.csv": _table("item_id,modality,text,image", "a,text,hi,gone.png")},
                         (WARNING, "bad-image", "items.csv", "line 2")),
    "duplicate user": ({"interactions.csv": _table(INTER, "u,a,1"), "users.csv": _table("user_id", "u", "u")},
                       (ERROR, "duplicate-user_id", "users.csv", "line 3")),
    "domain conflict (loader)": ({"interactions.csv": _table("user_id,item_id,timestamp,domain", *[
        f"u,a,{t},{d}" for t, d in enumerate(["x", "y", "x"])])}, (ERROR, "loader")),
}


@pytest.mark.parametrize("case", list(VALIDATOR_CASES))
def test_validator_reports_file_and_line(tmp_path, case):
    files, expected = VALIDATOR_CASES[case]
    folder = write_text(tmp_path / "d", files) if files is not None else tmp_path / "nowhere"
    found = {(f.level, f.check, f.file, f.where)[: len(expected)] for f in validate_folder(folder).findings}
    assert expected in found, found


def test_validator_counts_everything_but_keeps_a_sample(tmp_path):
    rows = [f"u,i{k % 3},{k}" for k in range(10)] + ["u,i0,0"] * 500
    report = validate_folder(write_text(tmp_path / "d", {"interactions.csv": _table(INTER, *rows)}))
    assert report.counts[WARNING, "duplicate-row"] == 500 and len(report.warnings) <= 201
    assert "... and 495 more duplicate-row" in report.format() and not report.errors


# --------------------------------------------------------------- malformed files, properties

NASTY = ["u1", "i1", "007", "", " ", "NaN", "nan", "None", "null", "inf", "-inf", "1e400", str(10**30),
         "-" + str(10**30), "1.5", "0", "yesterday", "2020-01-01", "2020-13-45", '"', '""', 'a"b', '"x,y"',
         "caf\u00e9", "\u00b2", "\\N", "a\tb", "x;y", "1|2"]
RAW = [b"\xff", b"\xe9", b"\x00", b"\xef\xbb\xbf"]  # invalid UTF-8, latin-1 e-acute, NUL, a BOM mid-file
tokens = st.one_of(st.sampled_from(NASTY), st.text(alphabet='ab1,;"\n', max_size=3))


MUTATIONS = ["none"] * 6 + ["field", "field", "drop", "add", "sep", "quote"]


@st.composite
def line(draw, sep: str, fields: list[str]) -> str:
    """A valid line, often with one field, the field count, the separator or the quoting broken."""
    fields = list(fields)
    mutation = draw(st.sampled_from(MUTATIONS))
    k = draw(st.integers(0, len(fields) - 1))
    if mutation == "field":
        fields[k] = draw(tokens)
    elif mutation == "drop":
        del fields[k]
    elif mutation == "add":
        fields.insert(k, draw(tokens))
    elif mutation == "sep":
        sep = draw(st.sampled_from([",", ";", " ", "\t", "|", ":", ",,"]))
    elif mutation == "quote":
        fields[k] = '"' + fields[k]
    return sep.join(fields)


@st.composite
def text_file(draw, sep: str, rows: list[list[str]], header: list[str] | None = None, encoding: str = "utf-8"
              ) -> bytes:
    """`rows` as lines (some broken), maybe empty, maybe with bytes that are not UTF-8."""
    if draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from([b"", b"\n", b" \n\n"]))
    clean = draw(st.booleans())  # half the files are valid, so the loaders' success paths run too
    lines = [sep.join(r) if clean else draw(line(sep, r)) for r in ([header] if header else []) + rows]
    data = ("\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))).encode(encoding, "replace")
    if not clean and draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(RAW)) + data[at:]
    return data


small = st.sampled_from(["1", "2", "3"])
stamp = st.sampled_from(["1", "2.5", "1700000000", "2020-01-01", "2020-01-01T10:00:00+02:00"])


@st.composite
def canonical_files(draw) -> dict[str, bytes]:
    n = draw(st.integers(1, 6))
    rows = [[f"u{draw(small)}", f"i{draw(small)}", draw(stamp)] for _ in range(n)]
    files = {"interactions.csv": draw(text_file(",", rows, ["user_id", "item_id", "timestamp"]))}
    if draw(st.booleans()):
        items = [[f"i{k}", draw(st.sampled_from(["text", "id"])), f"item {k}", "", "books"] for k in (1, 2, 3)]
        files["items.csv"] = draw(text_file(",", items, ["item_id", "modality", "text", "image", "domain"]))
    return files


def _csv_column(data: bytes, name: str) -> list[str]:
    """A column as Python's csv module reads it (non-blank rows): what the user's file says."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    header = [h.strip() for h in rows[0]]
    return [(r + [""] * len(header))[header.index(name)] for r in rows[1:] if any(r)]


@PROPERTY
@given(files=canonical_files())
def test_property_canonical_loader_fails_cleanly_or_loads_the_file(files):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_text(Path(tmp) / "d", files)
        report = validate_folder(folder)  # never raises, whatever the files hold
        try:
            ds = load_dataset_folder(folder)
        except TransrecError:
            event("refused")
            assert report.errors, "the loader refused data the validator passed"
            return
        event("loaded")
        # loaded: nothing was silently changed or dropped, and the validator agrees
        assert ds.interactions.users.decode(ds.interactions.user) == _csv_column(files["interactions.csv"], "user_id")
        assert ds.items.ids.decode(ds.interactions.item) == _csv_column(files["interactions.csv"], "item_id")
        assert np.isfinite(ds.interactions.timestamp).all()
        tolerated = {"no-trainable-user", "bad-image", "blank-text"}  # the loader leaves these to later stages
        assert {f.check for f in report.errors} <= tolerated, report.format()


ML_FILES = {  # variant -> (file, separator, fields of a valid line); ids 1..3, "{k}" = the line's item
    "ml-100k": [("u.data", "\t", ["{u}", "{i}", "4", "881250949"]),
                ("u.item", "|", ["{k}", "Film (1995)", "01-Jan-1995", "", "http://x", *["0"] * 19]),
                ("u.user", "|", ["{k}", "25", "M", "writer", "0"])],
    "ml-1m": [("ratings.dat", "::", ["{u}", "{i}", "4", "978300760"]),
              ("movies.dat", "::", ["{k}", "Film (1995)", "Drama|Comedy"]),
              ("users.dat", "::", ["{k}", "F", "25", "10", "48067"])],
}


@st.composite
def movielens_files(draw) -> tuple[str, dict[str, bytes]]:
    variant = draw(st.sampled_from(sorted(ML_FILES)))
    files = {}
    for name, sep, fields in ML_FILES[variant]:
        n = draw(st.integers(1, 5)) if "{u}" in fields else 3
        rows = [[f.format(u=draw(small), i=draw(small), k=k % 3 + 1) for f in fields] for k in range(n)]
        files[name] = draw(text_file(sep, rows, encoding="latin-1"))  # GroupLens files are latin-1
    if draw(st.booleans()):
        del files[ML_FILES[variant][2][0]]  # the users file is optional
    return variant, files


@PROPERTY
@given(spec=movielens_files())
def test_property_movielens_fails_cleanly_or_keeps_every_rating(spec):
    variant, files = spec
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_text(Path(tmp) / variant, files)
        try:
            ds = load_movielens(folder, variant=variant)
        except TransrecError:
            event("refused")
            return
        event("loaded")
        name, sep, _ = ML_FILES[variant][0]
        rows = [x.rstrip("\r").split(sep) for x in files[name].decode("latin-1").split("\n") if x.strip()]
        assert ds.interactions.users.decode(ds.interactions.user) == [r[0] for r in rows]
        assert ds.items.ids.decode(ds.interactions.item) == [r[1] for r in rows]
        assert np.isfinite(ds.interactions.timestamp).all()


def test_movielens_unicode_digit_is_not_a_number(tmp_path):
    """Found by the property above: '²' (latin-1 0xB2) passes str.isdigit but not int()."""
    folder = write_text(tmp_path / "ml-1m", {"ratings.dat": "1::7::5::978300760\n", "movies.dat": "7::Film (1975)::Drama\n",
                                             "users.dat": b"1::F::1::\xb2::48067\n"})
    assert load_movielens(folder, variant="ml-1m").profiles.attributes["occupation"] == [None, "\u00b2"]
    (folder / "users.dat").write_bytes(b"1::F::\xb2::10::48067\n")
    with pytest.raises(DataError, match=r"users\.dat: line 1: age"):
        load_movielens(folder, variant="ml-1m")


@st.composite
def peterrec_files(draw) -> tuple[bytes, bytes]:
    n = draw(st.integers(1, 4))
    seqs = [["0"] * draw(st.integers(0, 2)) + draw(st.lists(small, min_size=1, max_size=4)) for _ in range(n)]
    fine = [s + ["", draw(small)] for s in seqs]  # "a,b,,target"
    return draw(text_file(",", seqs)), draw(text_file(",", fine))


@PROPERTY
@given(files=peterrec_files())
def test_property_peterrec_fails_cleanly_or_keeps_every_item(files):
    with tempfile.TemporaryDirectory() as tmp:
        pre, fine = Path(tmp) / "pre.csv", Path(tmp) / "fine.csv"
        pre.write_bytes(files[0])
        fine.write_bytes(files[1])
        for load in (lambda: load_peterrec_pretrain(pre), lambda: load_peterrec_finetune(fine),
                     lambda: load_peterrec_pair(pre, fine)):
            try:
                load()
            except TransrecError:
                pass
        try:
            ds = load_peterrec_pretrain(pre)
        except TransrecError:
            event("refused")
            return
        event("loaded")
        lines = [line.rstrip("\r") for line in files[0].decode("utf-8-sig").split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        expected = []
        for line in lines:
            items = [t.strip() for t in line.split(",")]
            while items and items[0] == "0":
                items.pop(0)
            expected.append(items)
        seqs = ds.interactions.sequences()
        assert [ds.items.ids.decode(s) for s in seqs[1:]] == expected


# ------------------------------------------------------------------------- round trips

SPECIAL_IDS = ["NaN", "None", "null", "true", "1e5", "007", "-0", "+1", "0x1F", str(10**30), "1.0", "caf\u00e9"]


@PROPERTY
@given(rows=st.lists(st.tuples(st.sampled_from(SPECIAL_IDS), st.sampled_from(SPECIAL_IDS),
                               st.one_of(st.integers(-(10**15), 10**15), st.sampled_from([0.5, 1e-9, 1e15 + 0.5]))),
                     min_size=1, max_size=15),
       fmt=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_property_canonical_round_trip_keeps_odd_ids(rows, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        src = write_text(Path(tmp) / "src", {"interactions.jsonl": "".join(
            json.dumps({"user_id": u, "item_id": i, "timestamp": t}) + "\n" for u, i, t in rows)})
        first = load_dataset_folder(src)
        assert first.items.ids.decode(first.interactions.item) == [r[1] for r in rows]
        second = load_dataset_folder(write_dataset_folder(first, Path(tmp) / "out", fmt))
        assert as_plain(first) == as_plain(second)


def _expected_id(v) -> str | None:
    if isinstance(v, bool) or v is None or v == "":
        return None
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) <= 2**53 else None
    return str(v)


valid_json_ids = st.one_of(st.integers(2**53, 2**64), st.integers(-(10**30), 10**30), st.sampled_from(SPECIAL_IDS),
                           st.integers(-(2**53), 2**53).map(float))
json_ids = st.one_of(valid_json_ids, st.sampled_from([""]), st.booleans(), st.none(), st.floats())


@PROPERTY
@given(rows=st.one_of(st.lists(st.tuples(valid_json_ids, valid_json_ids), min_size=1, max_size=10),
                      st.lists(st.tuples(json_ids, json_ids), min_size=1, max_size=10)))
def test_property_jsonl_ids_are_exact_or_refused(rows):
    """JSON numbers as ids: any int stays exact (pandas would round 2**62 + 1 in a column that also
    holds a float); a float that is not exactly an integer (NaN, 1.5, 1e30) is an error."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_text(Path(tmp) / "d", {"interactions.jsonl": "".join(
            json.dumps({"user_id": u, "item_id": i, "timestamp": k}) + "\n" for k, (u, i) in enumerate(rows))})
        users, items = [_expected_id(u) for u, _ in rows], [_expected_id(i) for _, i in rows]
        if None in users + items:
            with pytest.raises(DataError, match="empty or invalid"):
                load_dataset_folder(folder)
            return
        ds = load_dataset_folder(folder)
        assert ds.interactions.users.decode(ds.interactions.user) == users
        assert ds.items.ids.decode(ds.interactions.item) == items


ML_ITEM = "{id}|{title} ({year})|01-Jan-{year}||http://x|" + "|".join(["{g}"] * 19)


@PROPERTY
@given(ratings=st.lists(st.tuples(st.integers(1, 10**30), st.integers(1, 6), st.integers(0, 10**12)),
                        min_size=1, max_size=25),
       genre=st.sampled_from(["0", "1"]), fmt=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_property_movielens_round_trip(ratings, genre, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ml-100k"
        users = sorted({u for u, _, _ in ratings})
        write_text(folder, {
            "u.data": "".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in ratings),
            "u.item": "".join(ML_ITEM.format(id=i, title=f"Film \u00e9 {i}", year=1990 + i, g=genre) + "\n"
                              for i in range(1, 7)).encode("latin-1"),
            "u.user": "".join(f"{u}|{20 + k}|{'MF'[k % 2]}|writer|0\n" for k, u in enumerate(users)),
        })
        first = load_movielens(folder)
        second = load_dataset_folder(write_dataset_folder(first, Path(tmp) / "out", fmt))
        assert as_plain(first) == as_plain(second)


@PROPERTY
@given(seqs=st.lists(st.tuples(st.integers(0, 3), st.lists(st.sampled_from(["1", "7", "42", "007", str(10**30), "x"]),
                                                           min_size=1, max_size=6)), min_size=1, max_size=8),
       fmt=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_property_peterrec_round_trip(seqs, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.csv"
        pre.write_text("".join(",".join(["0"] * pad + items) + "\n" for pad, items in seqs))
        first = load_peterrec_pretrain(pre)
        second = load_dataset_folder(write_dataset_folder(first, Path(tmp) / "out", fmt))
        assert as_plain(first) == as_plain(second)
        assert [second.items.ids.decode(s) for s in second.interactions.sequences()[1:]] == [s for _, s in seqs]


# ------------------------------------------------------------------------ crash-safe training


class FakeAccelerator:
    """What `save_checkpoint`/`load_checkpoint` use of accelerate, writing one marker file."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "model.bin").write_text("state")

    def load_state(self, path: str, strict: bool = True) -> None:
        assert (Path(path) / "model.bin").is_file() and strict is False  # frozen weights are not in checkpoints


def test_checkpoint_keeps_best_weights_consistent(tmp_path):
    acc, ckpt, best = FakeAccelerator(), tmp_path / "checkpoints", tmp_path / BEST_NAME
    save_file({"w": torch.ones(2)}, str(best))
    save_checkpoint(acc, ckpt, TrainerState(epoch=1, best_epoch=1), best)
    save_file({"w": torch.full((2,), 2.0)}, str(best))  # an improvement, then a kill before its checkpoint
    (ckpt / ".latest.old").mkdir()  # and a leftover of a kill between renames
    state = load_checkpoint(acc, find_checkpoint(ckpt), best)
    assert state.best_epoch == 1 and torch.equal(load_file(str(best))["w"], torch.ones(2))
    save_checkpoint(acc, ckpt, TrainerState(epoch=2, best_epoch=1), best)  # the leftover does not block saving
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest"]
    save_checkpoint(acc, ckpt, TrainerState(epoch=0), None)  # no best yet: a stray best file is removed
    load_checkpoint(acc, find_checkpoint(ckpt), best)
    assert not best.exists()


def _stop_mid_epoch(proc: subprocess.Popen, checkpoints: Path, log: Path, timeout: float = 240) -> dict:
    """SIGSTOP the run once its last complete checkpoint is inside an epoch after the first; SIGKILL it."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = find_checkpoint(checkpoints)
        try:
            state = json.loads((found / "trainer_state.json").read_text()) if found else None
        except (OSError, ValueError):  # renamed under us
            state = None
        if state and state["epoch"] >= 1 and state["step_in_epoch"] >= 1:
            proc.send_signal(signal.SIGSTOP)  # frozen: what we read now is what --resume will find
            found = find_checkpoint(checkpoints)
            state = json.loads((found / "trainer_state.json").read_text())
            if state["step_in_epoch"] >= 1:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return state
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"the run ended or stalled before a mid-epoch checkpoint (exit {proc.poll()}): "
                f"{log.read_text()[-3000:]}")


def test_sigkill_mid_epoch_then_resume_is_exact(tiny_world, tmp_path):
    overrides = tiny_overrides(tiny_world, **{"train.epochs": 3, "train.checkpoint_every": 1})
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "transrec", "train", "--output-dir", str(out), *overrides]
    with open(tmp_path / "killed.err", "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        state = _stop_mid_epoch(proc, out / "checkpoints", tmp_path / "killed.err")
    assert not (out / "metrics.json").exists() and state["best_epoch"] >= 1
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at epoch {state['epoch']}, batch {state['step_in_epoch']}" in (out / "train.log").read_text()

    from transrec.training.trainer import train

    straight = train(load_config(None, overrides), tmp_path / "straight").metrics
    got = json.loads((out / "metrics.json").read_text())
    assert got["test"] == pytest.approx(straight["test"], abs=1e-6)
    assert got["valid"] == pytest.approx(straight["valid"], abs=1e-6)
    assert got["run"]["best_epoch"] == straight["run"]["best_epoch"]
    a, b = load_file(str(out / "model" / "model.safetensors")), load_file(str(tmp_path / "straight" / "model" /
                                                                              "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    def curve(run: Path) -> list[dict]:  # log.csv without wall times: no row lost or doubled by the kill
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader((run / "log.csv").open())]

    assert curve(out) == curve(tmp_path / "straight")


# ------------------------------------------------------------------------------ safe loading


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    model = SequentialRecommender(num_items=12, user_encoder="sasrec", dim=8, max_len=5,
                                  encoder_args={"num_layers": 1, "num_heads": 1})
    return save_model(model, tmp_path / "model", [f"i{k}" for k in range(12)])


def _tamper_state(folder: Path, change) -> str:
    state = load_file(str(folder / "model.safetensors"))
    name = change(state)
    save_file(state, str(folder / "model.safetensors"))
    return name


def _wrong_shape(state: dict) -> str:
    name = sorted(state)[-1]
    state[name] = torch.zeros(*state[name].shape, 2)
    return name


def _missing(state: dict) -> str:
    name = sorted(state)[0]
    del state[name]
    return name


def _extra(state: dict) -> str:
    state["backdoor.weight"] = torch.zeros(3)
    return "backdoor.weight"


@pytest.mark.parametrize("change, problem", [(_wrong_shape, "shape mismatch"), (_missing, "missing tensors"),
                                             (_extra, "unexpected tensors")])
def test_tampered_tensors_are_named(model_dir, change, problem):
    name = _tamper_state(model_dir, change)
    with pytest.raises(CheckpointError, match=problem) as info:
        load_model(model_dir)
    assert name in str(info.value)


@pytest.mark.parametrize("damage", ["header", "truncate", "empty"])
def test_corrupt_safetensors_file(model_dir, damage):
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes({"header": b"\xff" * 16 + data[16:], "truncate": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(model_dir)


class _Exploit:
    """A pickle that runs code when loaded (writes a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_pickled_weights_need_an_explicit_flag(model_dir, tmp_path):
    state = load_file(str(model_dir / "model.safetensors"))
    (model_dir / "model.safetensors").unlink()
    torch.save(state, model_dir / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*allow_pickle=True"):
        load_model(model_dir)
    model = load_model(model_dir, allow_pickle=True)  # trusted by the user: weights_only unpickling
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    marker = tmp_path / "marker"
    with open(model_dir / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": _Exploit(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_model(model_dir)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(model_dir, allow_pickle=True)
    assert not marker.exists()


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c.update(trust_remote_code=True), "'trust_remote_code'"),
    (lambda c: c.update(hidden_act="gelu"), "'hidden_act'"),
    (lambda c: c.update(num_items=-5), "config does not fit"),
    (lambda c: c.update(user_encoder="transformerxl"), "transformerxl"),
])
def test_config_is_validated(model_dir, edit, fragment):
    config = json.loads((model_dir / "config.json").read_text())
    edit(config)
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=fragment):
        load_model(model_dir)
    (model_dir / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        load_model(model_dir)


def test_no_code_enables_trust_remote_code():
    root = Path(__file__).resolve().parents[1] / "transrec"
    offenders = [p for p in root.rglob("*.py") if "trust_remote_code=True" in p.read_text().replace(" ", "")]
    assert offenders == []


# ----------------------------------------------------------------------------- resource guards


def test_memory_guard_names_the_setting(monkeypatch, tiny_world, tmp_path, capsys):
    cfg = load_config(None, ["train.batch_size=128", "data.max_len=50", "eval.batch_size=256", "eval.chunk_size=65536"])
    check_memory(cfg, num_items=1000, limit=2**40)  # plenty: nothing to say
    with pytest.raises(ConfigError, match=r"train\.objective=sampled_softmax") as info:
        check_memory(cfg, num_items=10**6, limit=2**30)  # 128 x 50 x 1M x 4 bytes = 24 GiB of logits
    assert "23.8 GiB" in str(info.value) and "train.batch_size=128" in str(info.value)
    cfg = load_config(None, ["train.objective=sampled_softmax", "eval.batch_size=256", "eval.chunk_size=65536"])
    check_memory(cfg, num_items=10**6, limit=2**30)  # sampled softmax and a 64 MiB chunk fit
    with pytest.raises(ConfigError, match=r"lower eval\.chunk_size \(e\.g\. eval\.chunk_size=1024\)"):
        check_memory(cfg, num_items=10**6, limit=2**20)
    check_memory(cfg, num_items=100, limit=256 * 101 * 4)  # chunks never exceed the catalogue
    # the trainer checks before it builds anything; the CLI prints one line
    monkeypatch.setattr("transrec.training.guards.available_memory", lambda device=None: 20_000)
    code = main(["train", "--output-dir", str(tmp_path / "run"), *tiny_overrides(tiny_world)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("transrec: error:") == 1, err
    assert "train.objective=sampled_softmax" in err.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "checkpoints").exists()
