"""The content (TransRec-style) recommender end to end: train on one domain, save, reload offline,
and transfer to a domain of unseen items (zero-shot, fine-tune, scratch)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_overrides

from transrec.cli import main
from transrec.config import load_config
from transrec.errors import ConfigError
from transrec.hub import load_model
from transrec.training.trainer import train
from transrec.training.transfer import transfer

CONTENT = {"model.item_encoder": "mixture", "model.text_encoder": "tiny-bert", "model.image_encoder": "tiny-vit",
           "model.text_trainable_blocks": 1, "model.image_trainable_blocks": 1, "train.objective": "inbatch",
           "train.item_encoder_lr": 0.001}


def content_overrides(world, domain: str, **extra) -> list[str]:
    return tiny_overrides(world, **{"data.domain": domain, **CONTENT, **extra})


@pytest.fixture(scope="module")
def source_run(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("source")
    result = train(load_config(None, content_overrides(tiny_world, "A", **{"train.epochs": 3})), out)
    return out, result


def test_content_model_trains_and_saves_assets(source_run):
    out, result = source_run
    assert 0 <= result.metrics["test"]["NDCG@10"] <= 1
    model_dir = out / "model"
    assert (model_dir / "tokenizer").is_dir() and (model_dir / "image_preprocessing.json").is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["item_encoder"] == "mixture" and "backbone_config" in config["item_encoder_args"]["text"]
    assert "assets_dir" not in json.dumps(config)
    # frozen bottoms: only the top block of each backbone (plus heads) trains
    run = result.metrics["run"]
    assert 0 < run["trainable_params"] < run["total_params"]


def test_content_checkpoint_reloads_exactly_offline(source_run, tiny_world):
    out, _ = source_run
    from transrec.data.io import load_dataset_folder
    from transrec.data.pipeline import restrict_to_domain

    items = restrict_to_domain(load_dataset_folder(tiny_world), "A").items
    a, b = load_model(out / "model"), load_model(out / "model")
    for m in (a, b):
        m.attach_content(m.item_encoder.build_content_store(items))
        m.eval()
    assert torch.equal(a.all_item_vectors(), b.all_item_vectors())
    batch = {"items": torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])}
    assert torch.equal(a.encode_users(batch), b.encode_users(batch))


def test_zero_shot_transfer_to_new_items(source_run, tiny_world, tmp_path, capsys):
    out, _ = source_run
    code = main(["transfer", "--model", str(out / "model"), "--mode", "zero_shot", "--output-dir",
                 str(tmp_path / "zs"), *content_overrides(tiny_world, "B")])
    assert code == 0
    metrics = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert metrics["run"]["mode"] == "zero_shot"
    assert set(metrics) >= {"valid", "test", "popularity"} and "NDCG@10" in metrics["popularity"]["test"]
    assert "zero_shot (test)" in capsys.readouterr().out
    # the transferred model ranks domain-B items, which the source model never saw
    assert metrics["run"]["items"] == len(json.loads((tmp_path / "zs" / "model" / "item_ids.json").read_text()))


def test_zero_shot_to_a_movielens_csv_release(source_run, tmp_path):
    """The documented path to a real new catalogue: configs/movielens_csv_target.yaml + data.path, a GroupLens
    CSV release (ratings.csv + movies.csv) ranked zero-shot by a content model trained elsewhere."""
    from pathlib import Path

    from transrec.errors import DataError

    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    titles = ["Toy Story (1995)", '"Usual Suspects, The (1995)"', "Heat (1995)", "Amelie (2001)",
              "Up (2009)", "Inception (2010)", "Alien (1979)", "Seven (a.k.a. Se7en) (1995)"]
    genres = ["Animation|Children|Comedy", "Crime|Thriller", "Action|Crime", "Comedy|Romance",
              "Adventure|Animation", "Action|Sci-Fi", "Horror|Sci-Fi", "(no genres listed)"]
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{i + 1},{t},{g}\n" for i, (t, g) in enumerate(zip(titles, genres))))
    ratings = [f"{u},{(u + k) % 8 + 1},4.0,{1000 * u + k}" for u in range(1, 7) for k in range(5)]
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(ratings) + "\n")
    config = str(Path(__file__).resolve().parents[1] / "configs" / "movielens_csv_target.yaml")
    metrics = transfer(source_run[0] / "model", load_config(config, [f"data.path={folder}"]), "zero_shot",
                       tmp_path / "zs")
    assert metrics["run"]["dataset"] == "ml-latest-small" and metrics["run"]["items"] == 8
    assert metrics["run"]["users"] == 6 and 0 <= metrics["test"]["NDCG@10"] <= 1
    assert 0 <= metrics["zero_shot_with_popularity"]["test"]["NDCG@10"] <= 1
    with pytest.raises(DataError, match="ml-latest-small folder"):  # the config's path: null
        transfer(source_run[0] / "model", load_config(config), "zero_shot", tmp_path / "no_path")


@pytest.mark.parametrize("mode", ["fine_tune", "scratch"])
def test_trained_transfer_modes(mode, source_run, tiny_world, tmp_path):
    out, _ = source_run
    cfg = load_config(None, content_overrides(tiny_world, "B", **{"train.epochs": 2}))
    metrics = transfer(out / "model", cfg, mode, tmp_path)
    assert metrics["run"]["mode"] == mode and "popularity" in metrics
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_fine_tune_starts_from_the_source_weights(source_run, tiny_world, tmp_path):
    """One epoch of fine-tuning with lr≈0 must keep the source model's user encoder."""
    out, _ = source_run
    cfg = load_config(None, content_overrides(tiny_world, "B", **{"train.epochs": 1, "train.lr": 1e-12,
                                                                  "train.item_encoder_lr": 1e-12}))
    transfer(out / "model", cfg, "fine_tune", tmp_path)
    before, after = load_model(out / "model"), load_model(tmp_path / "model")
    for (name, p), q in zip(before.user_encoder.state_dict().items(), after.user_encoder.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_id_models_cannot_transfer_zero_shot(tiny_world, tmp_path):
    train(load_config(None, tiny_overrides(tiny_world, **{"data.domain": "A", "train.epochs": 1})), tmp_path / "id")
    with pytest.raises(ConfigError, match="ID model"):
        transfer(tmp_path / "id" / "model", load_config(None, tiny_overrides(tiny_world, **{"data.domain": "B"})),
                 "zero_shot", tmp_path / "zs")


def test_bidirectional_user_encoder_trains(tiny_world, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_world, **{"model.name": "bidirectional", "train.epochs": 4}))
    result = train(cfg, tmp_path)
    assert result.metrics["test"]["NDCG@10"] > result.metrics["popularity"]["test"]["NDCG@10"]


