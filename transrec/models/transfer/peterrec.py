"""PeterRec (Yuan et al., SIGIR'20): model patches, and which parameters each fine-tuning mode trains.

A model patch is a bottleneck residual MLP `x + W_up(act(W_down x))` (bottleneck d/4 by default).
It goes **serially** after a sublayer (`y = f(x); y + P(y)`) or **in parallel** beside it
(`f(x) + P(x)`), at every site a user encoder lists in `patch_sites()`: each dilated convolution of
NextItNet, each attention and feed-forward sublayer of a transformer (SASRec, the bidirectional
TransRec encoder). Patches attach with forward hooks, so the backbone's modules, state-dict keys and
tensors stay exactly as pretrained: one backbone file serves every task, and each task stores only
its own tensors. `W_up` starts at zero and the task's layer norms start as copies of the pretrained
ones, so a freshly patched model computes exactly what the pretrained one did.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from transrec.errors import ConfigError

PLACEMENTS = ("serial", "parallel")
MODES = ("scratch", "fine_all", "fine_head", "fine_last_k", "peterrec")


class Patch(nn.Module):
    """The patch's branch `W_up(act(W_down x))`; the residual is added where it is attached."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # identity at initialisation: the pretrained outputs are untouched
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.act(self.down(x)))


class PatchSet(nn.Module):
    """One patch per site of a user encoder, attached by forward hooks, plus the task's own copies of
    the encoder's layer norms (the paper re-learns them): a hook replaces each pretrained norm's output
    with the task copy's, so the backbone's tensors are never modified, not even in memory."""

    def __init__(self, user_encoder: nn.Module, dim: int, placement: str = "serial", bottleneck: int = 0,
                 task_norms: bool = True):
        super().__init__()
        if placement not in PLACEMENTS:
            raise ConfigError(f"downstream.patch must be one of {PLACEMENTS}, got {placement!r}")
        if not hasattr(user_encoder, "patch_sites"):
            raise ConfigError(f"{type(user_encoder).__name__} has no patch sites; PeterRec patches go into "
                              "nextitnet, sasrec and bidirectional user encoders")
        self.placement = placement
        self.bottleneck = bottleneck or max(1, dim // 4)
        sites = user_encoder.patch_sites()
        self.patches = nn.ModuleDict({name.replace(".", "_"): Patch(dim, self.bottleneck) for name in sites})
        self._handles = [site.register_forward_hook(self._hook(self.patches[name.replace(".", "_")]))
                         for name, site in sites.items()]
        norms = {name.replace(".", "_"): m for name, m in user_encoder.named_modules() if isinstance(m, nn.LayerNorm)}
        self.norms = nn.ModuleDict({k: copy.deepcopy(m) for k, m in norms.items()} if task_norms else {})
        for key, task_norm in self.norms.items():
            self._handles.append(norms[key].register_forward_hook(self._norm_hook(task_norm)))

    def _hook(self, patch: Patch):
        serial = self.placement == "serial"

        def apply(module, args, output):
            return output + patch(output if serial else args[0])

        return apply

    @staticmethod
    def _norm_hook(task_norm: nn.LayerNorm):
        def apply(module, args, output):
            return task_norm(args[0])

        return apply

    def detach(self) -> None:
        """Remove the hooks: the backbone computes its pretrained function again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def last_blocks(user_encoder: nn.Module, k: int) -> list[nn.Module]:
    """The top `k` blocks (and a final layer norm, which sits above them)."""
    blocks = getattr(user_encoder, "blocks", None)
    if blocks is None:
        raise ConfigError(f"fine_last_k needs a user encoder with blocks; {type(user_encoder).__name__} has none")
    if not 1 <= k <= len(blocks):
        raise ConfigError(f"downstream.last_k must be in 1..{len(blocks)} (the backbone's blocks), got {k}")
    top = list(blocks)[-k:]
    final = getattr(user_encoder, "final_ln", None)
    return top + ([final] if final is not None else [])


def set_trainable(backbone: nn.Module, mode: str, last_k: int = 1, patches: PatchSet | None = None) -> None:
    """Freeze/unfreeze the backbone's parameters for a fine-tuning mode (the task head always trains).

    scratch / fine_all: everything; fine_head: nothing; fine_last_k: the top k blocks; peterrec: only
    the patch set (patches + its copies of the layer norms, as the paper re-learns them); the backbone
    is frozen whole."""
    if mode not in MODES:
        raise ConfigError(f"downstream.mode must be one of {', '.join(MODES)}, got {mode!r}")
    train_all = mode in ("scratch", "fine_all")
    for p in backbone.parameters():
        p.requires_grad_(train_all)
    if mode == "fine_last_k":
        for module in last_blocks(backbone.user_encoder, last_k):
            module.requires_grad_(True)
    if mode == "peterrec" and patches is None:
        raise ConfigError("mode peterrec needs model patches")
    if patches is not None:
        patches.requires_grad_(mode == "peterrec" or train_all)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared tensors counted once."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in module.parameters()}
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, sum(p.numel() for p in seen.values())
