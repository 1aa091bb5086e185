"""Transfer calibration: how much should a content model trust its own learned score on items it
never saw, against its item encoder's plain similarity to the last item?

Training on one catalogue says nothing about that (there, the learned part always wins), and the
target must not be read. So the source is split: a share of its items is held out (a pseudo new
domain, `data.item_holdout`), a model with the same config is trained on the rest, and the residual
weight w of `score = learned + w * cos(encoder features of the last item, of the candidate)` is
chosen by zero-shot NDCG@10 on the held-out items' cases. Then, with that w, the weight of
the lexical term (TF-IDF cosine of the last item's text to each text candidate's) is chosen the same
way, if the held-out items have text; then the content prior's (`transrec.models.content_prior`:
the kept model's regression of its items' popularity on their content, applied to the held-out
items). The model trained on the whole source then ranks new domains zero-shot with all three
(`SequentialRecommender.transfer_residual_weight`, `transfer_lexical_weight`,
`transfer_content_prior_weight`). Chosen in sequence, not jointly, so the residual weight (which a
fine-tune's epoch 0 also uses) is what it would be without the later terms.

The held-out items' cases are each user's validation case, or with `train.transfer_calibration_cases=n`
its last n next-item cases (test, validation and the training sequence's last ones): a held-out half
has few users' worth of validation cases, and on MovieLens the weights' curves differ by less than one
validation set's noise. More cases steadied the picks but did not choose better weights for the real
targets on the mean (benchmarks/README.md), so the default stays the validation cases.

The held-out half is drawn as `data.item_holdout_by` / `data.item_holdout_users` say (default: items
uniformly, users shared). Holding out whole content clusters, or the users too, looks closer to a new
domain but chose worse weights on MovieLens (benchmarks/README.md): clusters of similar texts make the
lexical term look strong within them.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch

from transrec.config import Config
from transrec.data.splits import EvalSet
from transrec.errors import ConfigError

log = logging.getLogger("transrec")
#: residual weights tried on the held-out items (the learned part's scale is ~10 with cosine scoring)
WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 1000.0)
#: lexical weights tried after it (wide: the residual weight may be up to 1000; the largest make it
#: TF-IDF with the rest breaking ties)
LEXICAL_GRID = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 20000.0, 1e5)
#: content prior weights tried last, in standardised log counts against a learned logit scale of ~10-13.
#: Capped at about half that scale: held-out items of the source share its popularity structure, so they
#: overrate the prior for a new catalogue. Measured (benchmarks/README.md): MovieLens older movies -> newer
#: ones, held-out items picked 20 (the old cap) and zero-shot fell to 0.024 from 0.035 without the prior,
#: 0.035 at 5; newer -> older, 5 keeps most of the gain (0.084 vs 0.086 at 10). Image sources on a grid up to
#: 20000 picked 2000 on held-out noise (+3% there) and lost 7% on the target.
CONTENT_PRIOR_GRID = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def calibrate_residual(cfg: Config, output_dir: str | Path) -> dict:
    """Train on the kept items, pick the residual weight on the held-out ones -> {"residual_weight", ...}."""
    from transrec.data.pipeline import prepare_data
    from transrec.training.trainer import train

    if not cfg.model.content_residual:
        raise ConfigError("train.transfer_calibration needs model.content_residual=true (it calibrates its weight)")
    share = cfg.train.transfer_calibration
    kept = copy.deepcopy(cfg)
    kept.train.transfer_calibration = 0.0
    kept.data.item_holdout, kept.data.item_holdout_side = share, "train"
    held = copy.deepcopy(kept)
    held.data.item_holdout_side = "heldout"
    from transrec.hub import load_model

    train(kept, Path(output_dir))
    model = load_model(Path(output_dir) / "model")
    # the content prior's memory of the kept items stays out: the held-out items are none of them, so it
    # could only add partial matches (sequels, same-genre texts) that a new domain's weight should not
    # be chosen on (on MovieLens it cut zero-shot from 0.0911 to 0.0830; benchmarks/README.md)
    model.clear_content_prior_memory()
    data = prepare_data(held.data)
    model.attach_content(model.item_encoder.build_content_store(data.dataset.items, cfg.data.on_bad_content))
    cases = _cases_by_source(data, cfg)
    # the kept model has no calibrated weights yet, so zero_shot_scoring adds only the terms swept so far
    found = sweep_zero_shot_weights(model, data, cases, cfg)
    out = {"residual_weight": found["residual_weight"], "heldout_share": share, "heldout_items": data.num_items,
           "heldout_valid_NDCG@10_by_weight": found["by_residual_weight"], "lexical_weight": found["lexical_weight"]}
    if "by_lexical_weight" in found:
        out["heldout_valid_NDCG@10_by_lexical_weight"] = found["by_lexical_weight"]
    out["content_prior_weight"] = found["content_prior_weight"]
    out["heldout_valid_NDCG@10_by_content_prior_weight"] = found["by_content_prior_weight"]
    return out


def sweep_zero_shot_weights(model, data, cases: list, cfg: Config,
                            prior_grid: tuple[float, ...] = CONTENT_PRIOR_GRID) -> dict:
    """The residual, then the lexical (if `data`'s items have text), then the content prior weight, each
    chosen by zero-shot NDCG@10 on `cases` (a list of case groups, weighed alike) with the earlier ones
    fixed, and left set on `model` -> {"residual_weight", "lexical_weight", "content_prior_weight",
    "by_<term>_weight": {weight: NDCG@10}}. Calibration runs it on held-out source items; run on a
    target's own validation cases it gives the best weights content-only zero-shot could have there."""
    from transrec.models.recommender import lexical_texts

    out = {"lexical_weight": None}
    terms = [("residual", WEIGHT_GRID, model.set_transfer_residual_weight)]
    if any(lexical_texts(data.dataset.items)):
        terms.append(("lexical", LEXICAL_GRID, model.set_transfer_lexical_weight))
    terms.append(("content_prior", prior_grid, model.set_transfer_content_prior_weight))
    for term, grid, set_weight in terms:
        out[f"{term}_weight"], out[f"by_{term}_weight"] = _sweep(model, grid, set_weight, data, cases, cfg,
                                                                 term.replace("_", " "))
    return out


def calibration_cases(split, per_user: int) -> EvalSet:
    """Each user's last `per_user` next-item cases (at least one item of history each), oldest first."""
    users, histories, targets = [], [], []
    for u, history, valid, test in zip(split.test.users, split.valid.histories, split.valid.targets,
                                       split.test.targets):
        sequence = np.concatenate([history, [valid, test]])
        for end in range(max(1, len(sequence) - per_user), len(sequence)):
            users.append(u)
            histories.append(sequence[:end])
            targets.append(sequence[end])
    return EvalSet(np.asarray(users, dtype=np.int64), histories, np.asarray(targets, dtype=np.int64))


def _cases_by_source(data, cfg: Config) -> list:
    """The held-out cases, one group per source with `data.extra_sources` (each weighs alike)."""
    per_user = cfg.train.transfer_calibration_cases
    if per_user < 0:
        raise ConfigError(f"train.transfer_calibration_cases must be >= 0, got {per_user}")
    cases = calibration_cases(data.split, per_user) if per_user else data.split.valid
    if not cfg.data.extra_sources:
        return [cases]
    from transrec.data.multisource import cases_by_source, source_prefix

    prefixes = [source_prefix(s, i) for i, s in enumerate(cfg.data.extra_sources)]
    return cases_by_source(cases, data.dataset.interactions.users, prefixes)


def _sweep(model, grid: tuple[float, ...], set_weight, data, cases: list, cfg: Config,
           term: str) -> tuple[float, dict]:
    """Zero-shot held-out NDCG@10 (the mean over `cases`' groups) for each weight of `term` ->
    (the best, the smallest on ties; all). The best weight is left set, so the next term is swept on top."""
    from transrec.evaluation.evaluator import evaluate

    found = {}
    with torch.no_grad():
        for w in grid:
            set_weight(w)
            with model.zero_shot_scoring():
                scores = [evaluate(model, group, cfg.eval, cfg.data.max_len)["NDCG@10"] for group in cases]
                found[w] = sum(scores) / len(scores)
        best = max(found, key=lambda w: (found[w], -w))
        set_weight(best)
    log.info("transfer calibration on %d held-out items: %s weight %g (held-out valid NDCG@10 by weight: %s)",
             data.num_items, term, best, ", ".join(f"{w:g}: {v:.4f}" for w, v in found.items()))
    return best, found