def test_fit_centres_removes_the_shared_component(tiny_world):
    """After `fit_centres`, each projection's outputs average to its bias over the catalogue."""
    from transrec.data.io import load_dataset_folder
    from transrec.models.item_encoders.base import CenteredLinear, fit_centres
    from transrec.models.item_encoders.text import TextItemEncoder

    items = load_dataset_folder(tiny_world).items
    enc = TextItemEncoder(items.num_items, 8, trainable_blocks=0)
    enc.set_content(enc.build_content_store(items, on_bad="placeholder"))
    enc.eval()
    with torch.no_grad():
        before = enc.all_items()[1:].mean(0) - enc.projection.bias
        fit_centres(enc)
        after = enc.all_items()[1:].mean(0) - enc.projection.bias
    assert isinstance(enc.projection, CenteredLinear)
    assert after.abs().max() < 1e-4 < before.abs().max()


def test_id_plus_content_fine_tuning_starts_at_the_content_model(source_run, tiny_world, tmp_path):
    """`model.id_embedding=true` on fine-tuning gives B's items zero-initialised ID vectors: the
    model starts exactly at the content-only one, the IDs train at train.lr, and it saves/loads."""
    from transrec.data.pipeline import prepare_data
    from transrec.training.optim import build_optimizer

    out, _ = source_run
    cfg = load_config(None, content_overrides(tiny_world, "B", **{"train.epochs": 1, "model.id_embedding": "true",
                                                                  "train.select_initial": "false"}))
    model = load_model(out / "model").eval()  # no dropout: compare the same function
    items = prepare_data(cfg.data).dataset.items
    model.attach_content(model.item_encoder.build_content_store(items))
    content_only = model.all_item_vectors().detach().clone()
    model.add_item_ids()
    assert model.item_encoder.id_embedding.num_embeddings == items.num_items + 1
    torch.testing.assert_close(model.all_item_vectors(), content_only)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, item_encoder_lr=1e-5)
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert rates[id(model.item_encoder.id_embedding.weight)] == 1e-3
    assert rates[id(model.item_encoder.text.projection.weight)] == 1e-5

    metrics = transfer(out / "model", cfg, "fine_tune", tmp_path / "ft")
    assert metrics["run"]["id_embedding_added"] is True
    tuned = load_model(tmp_path / "ft" / "model")
    assert tuned.item_encoder.id_embedding is not None and tuned.num_items == items.num_items
    assert tuned.item_encoder.id_embedding.weight.abs().sum() > 0  # the IDs trained


def test_cosine_scoring_with_content_residual_is_the_stated_score(tiny_world, tmp_path):
    """score = scale * cos(user state, item vector) + w * cos(centred features of the last item, of the
    candidate); the checkpoint round-trips and the trainer optimises it."""
    import torch.nn.functional as F

    from transrec.data.pipeline import prepare_data

    cfg = load_config(None, content_overrides(tiny_world, "A", **{
        "train.epochs": 1, "model.score": "cosine", "model.content_residual": "true",
        "model.text_trainable_blocks": 0, "model.image_trainable_blocks": 0, "model.cache_frozen": "true"}))
    result = train(cfg, tmp_path)
    model = load_model(tmp_path / "model").eval()
    items = prepare_data(cfg.data).dataset.items
    model.attach_content(model.item_encoder.build_content_store(items))
    batch = {"items": torch.tensor([[0, 0, 3, 9], [1, 2, 5, 20]])}
    with torch.no_grad():
        scores = model.encode_users(batch) @ model.all_item_vectors().T
        hidden = model.hidden_states(batch["items"])[:, -1]
        vectors = model.item_encoder.all_items()
        enc = model.item_encoder
        feats = enc.similarity_features(torch.arange(items.num_items + 1))
        expected = (model.log_scale.exp() * F.normalize(hidden, dim=-1) @ F.normalize(vectors, dim=-1).T
                    + model.residual_weight * feats[batch["items"][:, -1]] @ feats.T)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    # the residual features are centred per modality and unit norm; text and image items never match
    text, image = (enc._store().modality == 1), (enc._store().modality == 2)
    assert torch.allclose(feats[1:].norm(dim=-1), torch.ones(items.num_items), atol=1e-5)
    assert (feats[text] @ feats[image].T).abs().max() == 0
    assert result.metrics["test"]["NDCG@10"] >= 0


