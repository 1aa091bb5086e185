"""The training-free baselines of every transfer comparison, on one prepared dataset.

Pretrained-encoder cosine to the last item and to the history mean (the configured content
encoders, pretrained, no projection), TF-IDF cosine to the last item, each alone (reads no
interaction of the domain) and with a log-popularity prior whose weight is chosen on the
validation cases (reads the domain's training counts).
"""

from __future__ import annotations

import logging


from transrec.evaluation.evaluator import evaluate
from transrec.models.heuristics import ContentKNN, WithPopularityPrior, encoder_features, fit_prior_weight, \
    tfidf_features

log = logging.getLogger("transrec")


def pretrained_encoder(model_cfg, catalog, on_bad: str = "fail"):
    """The configured content item encoder with its pretrained weights and `catalog` attached, or
    None for ID models and encoders without pretrained weights (random features are no baseline)."""
    from transrec.models.recommender import item_encoder_args
    from transrec.registry import ITEM_ENCODERS

    if model_cfg.item_encoder == "id":
        return None
    encoder = ITEM_ENCODERS.create(model_cfg.item_encoder, num_items=catalog.num_items, dim=model_cfg.dim,
                                   **item_encoder_args(model_cfg))
    if not encoder.load_pretrained_weights():
        return None
    encoder.set_content(encoder.build_content_store(catalog, on_bad))
    return encoder


def heuristic_baselines(cfg, data) -> dict[str, dict]:
    """{name: {"valid", "test"[, "prior_weight"]}} for every training-free baseline."""
    max_len, out = cfg.data.max_len, {}
    candidates: dict[str, ContentKNN] = {}
    encoder = pretrained_encoder(cfg.model, data.dataset.items, cfg.data.on_bad_content)
    if encoder is not None:
        feats = encoder_features(encoder)
        candidates["encoder_cosine_last"] = ContentKNN(feats, "last", max_len)
        candidates["encoder_cosine_mean"] = ContentKNN(feats, "mean", max_len)
    texts = list(data.dataset.items.text[1:]) if hasattr(data.dataset.items, "text") else []
    if any(texts):
        candidates["tfidf_cosine_last"] = ContentKNN(tfidf_features(texts), "last", max_len)
    counts = data.item_counts()
    for name, model in candidates.items():
        out[name] = {"valid": evaluate(model, data.split.valid, cfg.eval, max_len),
                     "test": evaluate(model, data.split.test, cfg.eval, max_len)}
        weight, tried = fit_prior_weight(model, counts, data.split.valid, cfg.eval, max_len)
        prior = WithPopularityPrior(model, counts, weight)
        out[f"{name}+popularity"] = {"valid": evaluate(prior, data.split.valid, cfg.eval, max_len),
                                     "test": evaluate(prior, data.split.test, cfg.eval, max_len),
                                     "prior_weight": weight}
        log.info("heuristic %s: test NDCG@10 %.4f, with popularity (w=%g) %.4f", name,
                 out[name]["test"]["NDCG@10"], weight, out[f"{name}+popularity"]["test"]["NDCG@10"])
    return out
