"""The frozen-bottom cache of image encoders (`image_trainable_blocks=k>0`, `cache_frozen=True`) and
`image_size`: the cache changes the cost, never the function; it is never reused for another encoder
config, other frozen weights or other content; gradients reach only the top k blocks; bad images follow
`on_bad`. Tiny models (tiny-vit, and EfficientNet-Lite0's architecture at 32 px, random init)."""

from __future__ import annotations

import copy

import pytest
import torch

from transrec.config import load_config
from transrec.data.content import ContentStore
from transrec.data.io import load_dataset_folder
from transrec.errors import ConfigError, DataError
from transrec.models.item_encoders import image as image_module
from transrec.models.item_encoders.image import ImageItemEncoder
from transrec.models.recommender import SequentialRecommender, build_model
from transrec.objectives import create_objective

ATOL = 1e-5
TINY = {"tiny-vit": {"model": "tiny-vit"},  # 2 transformer blocks at 32 px
        "efficientnet": {"model": "efficientnet-lite0-offline", "pretrained": False, "image_size": 32}}


@pytest.fixture(scope="module")
def catalog(tiny_world):
    return load_dataset_folder(tiny_world).items


def encoder(catalog, tmp_path, seed: int = 0, **kwargs) -> ImageItemEncoder:
    torch.manual_seed(seed)
    enc = ImageItemEncoder(catalog.num_items, 8, trainable_blocks=kwargs.pop("trainable_blocks", 1), **kwargs)
    enc.set_content(enc.build_content_store(catalog, cache_dir=tmp_path))
    return enc


def count_bottom(enc: ImageItemEncoder) -> list[int]:
    """Rows the frozen bottom runs over, per call."""
    calls: list[int] = []
    real = enc.run_bottom
    enc.run_bottom = lambda images: calls.append(len(images)) or real(images)
    return calls


def batch_with_repeats(catalog, seed: int = 0, rows: int = 4, length: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pool = torch.arange(1, 13)
    windows = pool[torch.randint(len(pool), (rows, length + 1), generator=g)]
    windows[0, :3] = 0  # a shorter user (left padding)
    return {"items": windows[:, :-1], "targets": windows[:, 1:]}


def make_model(catalog, tmp_path, args: dict, mode: str) -> SequentialRecommender:
    torch.manual_seed(0)
    model = SequentialRecommender(catalog.num_items, user_encoder="sasrec", item_encoder="image", dim=16,
                                  max_len=8, encoder_args={"num_layers": 1, "num_heads": 2, "dropout": 0.0},
                                  item_encoder_args={**args, "trainable_blocks": 1,
                                                     "cache_frozen": mode == "distinct+cache"})
    model.attach_content(model.item_encoder.build_content_store(catalog, cache_dir=tmp_path))
    model.encode_distinct = mode != "naive"
    return model.eval()  # dropout off, BatchNorm on its running statistics: a deterministic comparison


@pytest.mark.parametrize("name", list(TINY))
def test_first_step_loss_and_gradients_identical_across_modes(catalog, tmp_path, name):
    """naive / distinct / distinct+cache: same loss and gradients, for 3 optimiser steps (the cache is read
    after the top has been updated), while the cached mode runs the bottom only for items it has not seen."""
    modes = ("naive", "distinct", "distinct+cache")
    models = {m: make_model(catalog, tmp_path / m, TINY[name], m) for m in modes}
    ref = models["naive"].state_dict()
    for m in modes[1:]:
        for key, value in models[m].state_dict().items():
            assert torch.equal(value, ref[key]), key  # same init
    cached = models["distinct+cache"].item_encoder
    bottom = count_bottom(cached)
    objective = create_objective("inbatch", torch.ones(catalog.num_items + 1), num_negatives=1)
    optimizers = {m: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
                  for m, model in models.items()}
    seen: set[int] = set()
    for step in range(3):
        batch = batch_with_repeats(catalog, seed=step)
        results = {}
        bottom.clear()
        for m, model in models.items():
            model.zero_grad(set_to_none=True)
            loss = model(batch["items"], batch["targets"], objective)
            loss.backward()
            results[m] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                          if p.grad is not None})
        loss_n, grads_n = results["naive"]
        for m in modes[1:]:
            loss_m, grads_m = results[m]
            assert torch.allclose(loss_n, loss_m, atol=ATOL), (m, loss_n.item(), loss_m.item())
            assert grads_m.keys() == grads_n.keys(), m
            for key, g in grads_n.items():
                assert torch.allclose(g, grads_m[key], atol=ATOL), f"{m} {key}"
        items = set(torch.cat([batch["items"].reshape(-1), batch["targets"].reshape(-1)]).tolist()) - {0}
        assert sum(bottom) == len(items - seen)  # the bottom ran only for the items not cached yet
        seen |= items
        assert cached.frozen_cache("bottom").num_filled == len(seen)
        for opt in optimizers.values():
            opt.step()
    assert sum(bottom) < len(items)  # the last step reused cached items