def test_content_only_zero_shot_reads_no_target_interaction(source_run, tiny_world):
    """Content-only zero-shot gets the target's catalogue and evaluation cases only: it runs with the
    training split and the item counts made unreadable, which the popularity mode needs (and fails)."""
    from transrec.data.pipeline import prepare_data
    from transrec.training.transfer import zero_shot_content_only, zero_shot_rankings

    out, _ = source_run
    cfg = load_config(None, content_overrides(tiny_world, "B"))
    data = prepare_data(cfg.data)
    reference = zero_shot_rankings(load_model(out / "model"), data, cfg)

    class Unreadable(list):
        def __getitem__(self, key):
            raise AssertionError("the target's training interactions were read")

        def __iter__(self):
            raise AssertionError("the target's training interactions were read")

    data.split.train = Unreadable(data.split.train)
    cases = {"valid": data.split.valid, "test": data.split.test}
    content_only = zero_shot_content_only(load_model(out / "model"), data.dataset.items, cases, cfg)
    assert content_only["test"] == reference["test"] and content_only["valid"] == reference["valid"]
    with pytest.raises(AssertionError, match="training interactions were read"):
        zero_shot_rankings(load_model(out / "model"), data, cfg)
    assert reference["zero_shot_with_popularity"]["test"]["NDCG@10"] >= 0


def test_zero_shot_with_popularity_holds_every_heuristic_term_and_keeps_the_best_weights(source_run, tiny_world):
    """The popularity mode fuses model + encoder cosine + log count + TF-IDF cosine: its validation value
    is the one its weights give (with the model's own terms as it chose them), no worse than the best
    (encoder, prior) pair without TF-IDF for the calibrated model, and no prior weight beats the chosen
    one with the others fixed. The model keeps its calibrated terms afterwards."""
    from transrec.data.pipeline import prepare_data
    from transrec.evaluation.evaluator import evaluate
    from transrec.models.heuristics import PRIOR_GRID, ContentKNN, FusedScores, encoder_features, tfidf_features
    from transrec.models.recommender import PopularityModel, lexical_texts
    from transrec.training.transfer import ENCODER_GRID, TFIDF_GRID, model_variants, zero_shot_rankings

    out, _ = source_run
    cfg = load_config(None, content_overrides(tiny_world, "B"))
    data = prepare_data(cfg.data)
    model = load_model(out / "model")
    model.set_transfer_lexical_weight(2.0)  # two calibrated terms, so four variants are tried
    model.set_transfer_content_prior_weight(0.5)
    assert model_variants(model) == [(2.0, 0.5), (2.0, 0.0), (0.0, 0.5), (0.0, 0.0)]
    result = zero_shot_rankings(model, data, cfg)["zero_shot_with_popularity"]
    assert (model.transfer_lexical_weight, model.transfer_content_prior_weight) == (2.0, 0.5)
    assert (result["model_lexical_weight"], result["model_content_prior_weight"]) in model_variants(model)
    max_len = cfg.data.max_len
    parts = [model, ContentKNN(encoder_features(model.item_encoder), "last", max_len),
             PopularityModel(data.num_items, max_len).fit(data.split.train),
             ContentKNN(tfidf_features(lexical_texts(data.dataset.items)), "last", max_len)]
    chosen = [1.0, result["encoder_similarity_weight"], result["prior_weight"], result["lexical_weight"]]
    assert chosen[1] in ENCODER_GRID and chosen[2] in PRIOR_GRID and chosen[3] in TFIDF_GRID

    def valid(weights, variant=(result["model_lexical_weight"], result["model_content_prior_weight"])):
        model.set_transfer_lexical_weight(variant[0])  # brute force, no memo
        model.set_transfer_content_prior_weight(variant[1])
        with model.zero_shot_scoring():
            return evaluate(FusedScores(parts, weights), data.split.valid, cfg.eval, max_len)["NDCG@10"]

    assert valid(chosen) == pytest.approx(result["valid"]["NDCG@10"], abs=1e-9)
    best_without_tfidf = max(valid([1.0, a, w, 0.0], (2.0, 0.5)) for a in ENCODER_GRID for w in PRIOR_GRID)
    assert result["valid"]["NDCG@10"] >= best_without_tfidf - 1e-9
    # the last pass: no prior weight beats the chosen one with the other weights fixed
    assert all(valid([1.0, chosen[1], w, chosen[3]]) <= result["valid"]["NDCG@10"] + 1e-9 for w in PRIOR_GRID)


