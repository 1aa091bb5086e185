"""Training objectives over (hidden state, target item) pairs.

Every objective takes the model (to encode candidate items), hidden states `[N, d]` and
target item indices `[N]` (already stripped of padding) and returns a scalar loss.
"""

from __future__ import annotations

from collections.abc import Callable

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


# ---------------------------------------------------------------- sequence-level contrastive (CLUE)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each shard the sum, over processes, of its rows' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every process's loss depends on every shard
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's `x` concatenated in rank order, and the row where this process's `x` starts.

    Gradients flow back to every shard (the backward all-reduces the gathered gradient and keeps this
    shard's rows, like `torch.distributed.nn.functional.all_gather`, whose gloo path needs all_to_all
    and which torch deprecates), so other processes' users are negatives and, with DDP's gradient
    averaging, training follows the global batch's loss. Shards must have equal sizes (accelerate's
    even batches). Without a process group (one process): `x` itself, offset 0.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return _GatherWithGrad.apply(x), dist.get_rank() * x.shape[0]


Gather = Callable[[torch.Tensor], tuple[torch.Tensor, int]]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2, gather: Gather = gather_with_grad
            ) -> torch.Tensor:
    """SimCLR's NT-Xent over the views z1 [b, k], z2 [b, k] of b users (row i of both: one user).

    Each of the 2b local views is an anchor; its positive is the other view of its user, its
    negatives are every other view of the (gathered, global) batch; similarity is cosine / temperature.
    The mean over local anchors, so with equal shards the mean over processes is the global loss and
    DDP's gradient averaging gives the global batch's gradient. `gather(x) -> (all rows, offset)`.
    """
    b = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2], 0).float(), dim=-1)  # [2b, k]: views 1, then views 2
    every, offset = gather(local)  # [2B, k]
    with torch.autocast(device_type=local.device.type, enabled=False):  # float32 logits under mixed precision
        logits = local @ every.float().T / temperature
    rows = torch.arange(2 * b, device=local.device)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[rows, offset + rows] = True
    logits = logits.masked_fill(is_self, float("-inf"))  # an anchor is not its own negative
    positives = offset + (rows + b) % (2 * b)
    return F.cross_entropy(logits, positives)


class ProjectionHead(nn.Module):
    """MLP (Linear-ReLU-Linear) from user states to the space the contrastive loss compares in."""

    def __init__(self, dim: int, out_dim: int = 0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim or dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ContrastiveObjective(nn.Module):
    """CLUE's sequence-level InfoNCE between two views' user states, through a projection head.

    The head is used in pretraining only and lives here, not in the model: saved backbones stay
    exactly the user encoder (+ item encoder) that downstream tasks load. It has parameters, so the
    trainer gives it to the optimizer and to `accelerator.prepare` (DDP keeps its copies in sync).
    """

    def __init__(self, dim: int, temperature: float = 0.2, projection_dim: int = 0):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"train.contrastive_temperature must be > 0, got {temperature}")
        if projection_dim < 0:
            raise ConfigError(f"train.contrastive_projection_dim must be >= 0, got {projection_dim}")
        self.temperature = temperature
        self.head = ProjectionHead(dim, projection_dim)

    def forward(self, users1: torch.Tensor, users2: torch.Tensor, gather: Gather = gather_with_grad) -> torch.Tensor:
        return nt_xent(self.head(users1), self.head(users2), self.temperature, gather)


def contrastive_loss(model: nn.Module, contrastive: nn.Module, batch: dict[str, torch.Tensor],
                     next_item: nn.Module | None = None, weight: float = 1.0) -> torch.Tensor:
    """The training loss of a contrastive batch (`ContrastiveCollator`): InfoNCE between the user
    states after the last real item of both views, plus — when `next_item` is an objective — the
    next-item loss of the original windows, with the InfoNCE weighted by `weight`.

    Both views go through `model` in one call (one DDP forward; dropout still differs per row, which
    is what the `dropout` augmentation relies on). `model` and `contrastive` may be DDP-wrapped."""
    b = batch["view1"].shape[0]
    users = model(torch.cat([batch["view1"], batch["view2"]], 0))[:, -1]
    loss = contrastive(users[:b], users[b:])
    if next_item is None:
        return loss
    return model(batch["items"], batch["targets"], next_item) + weight * loss
