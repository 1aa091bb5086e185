"""Objectives against hand-written references; optimizer groups and schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import transrec.models.recommender  # noqa: F401  (registers encoders)
from transrec.errors import ConfigError
from transrec.models.recommender import SequentialRecommender
from transrec.objectives import create_objective
from transrec.training.optim import build_optimizer, build_scheduler, param_groups

NUM_ITEMS, DIM, MAX_LEN = 20, 8, 6


def make_model(seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    model = SequentialRecommender(num_items=NUM_ITEMS, user_encoder="gru4rec", dim=DIM, max_len=MAX_LEN)
    with torch.no_grad():  # larger item vectors than the 0.02 init, so losses differ clearly from log(n)
        model.item_encoder.embedding.weight[1:].normal_(0, 0.7)
    return model.eval()


def item_counts(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 40, (NUM_ITEMS + 1,), generator=g)
    counts[0] = 123  # padding count must be ignored
    return counts


def case(seed: int = 2, n: int = 11):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, DIM, generator=g)
    targets = torch.randint(1, NUM_ITEMS + 1, (n,), generator=g)
    targets[:3] = torch.tensor([4, 4, 17])  # repeated targets
    return hidden, targets


def hand_proposal(counts):
    q = [0.0] + [(float(c) + 1) ** 0.75 for c in counts[1:]]
    z = sum(q)
    return [x / z for x in q]


def hand_log_popularity(counts):
    z = sum(float(c) + 1 for c in counts[1:])
    return [math.log((float(c) + 1) / z) for c in counts]


def dot(model, h, item):
    e = model.item_encoder.embedding.weight[item].detach().double()
    return float(h.detach().double() @ e)


def cross_entropy(logits, label):
    m = max(x for x in logits if x != -math.inf)
    lse = m + math.log(sum(math.exp(x - m) for x in logits if x != -math.inf))
    return lse - logits[label]


# ---------------------------------------------------------------- full softmax


def test_softmax_equals_brute_force_over_real_items():
    model, counts = make_model(), item_counts()
    hidden, targets = case()
    obj = create_objective("softmax", counts, num_negatives=5)
    loss = obj(model, hidden, targets)
    expected = 0.0
    for h, t in zip(hidden, targets.tolist()):
        logits = [dot(model, h, j) for j in range(1, NUM_ITEMS + 1)]  # item 0 (padding) is no class
        expected += cross_entropy(logits, t - 1)
    expected /= len(targets)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # including the padding row would give a different number: the exclusion matters
    with_pad = sum(cross_entropy([dot(model, h, j) for j in range(0, NUM_ITEMS + 1)], t)
                   for h, t in zip(hidden, targets.tolist())) / len(targets)
    assert abs(with_pad - expected) > 1e-4


# ---------------------------------------------------------------- sampled softmax


@pytest.mark.parametrize("k", [1, 7, 60])
def test_sampled_softmax_matches_hand_computation(k):
    model, counts = make_model(), item_counts()
    hidden, targets = case()
    obj = create_objective("sampled_softmax", counts, num_negatives=k)
    q = hand_proposal(counts.tolist())
    assert obj.proposal.tolist() == pytest.approx(q, rel=1e-5)
    torch.manual_seed(1234)
    loss = obj(model, hidden, targets)

    torch.manual_seed(1234)
    negatives = torch.multinomial(obj.proposal, k, replacement=True).tolist()
    assert 0 not in negatives
    hits = 0
    expected = 0.0
    for h, t in zip(hidden, targets.tolist()):
        logits = [dot(model, h, t) - math.log(k * q[t])]
        for j in negatives:
            if j == t:  # accidental hit: the target is no negative of itself
                logits.append(-math.inf)
                hits += 1
            else:
                logits.append(dot(model, h, j) - math.log(k * q[j]))
        expected += cross_entropy(logits, 0)
    expected /= len(targets)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    if k == 60:
        assert hits > 0  # the masking path was exercised


def test_sampled_softmax_depends_on_the_seed_and_is_reproducible():
    model, counts = make_model(), item_counts()
    hidden, targets = case()
    obj = create_objective("sampled_softmax", counts, num_negatives=3)
    torch.manual_seed(0)
    a = obj(model, hidden, targets).item()
    torch.manual_seed(0)
    b = obj(model, hidden, targets).item()
    assert a == b
    losses = set()
    for s in range(5):
        torch.manual_seed(s)
        losses.add(round(obj(model, hidden, targets).item(), 6))
    assert len(losses) > 1


# ---------------------------------------------------------------- bce


def test_bce_matches_hand_computation_and_is_positive():
    model, counts = make_model(), item_counts()
    hidden, targets = case()
    k = 30
    obj = create_objective("bce", counts, num_negatives=k)
    torch.manual_seed(7)
    loss = obj(model, hidden, targets)
    assert torch.isfinite(loss) and loss.item() > 0
    torch.manual_seed(7)
    negatives = torch.randint(1, NUM_ITEMS + 1, (len(targets), k)).tolist()

    def softplus(x):
        return max(x, 0.0) + math.log1p(math.exp(-abs(x)))

    expected = 0.0
    for h, t, negs in zip(hidden, targets.tolist(), negatives):
        kept = [j for j in negs if j != t]
        neg = sum(softplus(dot(model, h, j)) for j in kept) / max(1, len(kept))
        expected += softplus(-dot(model, h, t)) + neg
    expected /= len(targets)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_bce_decreases_when_the_positive_score_rises():
    model, counts = make_model(), item_counts()
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(6, DIM, generator=g)
    hidden[:, 0] = hidden[:, 0].abs() + 0.5  # every row has a positive first coordinate
    targets = torch.full((6,), 9)  # one shared target, so raising its vector raises every positive score
    obj = create_objective("bce", counts, num_negatives=15)
    losses = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        m = make_model()
        with torch.no_grad():
            m.item_encoder.embedding.weight[9, 0] += shift  # item 9 as a negative is masked out
        torch.manual_seed(11)  # the same negatives each time
        losses.append(obj(m, hidden, targets).item())
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


# ---------------------------------------------------------------- in-batch


def test_inbatch_equals_brute_force_with_logq():
    model, counts = make_model(), item_counts()
    hidden, targets = case()
    obj = create_objective("inbatch", counts, num_negatives=1)
    loss = obj(model, hidden, targets)
    logp = hand_log_popularity(counts.tolist())
    candidates = sorted(set(targets.tolist()))
    assert len(candidates) < len(targets)  # duplicates present: each distinct item is one class
    expected = 0.0
    for h, t in zip(hidden, targets.tolist()):
        logits = [dot(model, h, c) - logp[c] for c in candidates]
        expected += cross_entropy(logits, candidates.index(t))
    expected /= len(targets)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # without the logQ term the value differs (the correction is applied)
    plain = sum(cross_entropy([dot(model, h, c) for c in candidates], candidates.index(t))
                for h, t in zip(hidden, targets.tolist())) / len(targets)
    assert abs(plain - expected) > 1e-4


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", ["softmax", "sampled_softmax", "bce", "inbatch"])
def test_gradient_reaches_item_table_and_user_encoder(name):
    model, counts = make_model(), item_counts()
    obj = create_objective(name, counts, num_negatives=10)
    items = torch.tensor([[0, 0, 3, 5, 7, 2], [1, 4, 6, 8, 9, 10], [0, 0, 0, 0, 11, 12]])
    targets = torch.tensor([[0, 0, 5, 7, 2, 13], [4, 6, 8, 9, 10, 14], [0, 0, 0, 0, 12, 15]])
    torch.manual_seed(0)
    loss = model(items, targets, obj)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    table = model.item_encoder.embedding.weight.grad
    assert table is not None and table[1:].abs().sum() > 0
    # items used only as inputs get gradient through the user encoder
    assert table[3].abs().sum() > 0 and table[1].abs().sum() > 0
    assert table[0].abs().sum() == 0  # padding row never trained
    for pname, p in model.user_encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


# ---------------------------------------------------------------- factory errors


def test_create_objective_unknown_name_suggests():
    with pytest.raises(ConfigError) as err:
        create_objective("sofmax", item_counts(), 5)
    assert "'sofmax'" in str(err.value) and "did you mean 'softmax'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        create_objective("inbach", item_counts(), 5)
    assert "did you mean 'inbatch'" in str(err.value)


@pytest.mark.parametrize("k", [0, -3])
def test_num_negatives_below_one_raises(k):
    with pytest.raises(ConfigError, match="num_negatives"):
        create_objective("sampled_softmax", item_counts(), k)


# ---------------------------------------------------------------- optimizer groups


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.ln = nn.LayerNorm(4)
        self.lin = nn.Linear(4, 6)
        self.out = nn.Linear(6, 3, bias=False)
        self.conv = nn.Conv1d(4, 4, 3)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.out_tied = self.out  # the same module twice: its weight must still appear once


def _groups_by_id(model, wd):
    groups = param_groups(model, wd)
    ids = [id(p) for g in groups for p in g["params"]]
    decay = {id(p) for g in groups if g["weight_decay"] == wd for p in g["params"]}
    zero = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    return groups, ids, decay, zero


def test_param_groups_hand_made_module():
    net = _Net()
    groups, ids, decay, zero = _groups_by_id(net, 0.05)
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert set(ids) == trainable
    assert decay == {id(net.lin.weight), id(net.out.weight), id(net.conv.weight)}
    assert zero == {id(net.emb.weight), id(net.ln.weight), id(net.ln.bias), id(net.lin.bias), id(net.conv.bias)}
    assert id(net.frozen.weight) not in set(ids)


@pytest.mark.parametrize("encoder", ["sasrec", "gru4rec", "nextitnet"])
def test_param_groups_recommenders(encoder):
    model = SequentialRecommender(num_items=NUM_ITEMS, user_encoder=encoder, dim=DIM, max_len=MAX_LEN)
    wd = 0.1
    groups, ids, decay, zero = _groups_by_id(model, wd)
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert decay and zero and not (decay & zero)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, (nn.Embedding, nn.LayerNorm)):
            assert all(id(p) in zero for p in own), type(module)
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            assert id(module.weight) in decay
            if module.bias is not None:
                assert id(module.bias) in zero
    for name, p in model.named_parameters():
        if p.ndim < 2 or name.endswith("bias"):
            assert id(p) in zero, name
    assert id(model.item_encoder.embedding.weight) in zero
    # the optimizer gets exactly these groups
    opt = build_optimizer(model, lr=1e-3, weight_decay=wd)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, wd]
    with pytest.raises(ConfigError):
        build_optimizer(model, lr=0.0, weight_decay=wd)


# ---------------------------------------------------------------- schedules


def _lrs(name, warmup, total, base=0.1):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = build_scheduler(opt, name, warmup, total)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_is_linear_then_cosine_decays_to_zero():
    base, warmup, total = 0.1, 5, 25
    lrs = _lrs("cosine", warmup, total, base)
    assert lrs[:warmup] == pytest.approx([base * (s + 1) / warmup for s in range(warmup)])
    diffs = [b - a for a, b in zip(lrs[:warmup], lrs[1:warmup])]
    assert diffs == pytest.approx([base / warmup] * (warmup - 1))  # equal steps: linear
    assert lrs[warmup] == pytest.approx(base)
    for s in range(warmup, total + 1):
        progress = (s - warmup) / (total - warmup)
        assert lrs[s] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * progress)), abs=1e-12)
    assert all(b <= a + 1e-15 for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))  # monotone decay
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)
    assert lrs[total - 1] < 0.01 * base


def test_linear_and_constant_schedules():
    lrs = _lrs("linear", 2, 12, 1.0)
    assert lrs[:2] == pytest.approx([0.5, 1.0])
    assert lrs[2:] == pytest.approx([1 - s / 10 for s in range(11)])
    assert _lrs("constant", 3, 10, 1.0) == pytest.approx([1 / 3, 2 / 3] + [1.0] * 9)
    assert _lrs("cosine", 0, 4, 1.0) == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(5)], abs=1e-12)
    with pytest.raises(ConfigError, match="scheduler"):
        _lrs("cosin", 0, 4)