def test_item_holdout_splits_the_catalogue_in_two_disjoint_sides(tiny_world):
    from transrec.data.io import load_dataset_folder
    from transrec.data.pipeline import hold_out_items

    full = load_dataset_folder(tiny_world)
    kept, held = (hold_out_items(full, 0.3, side, seed=1) for side in ("train", "heldout"))
    kept_ids, held_ids = (set(d.items.ids.ids) - {"[PAD]"} for d in (kept, held))
    assert not kept_ids & held_ids and kept_ids | held_ids == set(full.items.ids.ids) - {"[PAD]"}
    assert len(held_ids) == round(0.3 * full.items.num_items)
    assert len(kept.interactions) + len(held.interactions) == len(full.interactions)
    again = hold_out_items(full, 0.3, "heldout", seed=1)
    assert set(again.items.ids.ids) - {"[PAD]"} == held_ids  # seeded
    with pytest.raises(ConfigError, match="item_holdout"):
        hold_out_items(full, 1.0, "train")


def test_content_holdout_keeps_clusters_of_similar_texts_on_one_side_and_users_apart(tiny_world):
    """by=content: the held-out items are whole TF-IDF clusters (so an item's nearest text neighbour is on
    its side far more often than with a random half); users=True: no user has interactions on both sides."""
    from transrec.data.holdout import hold_out_items
    from transrec.data.io import load_dataset_folder
    from transrec.data.text_features import tfidf_features

    full = load_dataset_folder(tiny_world)
    ids = full.items.ids.ids
    texts = [i for i in range(1, len(ids)) if full.items.modality[i] == "text"]
    x = tfidf_features([full.items.text[i] for i in texts])[1:]
    nearest = (x @ x.T).fill_diagonal_(-1.0).argmax(1)

    def same_side_as_nearest(by: str) -> float:  # averaged over seeds: one split is noisy on 80 texts
        shares = []
        for seed in range(4):
            held = set(hold_out_items(full, 0.5, "heldout", seed=seed, by=by).items.ids.ids[1:])
            side = torch.tensor([ids[i] in held for i in texts])
            shares.append(float((side[nearest] == side).float().mean()))
        return sum(shares) / len(shares)

    assert same_side_as_nearest("content") > same_side_as_nearest("random") + 0.15
    kept, held = (hold_out_items(full, 0.5, side, seed=2, by="content", users=True) for side in ("train", "heldout"))
    kept_items, held_items = (set(d.items.ids.ids[1:]) for d in (kept, held))
    assert not kept_items & held_items and len(kept_items | held_items) == full.items.num_items
    kept_users, held_users = (set(d.interactions.user.tolist()) for d in (kept, held))
    assert kept_users and held_users and not kept_users & held_users
    with pytest.raises(ConfigError, match="item_holdout_by"):
        hold_out_items(full, 0.5, "train", by="popularity")


def test_user_holdout_gives_two_configs_of_one_dataset_disjoint_users_across_domains(tiny_world):
    """data.user_holdout: a source config (one domain, side train) and a target config (the other domain,
    side heldout) of one dataset share no user, and together keep every user of the file."""
    import numpy as np

    from transrec.data.pipeline import prepare_data

    def users(domain: str, side: str) -> set[str]:
        cfg = load_config(None, [f"data.path={tiny_world}", "data.source=folder", f"data.domain={domain}",
                                 "data.user_holdout=0.5", f"data.user_holdout_side={side}"])
        ds = prepare_data(cfg.data).dataset
        return set(ds.interactions.users.decode(np.unique(ds.interactions.user)))

    source, target = users("A", "train"), users("B", "heldout")
    assert source and target and not source & target
    assert not users("A", "heldout") & source and not users("B", "train") & target  # the same draw in both
    whole = prepare_data(load_config(None, [f"data.path={tiny_world}", "data.source=folder", "data.domain=A"]).data)
    assert users("A", "heldout") | source == set(whole.dataset.interactions.users.decode(
        np.unique(whole.dataset.interactions.user)))  # nobody lost
    with pytest.raises(ConfigError, match="user_holdout_side"):
        prepare_data(load_config(None, [f"data.path={tiny_world}", "data.source=folder",
                                        "data.user_holdout=0.5", "data.user_holdout_side=both"]).data)


def test_calibration_cases_are_each_users_last_next_item_predictions():
    """The calibration scores each held-out user's last CASES_PER_USER next items, every one with its
    history so far (at least one item): the validation and test cases are among them, nothing else is."""
    import numpy as np

    from transrec.data.splits import leave_one_out
    from transrec.training.calibration import calibration_cases

    empty = np.zeros(0, np.int64)
    sequences = [empty, np.array([5, 6, 7, 8, 9, 10, 11, 12]), empty, np.array([3, 1, 4])]
    cases = calibration_cases(leave_one_out(sequences), per_user=5)
    expected = [(1, [5, 6, 7], 8), (1, [5, 6, 7, 8], 9), (1, [5, 6, 7, 8, 9], 10), (1, [5, 6, 7, 8, 9, 10], 11),
                (1, [5, 6, 7, 8, 9, 10, 11], 12), (3, [3], 1), (3, [3, 1], 4)]
    got = [(int(u), h.tolist(), int(t)) for u, h, t in zip(cases.users, cases.histories, cases.targets)]
    assert got == expected
    assert len(calibration_cases(leave_one_out(sequences), per_user=1)) == 2  # the test cases only


