"""Transfer a trained content recommender to a target dataset whose items it has never seen.

Modes: `zero_shot` (encode the target's items from content and rank, no training), `fine_tune`
(continue training on the target; the target config's dropout and `model.text_trainable_blocks`
apply, so a model trained with its text encoder frozen can fine-tune the top block), `scratch` (the same
architecture, fresh, trained on the target only: the no-transfer reference), `heuristics` (the
training-free baselines, no source model). Every mode writes `metrics.json` like `transrec train`,
with the mode recorded and the popularity baseline of the same target under `popularity`.

`zero_shot` reports two rankings, labelled apart: content only (`valid`/`test`: the model reads
nothing of the target but the evaluated user's own history), and `zero_shot_with_popularity`
(the same score + w * log(1 + count), counts from the target's training interactions, w chosen on
the target's validation cases: training-free, but it reads the target's interaction log).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from transrec.config import Config
from transrec.data.pipeline import prepare_data
from transrec.errors import ConfigError
from transrec.evaluation.evaluator import evaluate
from transrec.models.content_prior import memory_matches
from transrec.hub import load_model, metrics_markdown, protocol_text, save_model
from transrec.models.recommender import PopularityModel, lexical_texts

log = logging.getLogger("transrec")
MODES = ("zero_shot", "fine_tune", "scratch", "heuristics")


def _require_content(model, source: str) -> None:
    if not getattr(model, "is_content_model", False):
        raise ConfigError(f"{source} is an ID model: its item vectors are tied to the source items, so it cannot "
                          "transfer to new items; train a content model (model.item_encoder=text|image|mixture)")


def zero_shot_content_only(model, catalog, cases: dict, cfg: Config) -> dict:
    """Content-only zero-shot: the target's catalogue and the evaluated users' own histories are all
    it is given (no training interaction, no count of the target), so by construction it reads nothing
    else of the target."""
    model.attach_content(model.item_encoder.build_content_store(catalog, cfg.data.on_bad_content))
    with model.zero_shot_scoring():
        return {split: evaluate(model, c, cfg.eval, cfg.data.max_len) for split, c in cases.items()}


#: zero-shot + target statistics: weights tried for the pretrained-encoder similarity and the popularity prior
ENCODER_GRID = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)  # 1000: the encoder similarity alone, the model breaking ties
#: ... and for the TF-IDF cosine to the last item (a second pass, the others' weights fixed)
TFIDF_GRID = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)


def zero_shot_rankings(model, data, cfg: Config) -> dict:
    """Content-only zero-shot metrics (valid, test) and, apart, with the target's popularity prior.

    The popularity mode scores model + a * (the item encoder's own cosine to the last item) +
    w * log(1 + count) + t * (TF-IDF cosine to the last item), chosen on the target's validation
    cases: a and w by exhaustive search with t = 0, then t with a and w fixed, then w again if t > 0
    (a = w = t = 0 is the model alone). So the mode contains every training-free heuristic's
    scoring (encoder cosine, TF-IDF, popularity prior). The model's own calibrated zero-shot terms
    (its lexical term, its content prior) are each kept or dropped, also by the validation cases
    (`model_variants`): once real counts are there, a popularity guessed from content is redundant,
    and the fusion's own TF-IDF may serve better than the source-calibrated one. Training-free, but
    it reads the target's training counts and validation cases, as the heuristics' prior does. The
    chosen weights are reported, so whether the trained model adds anything to the heuristics is visible."""
    from transrec.models.heuristics import ContentKNN, FusedScores, MemoUsers, encoder_features, tfidf_features

    out = zero_shot_content_only(model, data.dataset.items, {"valid": data.split.valid, "test": data.split.test},
                                 cfg)
    # from here on the target's training counts and validation cases are read (the labelled, separate mode)
    max_len = cfg.data.max_len
    heuristic_parts = [ContentKNN(encoder_features(model.item_encoder), "last", max_len),
                       PopularityModel(data.num_items, max_len).fit(data.split.train),
                       ContentKNN(tfidf_features(lexical_texts(data.dataset.items)), "last", max_len)]
    heuristic_parts = [MemoUsers(p) for p in heuristic_parts]  # user vectors once for every pass and variant
    valid, calibrated = data.split.valid, (model.transfer_lexical_weight, model.transfer_content_prior_weight)
    best = None
    try:
        for lexical, prior in model_variants(model):
            model.set_transfer_lexical_weight(lexical)
            model.set_transfer_content_prior_weight(prior)
            parts = [MemoUsers(model), *heuristic_parts]  # the model's user vectors differ per variant
            with model.zero_shot_scoring():
                weights, score = _fit_popularity_fusion(parts, valid, cfg)
            if best is None or score > best[0]:  # ties: the earlier variant (the calibrated model first)
                best = (score, weights, lexical, prior)
        _, weights, lexical, prior = best
        model.set_transfer_lexical_weight(lexical)
        model.set_transfer_content_prior_weight(prior)
        with model.zero_shot_scoring():
            fused = FusedScores([model, *heuristic_parts], weights)
            out["zero_shot_with_popularity"] = {"valid": evaluate(fused, valid, cfg.eval, max_len),
                                                "test": evaluate(fused, data.split.test, cfg.eval, max_len),
                                                "prior_weight": weights[2], "encoder_similarity_weight": weights[1],
                                                "lexical_weight": weights[3], "model_lexical_weight": lexical,
                                                "model_content_prior_weight": prior}
    finally:  # the model keeps its calibrated terms for content-only ranking and saving
        model.set_transfer_lexical_weight(calibrated[0])
        model.set_transfer_content_prior_weight(calibrated[1])
    return out


def model_variants(model) -> list[tuple[float | None, float | None]]:
    """(lexical weight, content prior weight) pairs the popularity mode tries for the model: each of its
    calibrated terms as calibrated and, if it has a weight, dropped (0). The calibrated pair comes first."""
    lexical, prior = model.transfer_lexical_weight, model.transfer_content_prior_weight
    return [(lex, pri) for lex in [lexical] + [0.0] * bool(lexical) for pri in [prior] + [0.0] * bool(prior)]


def _fit_popularity_fusion(parts: list, valid, cfg: Config) -> tuple[list[float], float]:
    """The popularity mode's sequential weight search (see `zero_shot_rankings`) -> (weights, valid NDCG@10)."""
    from transrec.models.heuristics import PRIOR_GRID, fit_fusion

    max_len = cfg.data.max_len
    weights, tried = fit_fusion(parts, [(1.0,), ENCODER_GRID, PRIOR_GRID, (0.0,)], valid, cfg.eval, max_len)
    weights, tried = fit_fusion(parts, [(1.0,), (weights[1],), (weights[2],), TFIDF_GRID], valid, cfg.eval,
                                max_len)
    if weights[3]:  # the prior's weight again, now with the lexical term (its 8k-wide vectors cost most)
        weights, tried = fit_fusion(parts, [(1.0,), (weights[1],), PRIOR_GRID, (weights[3],)], valid, cfg.eval,
                                    max_len)
    return weights, tried[tuple(weights)]


def transfer(source: str | Path | None, cfg: Config, mode: str, output_dir: str | Path) -> dict:
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if source is None and mode != "heuristics":
        raise ConfigError(f"--mode {mode} needs --model (the trained source model)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    extra = {"mode": mode, "source_model": str(source)}
    if mode == "heuristics":
        return _heuristics(cfg, output_dir, extra)
    if mode in ("fine_tune", "scratch"):
        from transrec.training.trainer import train

        if mode == "fine_tune":
            model = load_model(source)
            _require_content(model, str(source))
            if cfg.model.id_embedding and model.item_encoder.id_embedding is None:
                # id+content fine-tuning: the target's items get zero-initialised ID vectors
                data = prepare_data(cfg.data)
                model.attach_content(model.item_encoder.build_content_store(data.dataset.items,
                                                                            cfg.data.on_bad_content))
                model.add_item_ids()
                extra["id_embedding_added"] = True
        else:
            model = load_model(source, fresh=True)
            if cfg.model.pretrained:
                model.item_encoder.load_pretrained_weights()
        model.set_dropout(cfg.model.dropout)  # the target config's dropout, not the source's
        if mode == "fine_tune" and getattr(model, "text_item_encoder", None) is not None:
            model.set_text_trainable_blocks(cfg.model.text_trainable_blocks)
        _require_content(model, str(source))
        return train(cfg, output_dir, init_model=model, extra=extra).metrics

    model = load_model(source)
    _require_content(model, str(source))
    start = time.time()
    data = prepare_data(cfg.data)
    rankings = zero_shot_rankings(model, data, cfg)
    valid, test = rankings["valid"], rankings["test"]
    metrics = {**rankings, "popularity": _popularity(data, cfg),
               "run": {**extra, "dataset": data.dataset.name, "users": data.split.num_users,
                       "items": data.num_items, "seconds": round(time.time() - start, 2),
                       "protocol": protocol_text(cfg.eval),
                       # the calibrated zero-shot weights the ranking used (None: not calibrated / no text)
                       "transfer_residual_weight": getattr(model, "transfer_residual_weight", None),
                       "transfer_lexical_weight": getattr(model, "transfer_lexical_weight", None),
                       "transfer_content_prior_weight": getattr(model, "transfer_content_prior_weight", None),
                       # target items that are near-duplicates of a source item (the content prior's memory)
                       "content_prior_memory_matches": memory_matches(model)}}
    (output_dir / "config.yaml").write_text(cfg.to_yaml())
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    card = {"title": f"transrec zero-shot transfer to {data.dataset.name}", "dataset": data.dataset.name,
            "model_desc": "content recommender, transferred zero-shot (no training on this data)",
            "data_desc": data.dataset.summary(), "protocol": protocol_text(cfg.eval),
            "metrics_table": metrics_markdown({"valid": valid, "test": test}),
            "training_desc": f"Trained on other data ({source}); items of this dataset encoded from content."}
    save_model(model, output_dir / "model", data.dataset.items.ids.to_list(), card)
    log.info("zero-shot test: %s", ", ".join(f"{k} {v:.4f}" for k, v in test.items() if k.endswith("@10")))
    return metrics


def _popularity(data, cfg: Config) -> dict:
    popularity = PopularityModel(data.num_items, cfg.data.max_len).fit(data.split.train)
    return {"valid": evaluate(popularity, data.split.valid, cfg.eval, cfg.data.max_len),
            "test": evaluate(popularity, data.split.test, cfg.eval, cfg.data.max_len)}


def _heuristics(cfg: Config, output_dir: Path, extra: dict) -> dict:
    from transrec.evaluation.baselines import heuristic_baselines

    start = time.time()
    data = prepare_data(cfg.data)
    metrics = {"heuristics": heuristic_baselines(cfg, data), "popularity": _popularity(data, cfg),
               "run": {**extra, "dataset": data.dataset.name, "users": data.split.num_users,
                       "items": data.num_items, "seconds": round(time.time() - start, 2),
                       "protocol": protocol_text(cfg.eval)}}
    (output_dir / "config.yaml").write_text(cfg.to_yaml())
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
