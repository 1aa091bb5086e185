"""The efficiency modes of content models change the cost, never the result: distinct-item encoding
vs per-position encoding, and the frozen-bottom cache vs running the bottom every step, give the same
loss and the same gradients (tiny random models, dropout off). Timings: benchmarks/content_efficiency.py."""

from __future__ import annotations

import copy

import pytest
import torch

from transrec.data.io import load_dataset_folder
from transrec.models.recommender import SequentialRecommender
from transrec.objectives import create_objective

ATOL = 1e-5


@pytest.fixture(scope="module")
def catalog(tiny_world):
    return load_dataset_folder(tiny_world).items


def make_model(catalog, item_encoder: str, item_encoder_args: dict, seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    model = SequentialRecommender(catalog.num_items, user_encoder="sasrec", item_encoder=item_encoder, dim=16,
                                  max_len=8, encoder_args={"num_layers": 1, "num_heads": 2, "dropout": 0.0},
                                  item_encoder_args=item_encoder_args)
    model.attach_content(model.item_encoder.build_content_store(catalog))
    return model.eval()  # dropout off everywhere: the comparison is deterministic


def batch_with_repeats(catalog, seed: int = 0, rows: int = 4, length: int = 8) -> dict[str, torch.Tensor]:
    """Left-padded windows over a few text and image items, so items repeat within and across rows."""
    text = [i for i, m in enumerate(catalog.modality) if m == "text"]
    image = [i for i, m in enumerate(catalog.modality) if m == "image"]
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor(text[:4] + image[:4])
    windows = pool[torch.randint(len(pool), (rows, length + 1), generator=g)]
    windows[0, :3] = 0  # a shorter user (left padding)
    windows[1, :1] = 0
    return {"items": windows[:, :-1], "targets": windows[:, 1:]}


def loss_and_grads(model, batch, objective, seed: int = 0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # sampled objectives draw the same negatives in both runs
    loss = model(batch["items"], batch["targets"], objective)
    loss.backward()
    return loss.detach(), {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


def assert_same(loss_a, grads_a, loss_b, grads_b):
    assert torch.allclose(loss_a, loss_b, atol=ATOL), (loss_a.item(), loss_b.item())
    assert grads_a.keys() == grads_b.keys()
    with_grad = 0
    for name, ga in grads_a.items():
        gb = grads_b[name]
        assert (ga is None) == (gb is None), name
        if ga is not None:
            with_grad += 1
            assert torch.allclose(ga, gb, atol=ATOL), f"{name}: max diff {(ga - gb).abs().max().item():.2e}"
    return with_grad


MIXTURE = {"text": {"model": "tiny-bert", "trainable_blocks": 1},
           "image": {"model": "tiny-vit", "trainable_blocks": 1}, "modality_embedding": True}


@pytest.mark.parametrize("objective_name", ["inbatch", "sampled_softmax"])
def test_distinct_item_encoding_matches_per_position_encoding(catalog, objective_name):
    distinct = make_model(catalog, "mixture", MIXTURE)
    naive = copy.deepcopy(distinct)
    naive.encode_distinct = False
    assert distinct.encode_distinct
    batch = batch_with_repeats(catalog)
    real = batch["items"][batch["items"] > 0]
    assert len(real.unique()) < len(real) // 2  # many repeats: the two modes encode different row counts
    modality = distinct.item_encoder.content.modality[real]
    assert {1, 2} <= set(modality.tolist())  # text and image items both present
    objective = create_objective(objective_name, torch.ones(catalog.num_items + 1), num_negatives=16)

    calls = []
    hooks = [m.item_encoder.register_forward_pre_hook(lambda mod, args: calls.append(int((args[0] > 0).sum())))
             for m in (distinct, naive)]
    loss_d, grads_d = loss_and_grads(distinct, batch, objective)
    encoded_distinct = sum(calls)
    calls.clear()
    loss_n, grads_n = loss_and_grads(naive, batch, objective)
    encoded_naive = sum(calls)
    for h in hooks:
        h.remove()
    assert encoded_distinct < encoded_naive  # the modes really differ in work
    with_grad = assert_same(loss_d, grads_d, loss_n, grads_n)
    # the trainable parts of both backbones, the projections and the user encoder all received gradients
    trained = [n for n, g in grads_d.items() if g is not None and g.abs().sum() > 0]
    for part in ("item_encoder.text.backbone", "item_encoder.image.backbone", "item_encoder.text.projection",
                 "item_encoder.image.projection", "item_encoder.modality_embedding", "user_encoder"):
        assert any(n.startswith(part) for n in trained), part
    assert with_grad < len(grads_d)  # frozen bottoms: no gradient in either mode


def test_frozen_bottom_cache_matches_running_the_bottom(catalog):
    args = {"model": "tiny-bert", "trainable_blocks": 1, "pooling": "mean"}
    plain = make_model(catalog, "text", {**args, "cache_frozen": False})
    cached = make_model(catalog, "text", {**args, "cache_frozen": True})
    for (name, a), b in zip(plain.state_dict().items(), cached.state_dict().values()):
        assert torch.equal(a, b), name
    encoder = cached.item_encoder
    assert encoder.num_frozen == 1 and len(encoder.layers) == 2

    bottom_rows = []
    run_bottom = encoder.run_bottom

    def counting_bottom(input_ids, attention_mask):
        bottom_rows.append(len(input_ids))
        return run_bottom(input_ids, attention_mask)

    encoder.run_bottom = counting_bottom
    objective = create_objective("inbatch", torch.ones(catalog.num_items + 1), num_negatives=1)
    optimizers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5) for m in (plain, cached)]
    seen: set[int] = set()
    for step in range(3):  # step 0 fills the cache; later steps read it (after the top has been updated)
        batch = batch_with_repeats(catalog, seed=step)
        loss_p, grads_p = loss_and_grads(plain, batch, objective)
        bottom_rows.clear()
        loss_c, grads_c = loss_and_grads(cached, batch, objective)
        assert_same(loss_p, grads_p, loss_c, grads_c)
        batch_items = set(torch.cat([batch["items"].reshape(-1), batch["targets"].reshape(-1)]).tolist()) - {0}
        assert sum(bottom_rows) == len(batch_items - seen)  # the bottom ran only for items not cached yet
        seen |= batch_items
        assert encoder.frozen_cache("bottom").num_filled == len(seen)
        top = [n for n, g in grads_c.items() if g is not None and n.startswith("item_encoder.backbone")]
        assert top and all(".layer.1." in n for n in top)  # only the top block trains
        for opt in optimizers:
            opt.step()
    assert step > 0 and sum(bottom_rows) < len(batch_items)  # the last step reused cached items