def test_transfer_calibration_sets_the_zero_shot_residual_weight(tiny_world, tmp_path, monkeypatch):
    """train.transfer_calibration trains on kept items, picks the residual weight on held-out ones, saves it
    in the checkpoint; zero-shot ranking uses it and the learned weight comes back afterwards. The sweeps
    run without the kept model's content-prior memory (the held-out items are none of its items)."""
    import transrec.training.calibration as calibration_module
    from transrec.training.calibration import CONTENT_PRIOR_GRID, LEXICAL_GRID, WEIGHT_GRID

    sweep, memories = calibration_module._sweep, []

    def recording_sweep(model, *args):
        memories.append(getattr(model, "content_prior_keys", None))
        return sweep(model, *args)

    monkeypatch.setattr(calibration_module, "_sweep", recording_sweep)

    cfg = load_config(None, content_overrides(tiny_world, "A", **{
        "train.epochs": 1, "model.score": "cosine", "model.content_residual": "true",
        "model.text_trainable_blocks": 0, "model.image_trainable_blocks": 0, "model.cache_frozen": "true",
        "train.transfer_calibration": 0.5}))
    result = train(cfg, tmp_path)
    calibration = result.metrics["run"]["transfer_calibration"]
    assert calibration["residual_weight"] in WEIGHT_GRID and len(calibration["heldout_valid_NDCG@10_by_weight"]) == 9
    assert (tmp_path / "calibration" / "model" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["transfer_residual_weight"] == calibration["residual_weight"]
    assert calibration["lexical_weight"] in LEXICAL_GRID  # the tiny world has text items
    assert config["transfer_lexical_weight"] == calibration["lexical_weight"]
    zero_shot = transfer(tmp_path / "model", load_config(None, content_overrides(tiny_world, "B")), "zero_shot",
                         tmp_path / "zs")
    assert zero_shot["run"]["transfer_lexical_weight"] == calibration["lexical_weight"]
    assert zero_shot["run"]["transfer_residual_weight"] == calibration["residual_weight"]
    assert calibration["content_prior_weight"] in CONTENT_PRIOR_GRID
    assert len(calibration["heldout_valid_NDCG@10_by_content_prior_weight"]) == len(CONTENT_PRIOR_GRID)
    assert config["transfer_content_prior_weight"] == calibration["content_prior_weight"]
    assert zero_shot["run"]["transfer_content_prior_weight"] == calibration["content_prior_weight"]
    assert 0 <= zero_shot["run"]["content_prior_memory_matches"] <= zero_shot["run"]["items"]
    assert len(memories) == 3 and all(m is None for m in memories)
    assert (tmp_path / "calibration" / "model" / "model.safetensors").is_file()
    assert load_model(tmp_path / "model").content_prior_keys.shape[0] > 0  # the final model keeps its memory
    model = load_model(tmp_path / "model")
    learned = float(model.residual_weight.detach())
    with model.zero_shot_scoring():
        assert float(model.residual_weight.detach()) == calibration["residual_weight"]
    assert float(model.residual_weight.detach()) == learned


def test_zero_shot_lexical_term_is_tfidf_cosine_to_the_last_text_item(tiny_world, tmp_path):
    """Under zero_shot_scoring, score = the model's own score + w x TF-IDF cosine(last item's text,
    candidate's text), 0 for image items; outside it (training, fine-tuned epochs) the term is absent."""
    from transrec.data.pipeline import prepare_data
    from transrec.models.heuristics import tfidf_features

    cfg = load_config(None, content_overrides(tiny_world, "B", **{
        "train.epochs": 1, "model.score": "cosine", "model.content_residual": "true",
        "model.text_trainable_blocks": 0, "model.image_trainable_blocks": 0, "model.cache_frozen": "true"}))
    train(cfg, tmp_path)
    model = load_model(tmp_path / "model").eval()
    items = prepare_data(cfg.data).dataset.items
    model.attach_content(model.item_encoder.build_content_store(items))
    batch = {"items": torch.tensor([[0, 0, 3, 9], [1, 2, 5, 20]])}
    texts = [t if m == "text" else None for t, m in zip(items.text[1:], items.modality[1:])]
    lexical = tfidf_features(texts)
    with torch.no_grad():
        plain = model.encode_users(batch) @ model.all_item_vectors().T
        model.set_transfer_lexical_weight(3.0)
        with model.zero_shot_scoring():
            fused = model.encode_users(batch) @ model.all_item_vectors().T
        after = model.encode_users(batch) @ model.all_item_vectors().T
    torch.testing.assert_close(fused, plain + 3.0 * lexical[batch["items"][:, -1]] @ lexical.T, rtol=1e-4, atol=1e-4)
    assert torch.equal(after, plain)
    image = torch.tensor([m == "image" for m in items.modality])
    assert image.any() and torch.allclose(fused[:, image], plain[:, image])
    assert not torch.allclose(fused, plain)


def test_content_prior_is_fit_on_the_training_counts_and_adds_w_times_its_prediction(tiny_world, tmp_path):
    """Training fits the content prior (a ridge regression of standardised log counts on the encoder's
    pooled features) and saves it; under zero_shot_scoring score = the model's own + w x prior(candidate),
    the same for every user; outside it nothing changes. A checkpoint saved before the prior loads without one."""
    import numpy as np
    from safetensors.torch import load_file, save_file

    from transrec.data.pipeline import prepare_data
    from transrec.models.content_prior import fit_content_prior, memory_matches, raw_features

    cfg = load_config(None, content_overrides(tiny_world, "A", **{
        "train.epochs": 1, "model.score": "cosine", "model.content_residual": "true",
        "model.text_trainable_blocks": 0, "model.image_trainable_blocks": 0, "model.cache_frozen": "true"}))
    train(cfg, tmp_path)
    model = load_model(tmp_path / "model").eval()
    assert model.content_prior_coef.abs().sum() > 0  # fit after training and saved with the weights
    data = prepare_data(cfg.data)
    # and its memory of the source's items: one key per item, loaded strictly at the size the config says
    assert model.content_prior_keys.shape == (data.num_items, model.item_encoder.feature_dim)
    assert model.content_prior_residuals.abs().sum() > 0 and 0 < float(model.content_prior_temperature) < 1
    model.attach_content(model.item_encoder.build_content_store(data.dataset.items))
    assert memory_matches(model) == data.num_items  # its own items: every one is in the memory
    model.attach_content(model.item_encoder.build_content_store(data.dataset.items))
    items = torch.arange(1, data.num_items + 1)
    with torch.no_grad():
        # counts that are a function of the content: the fit must recover their order
        feats = raw_features(model, items).double().numpy()
        counts = np.concatenate([[0.0], np.expm1(2.0 + feats @ np.random.default_rng(0).normal(size=feats.shape[1]))
                                 .clip(0)])
        assert fit_content_prior(model, counts, ridge=1e-3) > 0.95
        prior = model.content_prior(torch.arange(data.num_items + 1))
        assert prior[0] == 0
        rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
        assert np.corrcoef(rank(prior[1:].numpy()), rank(counts[1:]))[0, 1] > 0.9
        batch = {"items": torch.tensor([[0, 0, 3, 9], [1, 2, 5, 20]])}
        plain = model.encode_users(batch) @ model.all_item_vectors().T
        model.set_transfer_content_prior_weight(2.5)
        with model.zero_shot_scoring():
            fused = model.encode_users(batch) @ model.all_item_vectors().T
        after = model.encode_users(batch) @ model.all_item_vectors().T
    torch.testing.assert_close(fused, plain + 2.5 * prior.unsqueeze(0), rtol=1e-4, atol=1e-4)
    assert torch.equal(after, plain)
    # a checkpoint from before the content prior: the same weights without its tensors, a config without its memory
    weights, config = tmp_path / "model" / "model.safetensors", tmp_path / "model" / "config.json"
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("content_prior_")}
    save_file(state, weights)
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items()
                                  if k != "content_prior_memory"}))
    old = load_model(tmp_path / "model")
    assert old.content_prior_coef.abs().sum() == 0 and old.content_prior_bias == 0


