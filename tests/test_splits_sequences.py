"""Leave-one-out splits, filters and the sequence datasets / collators, against hand-made cases."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from transrec.data.sequences import (
    EvalCollator,
    EvalDataset,
    NextItemDataset,
    collate_next_item,
    left_pad,
)
from transrec.data.splits import EvalSet, filter_sequences, leave_one_out
from transrec.errors import DataError


def arr(*xs):
    return np.asarray(xs, dtype=np.int64)


# ---------------------------------------------------------------- leave-one-out


def test_leave_one_out_hand_made():
    seqs = [arr(), arr(5, 3, 9, 1), arr(2, 4, 6), arr(), arr(7, 8, 1, 2, 3, 4)]
    split = leave_one_out(seqs)
    # train = all but the last two items; index 0 and empty users stay empty
    assert len(split.train) == len(seqs)
    assert [s.tolist() for s in split.train] == [[], [5, 3], [2], [], [7, 8, 1, 2]]
    assert split.num_users == 3
    assert split.valid.users.tolist() == [1, 2, 4] and split.test.users.tolist() == [1, 2, 4]
    assert split.valid.targets.tolist() == [9, 4, 3]
    assert split.test.targets.tolist() == [1, 6, 4]
    assert [h.tolist() for h in split.valid.histories] == [[5, 3], [2], [7, 8, 1, 2]]
    assert [h.tolist() for h in split.test.histories] == [[5, 3, 9], [2, 4], [7, 8, 1, 2, 3]]
    assert len(split.valid) == len(split.test) == 3


def test_leave_one_out_structure_and_no_leakage_random():
    rng = np.random.default_rng(0)
    seqs = [arr()] + [rng.integers(1, 30, size=rng.integers(3, 15)) for _ in range(40)]
    seqs[7] = arr()  # a user without interactions
    split = leave_one_out(seqs)
    users = [u for u in range(1, len(seqs)) if len(seqs[u])]
    assert split.valid.users.tolist() == users == split.test.users.tolist()
    for k, u in enumerate(users):
        s, tr = seqs[u], split.train[u]
        # train is a strict prefix; the held-out items are the last two, in time order
        assert len(tr) == len(s) - 2 and np.array_equal(tr, s[: len(s) - 2])
        assert split.valid.targets[k] == s[-2] and split.test.targets[k] == s[-1]
        np.testing.assert_array_equal(split.valid.histories[k], tr)
        np.testing.assert_array_equal(split.test.histories[k], np.append(tr, s[-2]))
    assert len(split.train[7]) == 0


def test_leave_one_out_targets_not_in_train_without_repeats():
    rng = np.random.default_rng(1)
    seqs = [arr()] + [rng.permutation(np.arange(1, 50))[: rng.integers(3, 20)] for _ in range(30)]
    split = leave_one_out(seqs)
    for k, u in enumerate(split.valid.users):
        train = set(split.train[u].tolist())
        assert int(split.valid.targets[k]) not in train
        assert int(split.test.targets[k]) not in train
        assert int(split.test.targets[k]) not in set(split.test.histories[k].tolist())
        assert int(split.valid.targets[k]) not in set(split.valid.histories[k].tolist())


@pytest.mark.parametrize("short", [arr(1), arr(1, 2)])
def test_leave_one_out_short_user_raises(short):
    with pytest.raises(DataError, match="fewer than 3"):
        leave_one_out([arr(), arr(1, 2, 3), short])


def test_leave_one_out_no_users_raises():
    with pytest.raises(DataError):
        leave_one_out([arr(), arr()])


# ---------------------------------------------------------------- filters


def brute_filter(seqs, num_items, min_user, k):
    """Remove items with < k occurrences and users with < max(min_user, k) items until nothing changes."""
    seqs = [list(map(int, s)) for s in seqs]
    while True:
        before = [list(s) for s in seqs]
        if k > 0:
            counts = Counter(i for s in seqs for i in s)
            seqs = [[i for i in s if counts[i] >= k] for s in seqs]
        need = max(min_user, k)
        seqs = [s if len(s) >= need else [] for s in seqs]
        if seqs == before:
            return seqs


def test_filter_drops_short_users_keeps_indexing():
    seqs = [arr(), arr(1, 2), arr(1, 2, 3), arr(4), arr(5, 6, 7, 8)]
    out = filter_sequences(seqs, num_items=8, min_user_interactions=3)
    assert [s.tolist() for s in out] == [[], [], [1, 2, 3], [], [5, 6, 7, 8]]


def test_filter_k_core_hand_made_needs_iteration():
    # k=2: item 9 appears once -> removed from user 3, who then has 1 item -> dropped, which leaves
    # item 4 with a single occurrence -> removed from user 2 -> user 2 falls to 1 item -> dropped ...
    seqs = [arr(), arr(1, 2, 1, 2), arr(4, 5), arr(4, 9), arr(5, 1)]
    out = filter_sequences(seqs, num_items=9, min_user_interactions=2, k_core=2)
    expected = brute_filter(seqs, 9, 2, 2)
    assert expected == [[], [1, 2, 1, 2], [], [], []]  # worked out by hand in the comment above
    assert [s.tolist() for s in out] == expected


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [0, 2, 3, 5])
def test_filter_k_core_matches_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    num_items = 25
    # skewed popularity so that filtering cascades
    p = 1.0 / np.arange(1, num_items + 1) ** 1.1
    p /= p.sum()
    seqs = [arr()] + [rng.choice(np.arange(1, num_items + 1), size=rng.integers(1, 9), p=p)
                      for _ in range(60)]
    expected = brute_filter(seqs, num_items, 3, k)
    if not any(expected[1:]):
        with pytest.raises(DataError):
            filter_sequences(seqs, num_items, 3, k)
        return
    out = filter_sequences(seqs, num_items, min_user_interactions=3, k_core=k)
    assert len(out) == len(seqs)
    assert [s.tolist() for s in out] == expected
    if k > 0:  # the result really is a k-core
        counts = Counter(int(i) for s in out for i in s)
        assert all(c >= k for c in counts.values())
        assert all(len(s) == 0 or len(s) >= max(3, k) for s in out)
    # order inside each kept sequence is preserved (filtering never reorders time)
    for s, o in zip(seqs, out):
        it = iter(s.tolist())
        assert all(x in it for x in o.tolist())


def test_filter_everything_dropped_raises():
    with pytest.raises(DataError, match="after filtering"):
        filter_sequences([arr(), arr(1), arr(2, 3)], num_items=3, min_user_interactions=3)


# ---------------------------------------------------------------- next-item windows


def transitions(seq):
    return [(i, int(seq[i]), int(seq[i + 1])) for i in range(len(seq) - 1)]


def locate(window, seq):
    """Start offsets where `window` occurs contiguously in `seq`."""
    n = len(window)
    return [s for s in range(len(seq) - n + 1) if np.array_equal(seq[s:s + n], window)]


@pytest.mark.parametrize("max_len", [1, 2, 5])
def test_next_item_windows_cover_every_transition_once(max_len):
    lengths = [1, 2, 6, 7, 23, 0, 3]
    # distinct item ids inside and across sequences, so each window maps back to one place
    seqs, nxt = [], 1
    for n in lengths:
        seqs.append(np.arange(nxt, nxt + n, dtype=np.int64))
        nxt += n
    ds = NextItemDataset(seqs, max_len=max_len)
    owner = {int(i): (u, pos) for u, s in enumerate(seqs) for pos, i in enumerate(s)}
    seen = Counter()
    per_user = {u: [] for u in range(len(seqs))}
    for k in range(len(ds)):
        w = ds[k]
        assert w.dtype == np.int64
        assert 2 <= len(w) <= max_len + 1
        u, start = owner[int(w[0])]
        assert np.array_equal(seqs[u][start:start + len(w)], w)  # a contiguous slice of one sequence
        per_user[u].append((start, len(w)))
        for a, b in zip(w[:-1], w[1:]):
            seen[(u, owner[int(a)][1], int(a), int(b))] += 1
    expected = Counter((u, i, a, b) for u, s in enumerate(seqs) for i, a, b in transitions(s))
    assert seen == expected  # every transition exactly once, nothing extra
    assert len(ds) == sum(-(-(n - 1) // max_len) for n in lengths if n >= 2)
    for u, s in enumerate(seqs):
        if len(s) < 2:
            assert per_user[u] == []
            continue
        # the first window of a user holds its most recent items (cut from the end)
        start, n = per_user[u][0]
        assert start + n == len(s) and n == min(len(s), max_len + 1)
        # all windows but the oldest are full
        assert all(n == max_len + 1 for _, n in per_user[u][:-1])


def test_next_item_windows_hand_made():
    ds = NextItemDataset([arr(), arr(1, 2, 3, 4, 5, 6, 7)], max_len=5)
    assert [w.tolist() for w in ds.windows] == [[2, 3, 4, 5, 6, 7], [1, 2]]
    ds = NextItemDataset([arr(1, 2, 3, 4, 5, 6)], max_len=5)
    assert [w.tolist() for w in ds.windows] == [[1, 2, 3, 4, 5, 6]]
    ds = NextItemDataset([arr(9), arr(8, 7)], max_len=5)
    assert [w.tolist() for w in ds.windows] == [[8, 7]]


def test_collate_next_item_left_pads_and_aligns():
    windows = [arr(3, 1, 4, 1, 5, 9), arr(2, 7), arr(6, 5, 3)]
    batch = collate_next_item(windows)
    items, targets = batch["items"], batch["targets"]
    assert items.dtype == torch.long and targets.dtype == torch.long
    assert items.shape == targets.shape == (3, 5)
    assert items.tolist() == [[3, 1, 4, 1, 5], [0, 0, 0, 0, 2], [0, 0, 0, 6, 5]]
    assert targets.tolist() == [[1, 4, 1, 5, 9], [0, 0, 0, 0, 7], [0, 0, 0, 5, 3]]
    # padding in the same places, and targets[t] is the item that follows items[t]
    assert torch.equal(items > 0, targets > 0)
    for w, row_i, row_t in zip(windows, items, targets):
        real = row_i > 0
        assert row_i[real].tolist() == w[:-1].tolist() and row_t[real].tolist() == w[1:].tolist()
        assert real[-1] and real.sum() == len(w) - 1  # the latest item sits at position -1


def test_collate_next_item_from_dataset_windows():
    rng = np.random.default_rng(3)
    seqs = [rng.integers(1, 40, size=n) for n in (1, 2, 6, 7, 23)]
    ds = NextItemDataset(seqs, max_len=5)
    batch = collate_next_item([ds[i] for i in range(len(ds))])
    assert batch["items"].shape[1] == 5
    mask = batch["items"] > 0
    assert torch.equal(mask, batch["targets"] > 0)
    assert int(mask.sum()) == sum(max(0, len(s) - 1) for s in seqs)  # one target per transition
    # within a row, each target equals the next input
    for row_i, row_t in zip(batch["items"], batch["targets"]):
        real = (row_i > 0).nonzero().flatten()
        assert torch.equal(row_t[real[:-1]], row_i[real[1:]])


def test_left_pad():
    out = left_pad([arr(1, 2), arr(), arr(3)])
    assert out.tolist() == [[1, 2], [0, 0], [0, 3]]
    assert left_pad([arr(), arr()]).shape == (2, 1)
    assert left_pad([arr(4)], length=3).tolist() == [[0, 0, 4]]


# ---------------------------------------------------------------- evaluation batches


def test_eval_collator_truncates_input_keeps_full_history():
    cases = EvalSet(users=arr(4, 9, 2),
                    histories=[arr(1, 2, 3, 4, 5, 6, 7, 8), arr(11, 12), arr(13, 14, 15, 16, 17)],
                    targets=arr(30, 31, 32))
    ds = EvalDataset(cases, max_len=5)
    assert len(ds) == 3
    h, t, u = ds[1]
    assert h.tolist() == [11, 12] and (t, u) == (31, 9)
    batch = EvalCollator(max_len=5)([ds[i] for i in range(len(ds))])
    assert batch["items"].tolist() == [[4, 5, 6, 7, 8], [0, 0, 0, 11, 12], [13, 14, 15, 16, 17]]
    assert batch["history"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 11, 12],
                                         [0, 0, 0, 13, 14, 15, 16, 17]]
    assert batch["targets"].tolist() == [30, 31, 32]
    assert batch["users"].tolist() == [4, 9, 2]
    assert all(v.dtype == torch.long for v in batch.values())


def test_eval_collator_on_a_real_split():
    rng = np.random.default_rng(5)
    seqs = [arr()] + [rng.integers(1, 60, size=rng.integers(3, 20)) for _ in range(12)]
    split = leave_one_out(seqs)
    max_len = 4
    batch = EvalCollator(max_len)([EvalDataset(split.test, max_len)[i] for i in range(len(split.test))])
    assert batch["items"].shape == (12, max_len)
    for k, u in enumerate(split.test.users):
        s = seqs[u]
        hist = s[:-1]
        row = batch["items"][k]
        assert row[row > 0].tolist() == hist[-max_len:].tolist()
        full = batch["history"][k]
        assert full[full > 0].tolist() == hist.tolist()
        assert int(batch["targets"][k]) == s[-1] and int(batch["users"][k]) == u


@pytest.mark.parametrize("max_len,stride", [(5, 1), (5, 2), (5, 5), (4, 3), (1, 1)])
def test_strided_windows_supervise_every_transition_once_with_full_context(max_len, stride):
    lengths = [1, 2, 6, 7, 23, 3]
    seqs, nxt = [], 1
    for n in lengths:
        seqs.append(np.arange(nxt, nxt + n, dtype=np.int64))
        nxt += n
    ds = NextItemDataset(seqs, max_len=max_len, stride=stride)
    position = {int(i): pos for s in seqs for pos, i in enumerate(s)}
    batch = collate_next_item([ds[i] for i in range(len(ds))])
    supervised = Counter()
    for row_i, row_t in zip(batch["items"], batch["targets"]):
        real = (row_i > 0).nonzero().flatten()
        for t in (row_t > 0).nonzero().flatten().tolist():
            target = int(row_t[t])
            assert int(row_i[t]) == target - 1  # ids are consecutive within a sequence: the previous item
            context = int((real <= t).sum())
            # at least max_len - stride items of context, or the whole history before the target
            assert context >= min(max_len - stride + 1, position[target])
            supervised[target] += 1
    expected = Counter(int(i) for s in seqs for i in s[1:])
    assert supervised == expected  # every transition exactly once
    with pytest.raises(ValueError, match="stride"):
        NextItemDataset(seqs, max_len=max_len, stride=max_len + 1)


def test_stride_equal_to_max_len_supervises_like_plain_windows():
    rng = np.random.default_rng(5)
    seqs = [rng.integers(1, 40, size=n) for n in (2, 6, 23)]
    plain = collate_next_item([w for w in NextItemDataset(seqs, max_len=5)])
    # same transitions; the strided windows overlap by one less item, so compare the target multisets
    strided = collate_next_item([w for w in NextItemDataset(seqs, max_len=5, stride=5)])
    assert sorted(plain["targets"][plain["targets"] > 0].tolist()) == \
        sorted(strided["targets"][strided["targets"] > 0].tolist())


# ---------------------------------------------------------------- ties in time


def _tied_log():
    from transrec.data.schema import IdMap, Interactions

    # user 1: item 9 at t=0, then items 5, 2, 7 in one second (file order 5, 2, 7); user 2: 3 before 4 and 1 tied
    users = IdMap(["a", "b"], kind="user")
    return Interactions(users, arr(1, 1, 2, 1, 2, 2, 1), arr(5, 9, 4, 2, 3, 1, 7),
                        np.array([1.0, 0.0, 5.0, 1.0, 2.0, 5.0, 1.0]))


def test_tie_order_decides_only_within_one_timestamp():
    log = _tied_log()
    assert [s.tolist() for s in log.sequences()[1:]] == [[9, 5, 2, 7], [3, 4, 1]]  # the file's order
    assert [s.tolist() for s in log.sequences("file")[1:]] == [[9, 5, 2, 7], [3, 4, 1]]
    assert [s.tolist() for s in log.sequences("item")[1:]] == [[9, 2, 5, 7], [3, 1, 4]]
    shuffled = [log.sequences("random", seed)[1:] for seed in range(20)]
    for seqs in shuffled:  # a permutation inside each tie only: the earlier items stay first
        assert seqs[0][0] == 9 and sorted(seqs[0][1:].tolist()) == [2, 5, 7]
        assert seqs[1][0] == 3 and sorted(seqs[1][1:].tolist()) == [1, 4]
    assert len({tuple(s[0].tolist()) for s in shuffled}) > 1  # it does shuffle
    assert [s.tolist() for s in log.sequences("random", 3)[1:]] == [s.tolist() for s in shuffled[3]]  # seeded
    with pytest.raises(ValueError, match="tie_order"):
        log.sequences("alphabetical")
    assert log.last_two_tied() == (2, 2)


def test_prepare_data_tie_order_checks_and_warns(tmp_path, caplog):
    from transrec.config import DataConfig
    from transrec.data.pipeline import prepare_data
    from transrec.errors import ConfigError

    folder = tmp_path / "d"
    folder.mkdir()
    rows = ["user_id,item_id,timestamp", "a,i1,1", "a,i3,2", "a,i2,2", "b,i2,1", "b,i1,2", "b,i3,3"]
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n")
    cfg = DataConfig(source="folder", path=str(folder))
    data = prepare_data(cfg)
    ids = data.dataset.items.ids
    assert ids.decode(data.split.test.targets.tolist()) == ["i2", "i3"]  # a: file order puts i2 last
    assert "1 of 2 users' two latest interactions share a timestamp" in caplog.text
    cfg.tie_order = "item"  # catalogue order: i1, i3, i2 (first seen); so i2 still last
    assert ids.decode(prepare_data(cfg).split.test.targets.tolist()) == ["i2", "i3"]
    (folder / "items.csv").write_text("item_id\ni1\ni2\ni3\n")  # now the catalogue says i1, i2, i3
    data = prepare_data(cfg)
    assert data.dataset.items.ids.decode(data.split.test.targets.tolist()) == ["i3", "i3"]
    cfg.tie_order = "time"
    with pytest.raises(ConfigError, match="data.tie_order must be one of file, item, random"):
        prepare_data(cfg)
