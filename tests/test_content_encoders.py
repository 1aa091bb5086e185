"""Content pipeline and content item encoders (text / image / mixture), with tiny random models.

Two tests load the real offline weights (MiniLM, EfficientNet-Lite0) and check a property that
only pretrained weights have.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest
import torch

from transrec.data.content import ID, IMAGE, PAD, TEXT, ContentStore
from transrec.data.io import load_dataset_folder
from transrec.data.synthetic import WorldConfig, generate_world
from transrec.errors import ConfigError, DataError
from transrec.models.item_encoders import presets
from transrec.models.item_encoders.image import ImageItemEncoder, load_by_position
from transrec.models.item_encoders.mixture import MixtureItemEncoder
from transrec.models.item_encoders.text import TextItemEncoder
from transrec.registry import ITEM_ENCODERS

DIM = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("content_world")
    return generate_world(out, WorldConfig(num_users=30, items_per_domain=40, num_topics=4, max_len=12),
                          overwrite=True)


@pytest.fixture(scope="module")
def catalog(world):
    return load_dataset_folder(world).items


def _copy_catalog(catalog):
    cat = copy.copy(catalog)
    for name in ("modality", "text", "image", "domain"):
        setattr(cat, name, list(getattr(catalog, name)))
    return cat


def _first(catalog, modality: str) -> int:
    return next(i for i, m in enumerate(catalog.modality) if m == modality)


class CountingTokenizer:
    """Delegates to a tokenizer and counts tokenisation calls."""

    def __init__(self, tok):
        self.tok, self.calls, self.name_or_path = tok, 0, tok.name_or_path

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.tok)


# ------------------------------------------------------------------------------ content store


def test_store_tokenises_once_and_reads_the_cache(catalog, tmp_path):
    tok = CountingTokenizer(TextItemEncoder(catalog.num_items, DIM).tokenizer)
    first = ContentStore(catalog, tokenizer=tok, text_max_length=16, cache_dir=tmp_path)
    assert tok.calls > 0 and not first.tokenized_from_cache
    assert first.input_ids.shape == first.attention_mask.shape == (catalog.num_items + 1, 16)
    assert first.input_ids.dtype == torch.long
    tok.calls = 0
    second = ContentStore(catalog, tokenizer=tok, text_max_length=16, cache_dir=tmp_path)
    assert tok.calls == 0 and second.tokenized_from_cache
    assert torch.equal(first.input_ids, second.input_ids) and torch.equal(first.attention_mask, second.attention_mask)
    third = ContentStore(catalog, tokenizer=tok, text_max_length=12, cache_dir=tmp_path)  # new key: re-tokenised
    assert tok.calls > 0 and not third.tokenized_from_cache
    expected = tok.tok(catalog.text[3], padding="max_length", truncation=True, max_length=16)["input_ids"]
    assert first.input_ids[3].tolist() == expected
    codes = {"text": TEXT, "image": IMAGE, "id": ID, "pad": PAD}
    assert first.modality.tolist() == [codes[m] for m in catalog.modality]
    assert first.num_items == catalog.num_items


def test_empty_text_fails_or_is_counted(catalog, tmp_path):
    cat = _copy_catalog(catalog)
    bad = _first(cat, "text")
    cat.text[bad] = "   "
    tok = TextItemEncoder(cat.num_items, DIM).tokenizer
    with pytest.raises(DataError, match=cat.ids.ids[bad]):
        ContentStore(cat, tokenizer=tok, cache_dir=tmp_path)
    store = ContentStore(cat, tokenizer=tok, on_bad="placeholder", cache_dir=tmp_path)
    assert store.problems == [(cat.ids.ids[bad], "empty or missing text")]
    empty = tok("", padding="max_length", truncation=True, max_length=32)["input_ids"]
    assert store.input_ids[bad].tolist() == empty

    # an image item without text is only a problem once an encoder asks for its text
    img = _first(cat, "image")
    cat.text[img] = None
    store = ContentStore(cat, tokenizer=tok, on_bad="placeholder", cache_dir=tmp_path)
    assert len(store.problems) == 1
    store.text_inputs(torch.tensor([img, img]))
    assert store.problems[-1] == (cat.ids.ids[img], "empty or missing text") and len(store.problems) == 2
    strict = ContentStore(_with_text(cat, bad), tokenizer=tok, cache_dir=tmp_path)
    with pytest.raises(DataError, match=cat.ids.ids[img]):
        strict.text_inputs(torch.tensor([img]))


def _with_text(cat, index):
    fixed = _copy_catalog(cat)
    fixed.text[index] = "fixed text"
    return fixed


def test_bad_images_fail_or_become_zero_placeholders(catalog, tmp_path):
    cat = _copy_catalog(catalog)
    corrupt, missing = 1, 2
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    cat.image[corrupt] = str(tmp_path / "broken.png")
    cat.image[missing] = "images/does_not_exist.png"
    transform = ImageItemEncoder(cat.num_items, DIM).transform
    store = ContentStore(cat, image_transform=transform)
    good = store.image_inputs(torch.tensor([0, 3, 4]))
    assert good.shape == (3, 3, 32, 32) and good[0].abs().sum() == 0 and good[1].abs().sum() > 0
    for index, path in ((corrupt, "broken.png"), (missing, "does_not_exist.png")):
        with pytest.raises(DataError, match=rf"{cat.ids.ids[index]}.*{path}"):
            store.image_inputs(torch.tensor([3, index]))
    lenient = ContentStore(cat, image_transform=transform, on_bad="placeholder")
    out = lenient.image_inputs(torch.tensor([corrupt, 3, missing]))
    assert out.shape == (3, 3, 32, 32)
    assert out[0].abs().sum() == 0 and out[2].abs().sum() == 0 and out[1].abs().sum() > 0
    lenient.image_inputs(torch.tensor([corrupt, missing]))
    assert [p[0] for p in lenient.problems] == [cat.ids.ids[corrupt], cat.ids.ids[missing]]


def test_images_load_lazily_and_are_cached(catalog, monkeypatch):
    import transrec.data.content as content

    opened = []
    real_open = content.Image.open
    monkeypatch.setattr(content.Image, "open", lambda path: opened.append(path) or real_open(path))
    store = ContentStore(catalog, image_transform=ImageItemEncoder(catalog.num_items, DIM).transform)
    assert opened == []
    first = store.image_inputs(torch.tensor([5, 6]))
    assert len(opened) == 2
    again = store.image_inputs(torch.tensor([6, 5]))
    assert len(opened) == 2 and torch.equal(first, again.flip(0))


# -------------------------------------------------------------------------------- text encoder


def _store(encoder, catalog, tmp_path):
    store = encoder.build_content_store(catalog, cache_dir=tmp_path)
    encoder.set_content(store)
    return store


def _names(module, trainable: bool) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad == trainable}


@pytest.mark.parametrize("blocks", [-1, 0, 1, 2])
def test_text_trainable_blocks_freeze_exactly_the_bottom(catalog, tmp_path, blocks):
    enc = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=blocks)
    trainable = _names(enc, True)
    layer_of = {n: int(n.split(".")[3]) for n, _ in enc.named_parameters() if n.startswith("backbone.encoder.layer.")}
    for name, _ in enc.named_parameters():
        if name.startswith("projection."):
            expected = True
        elif name.startswith("backbone.embeddings."):
            expected = blocks == -1
        else:
            expected = blocks == -1 or layer_of[name] >= 2 - blocks
        assert (name in trainable) == expected, name
    assert not any(n.startswith("backbone.pooler") for n in trainable | _names(enc, False))

    _store(enc, catalog, tmp_path)
    enc.train()
    enc(torch.arange(0, 20)).pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    if blocks >= 0:
        assert not enc.backbone.embeddings.training  # frozen parts run in eval mode (no dropout)


def test_text_frozen_bottom_runs_without_autograd(catalog, tmp_path):
    enc = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=1)
    store = _store(enc, catalog, tmp_path)
    inputs = store.text_inputs(torch.arange(1, 6))
    bottom = enc.run_bottom(inputs["input_ids"], inputs["attention_mask"])
    assert torch.is_grad_enabled() and not bottom.requires_grad and bottom.grad_fn is None
    assert enc.run_top(bottom, inputs["attention_mask"]).requires_grad
    everything = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=-1)
    everything.set_content(store)
    assert everything.run_bottom(inputs["input_ids"], inputs["attention_mask"]).requires_grad


@pytest.mark.parametrize("blocks", [0, 1])
def test_frozen_bottom_cache_matches_the_uncached_path(catalog, tmp_path, blocks):
    torch.manual_seed(0)
    plain = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=blocks, pooling="mean")
    cached = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=blocks, pooling="mean", cache_frozen=True)
    cached.load_state_dict(plain.state_dict())
    _store(plain, catalog, tmp_path)
    _store(cached, catalog, tmp_path)
    plain.eval(), cached.eval()
    items = torch.tensor([0, 7, 3, 12, 40])
    calls = []
    real = cached.run_bottom
    cached.run_bottom = lambda ids, mask: calls.append(len(ids)) or real(ids, mask)
    first = cached(items)
    second = cached(torch.tensor([3, 7, 41]))  # two cached, one new
    assert calls == [4, 1]
    torch.testing.assert_close(first, plain(items), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second, plain(torch.tensor([3, 7, 41])), rtol=1e-5, atol=1e-6)
    # gradients of the trainable part agree too
    plain(items).sum().backward()
    cached(items).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), cached.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
    cached.set_content(cached.content)  # new content invalidates the cache
    assert cached.frozen_cache("bottom").values is None and cached.frozen_cache("pooled").values is None


def test_length_buckets_give_the_unbucketed_features_and_gradients(catalog, tmp_path):
    """Many items at once are encoded in buckets sorted by text length, each cut to its longest text;
    values and gradients are those of one padded batch, in the caller's order."""
    torch.manual_seed(0)
    enc = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=1, pooling="mean")
    _store(enc, catalog, tmp_path)
    enc.eval()
    items = torch.randperm(catalog.num_items)[:40] + 1
    lengths = enc.content.text_inputs(items)["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1  # texts of several lengths, or the test shows nothing
    enc.length_bucket = 7
    calls = []
    real = enc._pooled_bucket
    enc._pooled_bucket = lambda rows: calls.append(rows) or real(rows)
    bucketed = enc.content_features(items)
    bucketed.pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
    assert any(n.startswith("backbone.encoder.layer.") for n in grads)  # the top block's
    enc.zero_grad()
    assert len(calls) == 6 and sorted(torch.cat(calls).tolist()) == sorted(items.tolist())
    bucket_lengths = [enc.content.text_inputs(rows)["attention_mask"].sum(1) for rows in calls]
    assert all(a.max() <= b.min() for a, b in zip(bucket_lengths, bucket_lengths[1:]))  # sorted by length
    enc.length_bucket = 10**6
    whole = enc.content_features(items)
    whole.pow(2).sum().backward()
    torch.testing.assert_close(bucketed, whole, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dict(enc.named_parameters())[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_residual_similarity_reuses_the_features_of_the_same_training_step(catalog, tmp_path):
    """With a trainable top block the residual's similarity features come from the pooled features the
    step already computed (same weights, same values), and are recomputed once a weight changes."""
    torch.manual_seed(0)
    enc = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=1, pooling="mean")
    _store(enc, catalog, tmp_path)
    enc.eval()  # no dropout: recomputed features must equal the reused ones
    enc.similarity_basis()
    calls = []
    real = enc.pooled_features
    enc.pooled_features = lambda rows: calls.append(len(rows)) or real(rows)
    items = torch.tensor([5, 2, 9, 30])
    enc(items)  # a training step's encoding (autograd on)
    reused = enc.similarity_features(torch.tensor([9, 0, 5]))
    assert calls == [4]
    enc._recent_features = None
    torch.testing.assert_close(reused, enc.similarity_features(torch.tensor([9, 0, 5])))
    assert calls == [4, 2]
    enc(items)
    enc.similarity_features(torch.tensor([9, 31]))  # 31 was not encoded in this step
    assert calls[-1] == 2  # recomputed, both
    with torch.no_grad():  # an optimizer step: the remembered features are stale
        enc.layers[-1].output.dense.weight.add_(0.5)
    before = len(calls)
    moved = enc.similarity_features(torch.tensor([9, 0, 5]))
    assert len(calls) == before + 1 and not torch.allclose(moved, reused)
    with torch.no_grad():  # evaluation encodes without remembering
        enc(items)
    assert enc._recent_features[2] != enc._weights_key()


def test_gradient_checkpointing_gives_the_same_result(catalog, tmp_path):
    torch.manual_seed(0)
    plain = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=2)
    ckpt = TextItemEncoder(catalog.num_items, DIM, trainable_blocks=2, gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    for enc in (plain, ckpt):
        _store(enc, catalog, tmp_path)
        enc.train()
        for m in enc.modules():  # dropout off, checkpointing on (it only acts in training mode)
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        enc(torch.arange(1, 9)).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_offline_uncached_hub_id_is_a_quick_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE") as err:
        TextItemEncoder(4, DIM, model="transrec-tests/no-such-model-anywhere")
    assert "transrec-tests/no-such-model-anywhere" in str(err.value)
    assert time.perf_counter() - start < 5
    with pytest.raises(ConfigError, match="trainable_blocks"):
        TextItemEncoder(4, DIM, trainable_blocks=3)
    with pytest.raises(ConfigError, match="unknown image encoder"):
        ImageItemEncoder(4, DIM, model="no_such_timm_model")


# ------------------------------------------------------------------------------- image encoder


def test_image_trainable_blocks_and_frozen_bottom(catalog):
    enc = ImageItemEncoder(catalog.num_items, DIM, trainable_blocks=1)
    store = enc.build_content_store(catalog)
    enc.set_content(store)
    expected = {n for n, _ in enc.named_parameters()
                if n.startswith(("backbone.blocks.1.", "backbone.norm.", "projection."))}
    assert _names(enc, True) == expected
    seen = {}
    enc.backbone.blocks[0].register_forward_hook(lambda m, a, out: seen.update(bottom=out.requires_grad))
    enc.backbone.blocks[1].register_forward_hook(lambda m, a, out: seen.update(top=out.requires_grad))
    enc.train()
    enc(torch.arange(0, 10)).pow(2).sum().backward()
    assert seen == {"bottom": False, "top": True}
    for name, p in enc.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    assert torch.is_grad_enabled()
    with torch.no_grad():  # evaluation stays without autograd, top included
        assert not enc(torch.arange(1, 4)).requires_grad

    frozen = ImageItemEncoder(catalog.num_items, DIM, trainable_blocks=0)
    assert _names(frozen, True) == {"projection.weight", "projection.bias", "projection.center"}
    full = ImageItemEncoder(catalog.num_items, DIM, trainable_blocks=-1)
    assert _names(full, False) == set()


def test_load_by_position_checks_shapes():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    good = {f"k{i}": torch.full_like(t, float(i)) for i, t in enumerate(net.state_dict().values())}
    load_by_position(net, {**good, "fc.w": torch.zeros(5)}, "test")
    assert torch.all(net[1].bias == 3)
    bad = dict(good, k1=torch.zeros(4))
    with pytest.raises(ConfigError, match="k1"):
        load_by_position(net, bad, "test")


# ----------------------------------------------------------------------------------- mixture


def _mixture(catalog, tmp_path, **kwargs):
    enc = MixtureItemEncoder(catalog.num_items, DIM, text={"trainable_blocks": 1}, image={"trainable_blocks": 1},
                             **kwargs)
    _store(enc, catalog, tmp_path)
    return enc.eval()


def test_mixture_routes_each_modality_in_one_call_and_scatters_back(catalog, tmp_path):
    cat = _copy_catalog(catalog)
    id_item = 9
    cat.modality[id_item] = "id"
    torch.manual_seed(0)
    enc = _mixture(cat, tmp_path)
    calls = {"text": [], "image": []}
    for name in calls:
        sub = getattr(enc, name)
        real = sub.forward
        sub.forward = lambda items, real=real, name=name: calls[name].append(items.tolist()) or real(items)
    items = torch.tensor([0, 5, 1, 2, 9, 33, 60, 17, 80])
    out = enc(items)
    assert len(calls["text"]) == 1 and len(calls["image"]) == 1
    assert all(cat.modality[i] == "text" for i in calls["text"][0])
    assert all(cat.modality[i] == "image" for i in calls["image"][0])
    assert sorted(calls["text"][0] + calls["image"][0]) == sorted(i for i in items.tolist() if i not in (0, id_item))
    one_by_one = torch.cat([enc(items[k: k + 1]) for k in range(len(items))])
    torch.testing.assert_close(out, one_by_one, rtol=1e-5, atol=1e-6)
    assert out[0].abs().sum() == 0 and out[4].abs().sum() == 0  # padding, ID-modality item
    for k, item in enumerate(items.tolist()):
        sub, code = {"text": (enc.text, TEXT), "image": (enc.image, IMAGE)}.get(cat.modality[item], (None, 0))
        if sub is not None:
            expected = sub(torch.tensor([item]))[0] + enc.modality_embedding.weight[code]
            torch.testing.assert_close(out[k], expected, rtol=1e-5, atol=1e-6)


def test_id_embedding_option(catalog, tmp_path):
    cat = _copy_catalog(catalog)
    cat.modality[9] = "id"
    enc = MixtureItemEncoder(cat.num_items, DIM, id_embedding=True)
    _store(enc, cat, tmp_path)
    enc.eval()
    out = enc(torch.tensor([0, 9, 1]))
    assert out[0].abs().sum() == 0
    torch.testing.assert_close(out[1], enc.id_embedding.weight[9])
    text = TextItemEncoder(cat.num_items, DIM, id_embedding=True)
    other = _copy_catalog(cat)
    other.ids = type(cat.ids)(cat.ids.to_list()[:10])
    for name in ("modality", "text", "image", "domain"):
        setattr(other, name, getattr(cat, name)[:11])
    with pytest.raises(ConfigError, match="id_embedding"):
        text.set_content(text.build_content_store(other, cache_dir=tmp_path))


@pytest.mark.parametrize("name", ["text", "image", "mixture"])
def test_all_items_and_config_kwargs(catalog, tmp_path, name):
    enc = ITEM_ENCODERS.create(name, num_items=catalog.num_items, dim=DIM)
    _store(enc, catalog, tmp_path)
    enc.eval()
    with torch.no_grad():
        table = enc.all_items(batch_size=32)
        assert table.shape == (catalog.num_items + 1, DIM)
        assert table[0].abs().sum() == 0 and table[1:].abs().sum(1).min() > 0
        torch.testing.assert_close(table[[3, 50]], enc(torch.tensor([3, 50])), rtol=1e-5, atol=1e-6)
    kwargs = json.loads(json.dumps(enc.config_kwargs()))  # JSON-serialisable
    assert "assets_dir" not in kwargs and "num_items" not in kwargs
    rebuilt = ITEM_ENCODERS.create(name, num_items=catalog.num_items, dim=DIM, **kwargs)
    rebuilt.load_state_dict(enc.state_dict(), strict=True)
    assert rebuilt.config_kwargs() == kwargs


def test_export_assets_rebuild_without_presets(catalog, tmp_path, monkeypatch):
    enc = _mixture(catalog, tmp_path / "cache")
    enc.export_assets(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "tokenizer").is_dir() and (tmp_path / "ckpt" / "image_preprocessing.json").is_file()
    kwargs = json.loads(json.dumps(enc.config_kwargs()))

    def no_preset_files():
        raise AssertionError("rebuilding from assets_dir must not read the preset's files")

    monkeypatch.setitem(presets.TEXT_PRESETS["tiny-bert"], "tokenizer", no_preset_files)
    rebuilt = MixtureItemEncoder(catalog.num_items, DIM, assets_dir=str(tmp_path / "ckpt"), **kwargs)
    rebuilt.load_state_dict(enc.state_dict(), strict=True)
    store = rebuilt.build_content_store(catalog, cache_dir=tmp_path / "cache2")
    assert torch.equal(store.input_ids, enc.content.input_ids)
    assert torch.equal(store.image_inputs(torch.tensor([1, 2])), enc.content.image_inputs(torch.tensor([1, 2])))
    assert rebuilt.image.data_config == enc.image.data_config
    rebuilt.set_content(store)
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(torch.arange(0, 12)), enc(torch.arange(0, 12)))


# --------------------------------------------------------------------- real offline weights


def test_minilm_preset_embeds_paraphrases_close(tmp_path):
    from transrec.data.schema import ItemCatalog

    texts = ["A man is playing a guitar.", "Someone plays the guitar.",
             "The stock market fell sharply today.", "A cat sleeps on the sofa."]
    cat = ItemCatalog.from_records([f"t{i}" for i in range(4)], ["text"] * 4, texts)
    enc = TextItemEncoder(4, DIM, model="minilm-l6-offline", trainable_blocks=0)
    assert enc.pooling == "mean" and enc.config_kwargs()["backbone_config"]["hidden_size"] == 384
    store = _store(enc, cat, tmp_path)

    def sentence_vectors():
        inputs = store.text_inputs(torch.arange(1, 5))
        with torch.no_grad():
            hidden = enc.run_bottom(inputs["input_ids"], inputs["attention_mask"])
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        vec = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        return vec @ vec.T

    enc.eval()
    random_sim = sentence_vectors()
    assert enc.load_pretrained_weights() is True
    sim = sentence_vectors()
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    assert not torch.allclose(sim, random_sim)
    assert TextItemEncoder(4, DIM).load_pretrained_weights() is False  # tiny-bert: random init


def test_efficientnet_lite0_preset_loads_the_packaged_weights():
    enc = ImageItemEncoder(4, DIM, model="efficientnet-lite0-offline", trainable_blocks=1)
    assert enc.pretrained and enc.data_config["input_size"] == [3, 224, 224]
    before = {k: v.clone() for k, v in enc.backbone.state_dict().items()}
    assert enc.load_pretrained_weights() is True
    source = list(torch.load(presets.efficientnet_lite0_file(), map_location="cpu", weights_only=True).values())
    after = enc.backbone.state_dict()
    assert len(source) >= len(after)
    for (name, tensor), expected in zip(after.items(), source):
        assert torch.equal(tensor, expected.to(tensor.dtype)), name  # every tensor assigned, in order
    changed = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > 0.9 * sum(v.is_floating_point() for v in after.values())
    enc.eval()
    image = torch.zeros(1, 3, 224, 224)
    image[:, 0, 50:150, 60:160] = 1.0
    with torch.no_grad():
        a, b = enc.features(image), enc.features(image)
    assert a.shape == (1, 1280) and torch.isfinite(a).all() and torch.equal(a, b)
    assert a.abs().sum() > 0


def test_env_is_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


@pytest.mark.parametrize("kind", ["text", "image"])
def test_frozen_encoder_caches_the_pooled_vector(catalog, tmp_path, kind):
    """trainable_blocks=0 + cache_frozen: the backbone runs once per item, then a step is a gather + projection."""
    torch.manual_seed(0)
    make = (lambda cache: TextItemEncoder(catalog.num_items, DIM, trainable_blocks=0, pooling="mean",
                                          cache_frozen=cache)) if kind == "text" else \
        (lambda cache: ImageItemEncoder(catalog.num_items, DIM, trainable_blocks=0, cache_frozen=cache))
    plain, cached = make(False), make(True)
    cached.load_state_dict(plain.state_dict())
    for enc in (plain, cached):
        _store(enc, catalog, tmp_path)
    modality = TEXT if kind == "text" else IMAGE
    ours = (cached.content.modality == modality).nonzero(as_tuple=True)[0][:6]
    calls = []
    real = cached.pooled_features
    cached.pooled_features = lambda items: calls.append(len(items)) or real(items)
    first = cached(ours[:4])
    second = cached(ours[2:6])  # two cached, two new
    assert calls == [4, 2] and cached.caches_features and not plain.caches_features
    torch.testing.assert_close(first, plain(ours[:4]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second, plain(ours[2:6]), rtol=1e-5, atol=1e-6)
    cached(ours[2:6]).sum().backward()  # the projection still trains
    assert cached.projection.weight.grad is not None and cached.projection.weight.grad.abs().sum() > 0
    cached.load_state_dict(plain.state_dict())  # new weights: the cache is dropped
    assert cached.frozen_cache("pooled").values is None


def test_image_cache_needs_a_frozen_part():
    with pytest.raises(ConfigError, match="image_trainable_blocks >= 0"):
        ImageItemEncoder(10, DIM, trainable_blocks=-1, cache_frozen=True)


def test_principal_basis_keeps_its_width_with_few_items():
    from transrec.models.item_encoders.base import principal_basis

    feats = torch.randn(5, 12)
    mean, basis = principal_basis(feats, 8)
    assert basis.shape == (12, 8) and torch.equal(basis[:, 5:], torch.zeros(12, 3))
    torch.testing.assert_close(basis[:, :5].T @ basis[:, :5], torch.eye(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(mean, feats.mean(0))