def test_content_prior_memory_moves_near_duplicates_of_source_items_only():
    """The memory's correction equals a brute-force kernel average of the source residuals: a candidate equal
    to a source item gets that item's residual shrunk by SHRINK, one far from every source item ~nothing;
    the temperature is TEMPERATURE_SHARE x the median distance to the nearest other source item."""
    import torch.nn.functional as F

    from transrec.models.content_prior import (
        SHRINK, TEMPERATURE_SHARE, memory_correction, memory_temperature, near_duplicates)

    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(12, 8, generator=g), dim=-1)
    residuals = torch.randn(12, generator=g)
    temperature = memory_temperature(keys)
    sims = keys @ keys.T
    nearest = (sims - 3 * torch.eye(12)).max(1).values
    assert temperature == pytest.approx(TEMPERATURE_SHARE * float((1 - nearest).median()), rel=1e-5)
    candidates = torch.cat([keys[:3], F.normalize(torch.randn(5, 8, generator=g), dim=-1)])
    weights = torch.exp((candidates @ keys.T - 1) / temperature)  # every key: NEIGHBOURS >= 12
    reference = (weights * residuals).sum(1) / (SHRINK + weights.sum(1))
    got = memory_correction(candidates, keys, residuals, temperature)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-6)
    # a source item itself: about its residual, shrunk (its neighbours are far, so their weights are tiny)
    assert got[:3] == pytest.approx((residuals[:3] / (1 + SHRINK)).tolist(), abs=0.05)
    far = -keys.sum(0, keepdim=True)  # opposite the whole memory
    assert memory_correction(F.normalize(far, dim=-1), keys, residuals, temperature).abs().item() < 1e-6
    # near-duplicates (what zero-shot reports as content_prior_memory_matches): the copies, not the others
    assert near_duplicates(candidates, keys, temperature).tolist() == [True] * 3 + [False] * 5