@pytest.mark.parametrize("name", list(TINY))
def test_gradients_reach_only_the_top_blocks(catalog, tmp_path, name):
    enc = encoder(catalog, tmp_path, cache_frozen=True, **TINY[name])
    top = len(enc.blocks) - 1
    enc.train()
    enc(torch.arange(0, 12)).pow(2).sum().backward()
    with_grad = {n for n, p in enc.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    after = ("backbone.norm.",) if name == "tiny-vit" else ("backbone.conv_head.", "backbone.bn2.")
    allowed = (f"backbone.blocks.{top}.", *after, "projection.")
    assert with_grad and all(n.startswith(allowed) for n in with_grad), sorted(with_grad)
    assert any(n.startswith(f"backbone.blocks.{top}.") for n in with_grad)
    assert {n for n, p in enc.named_parameters() if p.requires_grad} >= with_grad
    rows = enc.frozen_cache("bottom").values
    assert rows is not None and not rows.requires_grad


def test_a_cache_is_never_used_by_another_encoder(catalog, tmp_path):
    """Persisted caches are shared only by an encoder with the same config, frozen weights and content; the
    in-memory cache starts over after new weights (load_state_dict or an in-place edit of a frozen tensor)."""
    items = torch.arange(1, catalog.num_items + 1)
    first = encoder(catalog, tmp_path, seed=0, cache_frozen=True).eval()
    calls = count_bottom(first)
    with torch.no_grad():
        out = first(items)
    cache = first.frozen_cache("bottom")
    assert sum(calls) == catalog.num_items and cache.path is not None and cache.path.is_file()

    # the same config and weights in another encoder: read from disk, the bottom never runs, same output
    same = encoder(catalog, tmp_path, seed=0, cache_frozen=True).eval()
    same_calls = count_bottom(same)
    with torch.no_grad():
        torch.testing.assert_close(same(items), out, rtol=0, atol=0)
    assert same_calls == [] and same.frozen_cache("bottom").loaded

    # other frozen weights, another resolution, more trainable blocks, other content: never that file
    ref_other = encoder(catalog, tmp_path / "ref", seed=1).eval()
    others = {"weights": encoder(catalog, tmp_path, seed=1, cache_frozen=True),
              "image_size": encoder(catalog, tmp_path, seed=0, cache_frozen=True, image_size=16),
              "trainable_blocks": encoder(catalog, tmp_path, seed=0, cache_frozen=True, trainable_blocks=2)}
    cat = copy.copy(catalog)
    cat.image = list(catalog.image)
    cat.image[1], cat.image[2] = catalog.image[2], catalog.image[1]
    swapped = encoder(catalog, tmp_path, seed=0, cache_frozen=True)
    swapped.set_content(swapped.build_content_store(cat, cache_dir=tmp_path))
    others["content"] = swapped
    for why, enc in others.items():
        enc.eval()
        calls = count_bottom(enc)
        with torch.no_grad():
            got = enc(items)
        assert not enc.frozen_cache("bottom").loaded and sum(calls) == catalog.num_items, why
        assert enc.frozen_cache("bottom").path != cache.path, why
    with torch.no_grad():
        torch.testing.assert_close(others["weights"](items), ref_other(items))

    # in memory: an in-place edit of a frozen weight, then new weights through load_state_dict
    frozen = first.backbone.patch_embed.proj.weight
    assert not frozen.requires_grad
    with torch.no_grad():
        frozen.add_(0.5)
        plain = copy.deepcopy(first)
        plain.cache_frozen = False
        torch.testing.assert_close(first(items[:5]), plain(items[:5]))
        assert not torch.allclose(first(items[:5]), out[:5])
    assert first.frozen_cache("bottom").num_filled == 5  # started over
    first.load_state_dict(ref_other.state_dict())
    assert first.frozen_cache("bottom").values is None
    with torch.no_grad():
        torch.testing.assert_close(first(items[:5]), ref_other(items[:5]))


def test_a_model_that_does_not_split_is_a_clear_error(catalog, tmp_path, monkeypatch):
    enc = encoder(catalog, tmp_path, cache_frozen=True, **TINY["efficientnet"])
    monkeypatch.setattr(image_module, "layers_after_blocks", lambda model: [])  # forget conv_head + bn2
    with pytest.raises(ConfigError, match="does not split"):
        enc(torch.arange(1, 4))


def test_bad_images_follow_on_bad_through_the_cache(catalog, tmp_path):
    cat = copy.copy(catalog)
    cat.image = list(catalog.image)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cat.image[2] = str(tmp_path / "broken.png")
    enc = encoder(catalog, tmp_path, cache_frozen=True).eval()
    enc.set_content(enc.build_content_store(cat, on_bad="fail", cache_dir=tmp_path))
    with pytest.raises(DataError, match=rf"{cat.ids.ids[2]}.*broken.png"):
        enc(torch.tensor([1, 2, 3]))
    store = enc.build_content_store(cat, on_bad="placeholder", cache_dir=tmp_path)
    enc.set_content(store)
    with torch.no_grad():
        enc(torch.tensor([1, 2, 3]))
        enc(torch.tensor([2, 4]))
    assert store.problems == [(cat.ids.ids[2], store.problems[0][1])] and "broken.png" in store.problems[0][1]
    blank = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.frozen_cache("bottom").values[2:3], enc.run_bottom(blank))


