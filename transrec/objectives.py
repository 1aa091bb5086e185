"""Training objectives over (hidden state, target item) pairs.

Every objective takes the model (to encode candidate items), hidden states `[N, d]` and
target item indices `[N]` (already stripped of padding) and returns a scalar loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transrec.errors import ConfigError
from transrec.registry import OBJECTIVES


class Objective(nn.Module):
    """Holds item popularity (for logQ corrections and proposal distributions)."""

    def __init__(self, item_counts: torch.Tensor, num_negatives: int = 256):
        super().__init__()
        counts = item_counts.float().clone()
        counts[0] = 0
        self.num_items = len(counts) - 1
        self.num_negatives = num_negatives
        # Smoothed popularity proposal q(i) ∝ (count + 1)^0.75, the word2vec unigram^0.75 choice.
        proposal = (counts + 1).pow(0.75)
        proposal[0] = 0
        self.register_buffer("proposal", proposal / proposal.sum(), persistent=False)
        popularity = (counts + 1) / (counts + 1)[1:].sum()
        self.register_buffer("log_popularity", popularity.log(), persistent=False)

    def forward(self, model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@OBJECTIVES.register("softmax")
class FullSoftmax(Objective):
    """Cross-entropy over every item: exact, and affordable up to ~10^5-10^6 items."""

    def forward(self, model, hidden, targets):
        logits = hidden @ model.all_item_vectors().T
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits.float(), targets)


@OBJECTIVES.register("sampled_softmax")
class SampledSoftmax(Objective):
    """Softmax over the target + K shared negatives from q, each logit corrected by -log(K q)."""

    def forward(self, model, hidden, targets):
        negatives = torch.multinomial(self.proposal, self.num_negatives, replacement=True)
        pos = (hidden * model.encode_items(targets)).sum(-1, keepdim=True)
        neg = hidden @ model.encode_items(negatives).T
        log_kq = torch.log(self.num_negatives * self.proposal)
        pos = pos - log_kq[targets].unsqueeze(-1)
        neg = neg - log_kq[negatives].unsqueeze(0)
        neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))  # accidental hits
        logits = torch.cat([pos, neg], dim=1).float()
        return F.cross_entropy(logits, torch.zeros_like(targets))


@OBJECTIVES.register("bce")
class BinaryCrossEntropy(Objective):
    """Logistic loss: target vs K uniform negatives per position (SASRec's and TransRec's choice)."""

    def forward(self, model, hidden, targets):
        negatives = torch.randint(1, self.num_items + 1, (len(targets), self.num_negatives), device=targets.device)
        pos = (hidden * model.encode_items(targets)).sum(-1)
        neg = (hidden.unsqueeze(1) * model.encode_items(negatives)).sum(-1)
        valid = (negatives != targets.unsqueeze(1)).float()
        neg_loss = (F.softplus(neg.float()) * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        return (F.softplus(-pos.float()) + neg_loss).mean()


@OBJECTIVES.register("inbatch")
class InBatchSoftmax(Objective):
    """Softmax over the distinct targets of the batch, with logQ popularity debiasing."""

    def forward(self, model, hidden, targets):
        candidates, labels = torch.unique(targets, return_inverse=True)
        logits = hidden @ model.encode_items(candidates).T - self.log_popularity[candidates].unsqueeze(0)
        return F.cross_entropy(logits.float(), labels)


def create_objective(name: str, item_counts: torch.Tensor, num_negatives: int) -> Objective:
    if num_negatives < 1:
        raise ConfigError(f"train.num_negatives must be >= 1, got {num_negatives}")
    return OBJECTIVES.create(name, item_counts=item_counts, num_negatives=num_negatives)