def test_fine_tuning_validates_the_zero_shot_model_as_epoch_0_and_keeps_it_unless_beaten(tiny_world, tmp_path):
    """Epoch 0 of a transfer fine-tune is the source model as it ranks the target zero-shot (its calibrated
    residual weight): its validation is the zero-shot mode's. Training starts from the learned weights, and
    when no epoch beats epoch 0 the saved model is the start, bit for bit."""
    import csv
    import shutil

    src = train(load_config(None, content_overrides(tiny_world, "A", **{
        "train.epochs": 1, "model.score": "cosine", "model.content_residual": "true",
        "model.text_trainable_blocks": 0, "model.image_trainable_blocks": 0, "model.cache_frozen": "true",
        "train.transfer_calibration": 0.5})), tmp_path / "src")
    assert src.metrics["run"]["transfer_calibration"]["residual_weight"] is not None
    frozen_lr = {"train.epochs": 1, "train.lr": 1e-12, "train.item_encoder_lr": 1e-12}
    target = load_config(None, content_overrides(tiny_world, "B", **frozen_lr))
    zero_shot = transfer(tmp_path / "src" / "model", target, "zero_shot", tmp_path / "zs")
    transfer(tmp_path / "src" / "model", target, "fine_tune", tmp_path / "ft")
    with (tmp_path / "ft" / "log.csv").open() as f:
        first = next(r for r in csv.DictReader(f) if r["kind"] == "valid")
    assert int(first["epoch"]) == 0
    assert float(first["NDCG@10"]) == pytest.approx(zero_shot["valid"]["NDCG@10"], abs=1e-5)
    plain = transfer(tmp_path / "src" / "model", load_config(None, content_overrides(
        tiny_world, "B", **frozen_lr, **{"train.select_initial": "false"})), "fine_tune", tmp_path / "ft_plain")
    assert plain["run"]["best_epoch"] == 1  # trained from the learned residual weight, not the calibrated one
    learned_src = float(load_model(tmp_path / "src" / "model").residual_weight.detach())
    assert float(load_model(tmp_path / "ft_plain" / "model").residual_weight.detach()) == pytest.approx(learned_src)

    # a source whose calibrated weight equals its learned one: epoch 1 (lr 1e-12) only ties epoch 0
    tied = tmp_path / "src_tied"
    shutil.copytree(tmp_path / "src" / "model", tied)
    start = load_model(tied)
    learned = float(start.residual_weight.detach())
    config = json.loads((tied / "config.json").read_text())
    (tied / "config.json").write_text(json.dumps({**config, "transfer_residual_weight": learned}))
    metrics = transfer(tied, target, "fine_tune", tmp_path / "ft_tied")
    assert metrics["run"]["best_epoch"] == 0  # epoch 1 only ties the start: not an improvement
    tuned = load_model(tmp_path / "ft_tied" / "model")
    assert float(tuned.residual_weight.detach()) == learned
    for (name, p), q in zip(start.user_encoder.state_dict().items(), tuned.user_encoder.state_dict().values()):
        assert torch.equal(p, q), name
    metrics = transfer(tied, load_config(None, content_overrides(
        tiny_world, "B", **frozen_lr, **{"train.select_initial": "false"})), "fine_tune", tmp_path / "ft2")
    assert metrics["run"]["best_epoch"] == 1
    # patience counts trained epochs only: epoch 1 ties epoch 0 but is the first trained epoch, so it does not
    # count against the patience of 1; epoch 2 ties epoch 1 and stops the run
    metrics = transfer(tied, load_config(None, content_overrides(
        tiny_world, "B", **{**frozen_lr, "train.epochs": 4, "train.patience": 1})), "fine_tune", tmp_path / "ft3")
    assert (metrics["run"]["best_epoch"], metrics["run"]["epochs_run"]) == (0, 2)


def test_fine_tuning_trains_with_the_target_configs_dropout(source_run, tiny_world, tmp_path):
    """Dropout is a training setting: a fine-tune uses the target config's rate (every dropout of the
    user encoder, attention included) and saves it."""
    from torch import nn

    out, _ = source_run
    source_rate = load_model(out / "model").user_encoder.emb_drop.p
    rate = 0.45 if source_rate != 0.45 else 0.35
    transfer(out / "model", load_config(None, content_overrides(tiny_world, "B", **{
        "train.epochs": 1, "model.dropout": rate})), "fine_tune", tmp_path / "ft")
    tuned = load_model(tmp_path / "ft" / "model")
    rates = [m.p for m in tuned.user_encoder.modules() if isinstance(m, nn.Dropout)]
    rates += [m.dropout for m in tuned.user_encoder.modules() if isinstance(getattr(m, "dropout", None), float)]
    assert len(rates) > 2 and set(rates) == {rate}
    assert json.loads((tmp_path / "ft" / "model" / "config.json").read_text())["encoder_args"]["dropout"] == rate
    with pytest.raises(ConfigError, match="dropout"):
        tuned.set_dropout(1.0)