def test_image_size_sets_the_resolution(catalog, tmp_path):
    vit = encoder(catalog, tmp_path, model="tiny-vit", image_size=16)
    assert vit.data_config["input_size"] == [3, 16, 16] and tuple(vit.backbone.patch_embed.img_size) == (16, 16)
    assert vit.content.image_inputs(torch.tensor([1])).shape == (1, 3, 16, 16)
    cnn = encoder(catalog, tmp_path, **TINY["efficientnet"])
    assert cnn.data_config["input_size"] == [3, 32, 32] and cnn(torch.tensor([1, 2])).shape == (2, 8)
    assert ImageItemEncoder(4, 8, model="efficientnet-lite0-offline").data_config["input_size"] == [3, 224, 224]
    with pytest.raises(ConfigError, match="image_size"):
        ImageItemEncoder(4, 8, image_size=-1)
    cfg = load_config(None, ["model.item_encoder=image", "model.image_trainable_blocks=1", "model.cache_frozen=true",
                             "model.image_size=16"])
    model = build_model(cfg.model, catalog.num_items, 8)
    assert model.item_encoder.caches_bottom and model.item_encoder.data_config["input_size"] == [3, 16, 16]
    assert model.item_encoder.config_kwargs()["image_size"] == 16


def test_store_decodes_each_image_once(catalog, monkeypatch):
    """Preprocessed pixels are kept (an LRU of `image_cache_size` items): a second epoch decodes nothing."""
    import transrec.data.content as content

    opened = []
    real_open = content.Image.open
    monkeypatch.setattr(content.Image, "open", lambda path: opened.append(path) or real_open(path))
    store = ContentStore(catalog, image_transform=ImageItemEncoder(catalog.num_items, 8).transform)
    items = torch.arange(1, catalog.num_items + 1)
    for _ in range(2):
        store.image_inputs(items)
    assert len(opened) == catalog.num_items
