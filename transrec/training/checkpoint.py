"""Crash-safe training state: accelerate's `save_state` into a temp folder, then an atomic rename.

A partially written checkpoint is never picked up on resume: only a folder that reached its
final name (with `trainer_state.json` written last inside it) counts.

The best weights so far travel inside each checkpoint (a hard link, so no copy): `best_model.safetensors`
of the run folder is written on improvement, before the checkpoint that records the improvement, so
a kill in between would otherwise pair a new best file with an old trainer state. Resume restores
the checkpoint's copy, which always matches its state.

Frozen parameters (`requires_grad=False`: a content model's pretrained backbone, PeterRec's
backbone) are left out of both files: they never change during a run, and a resumed run rebuilds
them exactly as the run began (the same pretrained weights or source model, the same seed). A
frozen MiniLM is ~87 MB, so a content run folder no longer holds three copies of it, only the one
in `model/` (the shareable, self-contained checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from transrec.errors import CheckpointError

LATEST = "latest"
STATE_FILE = "trainer_state.json"
BEST_NAME = "best_model.safetensors"


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    epoch: int = 0  # epoch in progress (0-based)
    step_in_epoch: int = 0  # batches done in that epoch (what `skip_first_batches` skips on resume)
    global_step: int = 0
    best_metric: float = -1.0
    best_epoch: int = -1
    best_trained_metric: float = -1.0  # best validation of a trained epoch (patience; best_metric may be epoch 0's)
    bad_evals: int = 0
    elapsed_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    epoch_loss_sum: float = 0.0  # training loss summed over the epoch's batches so far
    log_rows: int = 0  # rows of log.csv written so far; a resumed run drops the ones after this


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links here (another file system, some network mounts)
        shutil.copyfile(src, dst)


def save_checkpoint(accelerator, checkpoint_dir: Path, state: TrainerState, best_weights: Path | None = None
                    ) -> None:
    """Save accelerate's state, `state` and (if given and present) the best weights file atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / LATEST
    tmp = checkpoint_dir / f".{LATEST}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank has written its RNG file into tmp before it is renamed
    if accelerator.is_main_process:
        if best_weights is not None and Path(best_weights).is_file():
            _link_or_copy(Path(best_weights), tmp / BEST_NAME)
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state)))
        old = checkpoint_dir / f".{LATEST}.old"
        if old.exists() and final.exists():  # left over by a kill during the last save: `final` is complete
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def find_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The last complete checkpoint, if any (a crash between renames leaves `.latest.old`)."""
    for name in (LATEST, f".{LATEST}.old"):
        candidate = Path(checkpoint_dir) / name
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_checkpoint(accelerator, path: Path, best_weights: Path | None = None, models: list | None = None
                    ) -> TrainerState:
    """Restore accelerate's state and return the trainer state; put the checkpoint's best weights
    back at `best_weights` (a best file written after this checkpoint is not the state's best).
    `models` (as prepared, in `prepare` order) are checked first: the checkpoint must hold exactly
    their trainable state, as `drop_frozen_weights` saved it."""
    for i, model in enumerate(models or []):
        saved = Path(path) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
        if saved.is_file():
            with safe_open(str(saved), "pt") as f:
                check_trainable_names(model, set(f.keys()), str(saved))
    accelerator.load_state(str(path), strict=False)  # frozen parameters: as rebuilt
    state = TrainerState(**json.loads((Path(path) / STATE_FILE).read_text()))
    if best_weights is not None and accelerator.is_main_process:
        best_weights, saved = Path(best_weights), Path(path) / BEST_NAME
        if saved.is_file():
            tmp = best_weights.with_suffix(".restore.tmp")
            shutil.copyfile(saved, tmp)
            os.replace(tmp, best_weights)
        elif state.best_epoch < 1 and best_weights.is_file():
            best_weights.unlink()
    accelerator.wait_for_everyone()
    return state


def frozen_names(model) -> set[str]:
    """State-dict names of `model`'s frozen parameters (the same names wrapped or not)."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def trainable_state(model) -> dict:
    """`model.state_dict()` without its frozen parameters (buffers stay: they may change)."""
    frozen = frozen_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def drop_frozen_weights(models: list, weights: list, output_dir: str) -> None:
    """accelerate `save_state` pre-hook: checkpoint each model's trainable state only."""
    for model, state in zip(models, weights):
        for name in frozen_names(model) & set(state):
            del state[name]


def check_trainable_names(model, names: set[str], where: str) -> None:
    """A saved `trainable_state` must hold exactly `model`'s non-frozen tensors (else it is another model's)."""
    expected = set(model.state_dict()) - frozen_names(model)
    missing, unexpected = expected - names, names - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not match the model (missing: {sorted(missing)[:5]}, "
                              f"unexpected: {sorted(unexpected)[:5]})")


def load_trainable_state(model, state: dict, where: str) -> None:
    """Load a `trainable_state` into `model` (its frozen parameters stay as they are)."""
    check_trainable_names(model, set(state), where)
    model.load_state_dict(state, strict=False)


def save_weights_atomic(state_dict: dict, path: Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(path: Path) -> dict:
    return load_file(str(path))
