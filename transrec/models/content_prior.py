"""The content prior: how popular items like a candidate were in the domain a model was trained on.

A new domain has no interaction counts, but part of what made items popular in the source (genres,
eras, styles) shows in their content. After training, a ridge regression of the training split's
standardised log(1 + count) on the item encoder's own unit-norm pooled features (uncentred, so the
regression means the same in every catalogue) is stored in the model (`content_prior_coef`,
`content_prior_bias`). Zero-shot ranking adds `transfer_content_prior_weight` x its prediction for
each candidate; the weight is chosen on held-out source items (`train.transfer_calibration`), so it
stays 0 where content does not predict popularity there.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger("transrec")
#: ridge penalty of the regression (features are unit norm; a few hundred to thousands of items)
RIDGE = 10.0


@torch.no_grad()
def raw_features(model, items: torch.Tensor) -> torch.Tensor:
    """Unit-norm pooled encoder features of `items` (zeros for padding), uncentred."""
    return model.item_encoder.similarity_features(items.reshape(-1), centred=False).reshape(*items.shape, -1)


@torch.no_grad()
def fit_content_prior(model, counts: np.ndarray, ridge: float = RIDGE, batch_size: int = 1024) -> float:
    """Fit `model`'s content prior to the training counts of its attached items (`counts[i]`, row 0 =
    padding) -> the correlation of the fit with the standardised log counts (in-sample; 0 if constant)."""
    n = len(counts) - 1
    y = np.log1p(np.asarray(counts[1:], dtype=np.float64))
    coef = torch.zeros_like(model.content_prior_coef)
    if n < 2 or y.std() == 0:
        model.content_prior_coef.copy_(coef)
        model.content_prior_bias.zero_()
        return 0.0
    rows = [raw_features(model, torch.arange(s, min(s + batch_size, n + 1))) for s in range(1, n + 1, batch_size)]
    x = torch.cat(rows).double().cpu().numpy()
    y = (y - y.mean()) / y.std()
    mean = x.mean(0)
    xc = x - mean
    solution = np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ y)
    model.content_prior_coef.copy_(torch.as_tensor(solution, dtype=coef.dtype))
    model.content_prior_bias.fill_(float(-mean @ solution))
    fitted = xc @ solution
    corr = float(np.corrcoef(fitted, y)[0, 1]) if fitted.std() > 0 else 0.0
    log.info("content prior fit on %d items: correlation with log counts %.3f (in-sample)", n, corr)
    return corr