def test_content_run_checkpoints_hold_no_frozen_weight_and_resume_exactly(tiny_world, tmp_path):
    """The frozen backbone bottoms are left out of best_model.safetensors and of the resume checkpoint
    (the shareable model/ folder keeps everything); a run resumed from such a checkpoint ends exactly
    where an uninterrupted one does, and a checkpoint of another model is refused by name."""
    from safetensors import safe_open

    from transrec.errors import CheckpointError
    from transrec.models.recommender import MEMORY_NAMES
    from transrec.training.checkpoint import check_trainable_names, frozen_names

    def cfg(epochs):
        return load_config(None, content_overrides(tiny_world, "A", **{"train.epochs": epochs,
                                                                        "train.patience": 10}))

    straight = train(cfg(4), tmp_path / "a")
    train(cfg(2), tmp_path / "b")
    resumed = train(cfg(4), tmp_path / "b", resume=True)
    assert "resumed from" in (tmp_path / "b" / "train.log").read_text()
    assert resumed.metrics["test"] == pytest.approx(straight.metrics["test"], abs=1e-6)

    model = load_model(tmp_path / "b" / "model")
    frozen = frozen_names(model)
    assert len(frozen) > 10

    def names(path):
        with safe_open(str(path), "pt") as f:
            return set(f.keys())

    # the content prior's memory is fit after training, from the source's items: the final model only
    memory = set(MEMORY_NAMES)
    assert memory <= names(tmp_path / "b" / "model" / "model.safetensors")
    for partial in (tmp_path / "b" / "best_model.safetensors", tmp_path / "b" / "checkpoints" / "latest" /
                    "model.safetensors"):
        assert not names(partial) & frozen and names(partial) == set(model.state_dict()) - frozen - memory
    assert frozen <= names(tmp_path / "b" / "model" / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        check_trainable_names(model, set(model.state_dict()) - frozen - {"user_encoder.pos.weight"}, "checkpoint")


def test_heuristics_mode_writes_each_training_free_baseline(tiny_world, tmp_path):
    """`transfer --mode heuristics` needs no source model; its TF-IDF row is the ContentKNN ranking itself."""
    from transrec.data.pipeline import prepare_data
    from transrec.evaluation.evaluator import evaluate
    from transrec.models.heuristics import ContentKNN, tfidf_features

    cfg = load_config(None, content_overrides(tiny_world, "B"))
    metrics = transfer(None, cfg, "heuristics", tmp_path / "h")
    assert json.loads((tmp_path / "h" / "metrics.json").read_text())["run"]["mode"] == "heuristics"
    assert {"tfidf_cosine_last", "tfidf_cosine_last+popularity"} <= set(metrics["heuristics"])
    data = prepare_data(cfg.data)
    knn = ContentKNN(tfidf_features(list(data.dataset.items.text[1:])), "last", cfg.data.max_len)
    expected = evaluate(knn, data.split.test, cfg.eval, cfg.data.max_len)
    assert metrics["heuristics"]["tfidf_cosine_last"]["test"] == pytest.approx(expected)


def test_fine_tune_can_train_the_top_text_block_of_a_model_trained_frozen(tiny_world, tmp_path):
    """Two stages: train with the text encoder frozen (cheap), then fine-tune its top block from that
    model (`model.text_trainable_blocks=1` in the fine-tune's config). Only the top block and above
    change, the saved model says so, and the frozen bottom stays as it was."""
    frozen = {"model.text_trainable_blocks": 0, "model.image_trainable_blocks": 0, "model.cache_frozen": "true"}
    train(load_config(None, content_overrides(tiny_world, "A", **{"train.epochs": 1, **frozen})), tmp_path / "src")
    source = load_model(tmp_path / "src" / "model")
    tune = {"train.epochs": 1, "train.select_initial": "false", "train.item_encoder_lr": 0.01,
            **frozen, "model.text_trainable_blocks": 1}
    transfer(tmp_path / "src" / "model", load_config(None, content_overrides(tiny_world, "A", **tune)),
             "fine_tune", tmp_path / "ft")
    tuned = load_model(tmp_path / "ft" / "model")
    text_before, text_after = source.item_encoder.text, tuned.item_encoder.text
    assert text_after.trainable_blocks == 1 and text_after.num_frozen == len(text_after.layers) - 1
    config = json.loads((tmp_path / "ft" / "model" / "config.json").read_text())
    assert config["item_encoder_args"]["text"]["trainable_blocks"] == 1

    def changed(module_before, module_after) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(module_before.state_dict().values(),
                                                         module_after.state_dict().values()))

    assert changed(text_before.layers[-1], text_after.layers[-1])
    assert not changed(text_before.backbone.embeddings, text_after.backbone.embeddings)
    assert not any(changed(a, b) for a, b in zip(text_before.layers[:-1], text_after.layers[:-1]))
    assert not changed(source.item_encoder.image.backbone, tuned.item_encoder.image.backbone)
    with pytest.raises(ConfigError, match="cache_frozen needs a frozen bottom"):
        tuned.set_text_trainable_blocks(-1)


def test_model_variants_drop_only_terms_the_model_has():
    """An uncalibrated model (no weights) or one whose terms are 0 is fused as it is; each weighted term
    is tried kept and dropped, the calibrated pair first (so ties keep the calibrated model)."""
    from types import SimpleNamespace

    from transrec.training.transfer import model_variants

    assert model_variants(SimpleNamespace(transfer_lexical_weight=None, transfer_content_prior_weight=None)) == [
        (None, None)]
    assert model_variants(SimpleNamespace(transfer_lexical_weight=0.0, transfer_content_prior_weight=5.0)) == [
        (0.0, 5.0), (0.0, 0.0)]
