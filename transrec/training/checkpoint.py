"""Crash-safe training state: accelerate's `save_state` into a temp folder, then an atomic rename.

A partially written checkpoint is never picked up on resume: only a folder that reached its
final name (with `trainer_state.json` written last inside it) counts.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors.torch import load_file, save_file

LATEST = "latest"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    epoch: int = 0  # epoch in progress (0-based)
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    global_step: int = 0
    best_metric: float = -1.0
    best_epoch: int = -1
    bad_evals: int = 0
    elapsed_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def save_checkpoint(accelerator, checkpoint_dir: Path, state: TrainerState) -> None:
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / LATEST
    tmp = checkpoint_dir / f".{LATEST}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
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


def load_checkpoint(accelerator, path: Path) -> TrainerState:
    accelerator.load_state(str(path))
    return TrainerState(**json.loads((Path(path) / STATE_FILE).read_text()))


def save_weights_atomic(state_dict: dict, path: Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(path: Path) -> dict:
    return load_file(str(path))
