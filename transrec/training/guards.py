"""Refuse obviously impossible memory settings before training or evaluation starts.

An out-of-memory crash an hour in (or a machine that swaps itself to a standstill) says nothing
about which setting to change. The two tensors that grow with the catalogue are estimated up front:
the full-softmax logits (`batch x positions x items`) and the evaluator's score chunk
(`users x items per chunk`). Either one over half the free memory is a `ConfigError` that names
the setting. The estimate is a lower bound (float32, no gradients or activations), so it only
catches settings that cannot work, never ones that merely might not.
"""

from __future__ import annotations

import os

import torch

from transrec.errors import ConfigError

FLOAT_BYTES = 4
MEMORY_SHARE = 0.5  # of the free memory, the most one of these tensors may take


def available_memory(device: torch.device | str | None = None) -> int:
    """Free bytes on `device`: GPU memory for CUDA, else free RAM (psutil if installed, else sysconf)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(cfg, num_items: int, train: bool = True, limit: int | None = None,
                 device: torch.device | str | None = None) -> None:
    """Raise `ConfigError` if the full-softmax logits or an evaluation chunk cannot fit in `limit`
    bytes (default: `MEMORY_SHARE` of `available_memory(device)`)."""
    if limit is None:
        limit = int(MEMORY_SHARE * available_memory(device))
    rows = num_items + 1  # scores include the padding row
    if train and cfg.train.objective == "softmax":
        need = cfg.train.batch_size * cfg.data.max_len * rows * FLOAT_BYTES
        if need > limit:
            raise ConfigError(
                f"train.objective=softmax scores every item at every position: train.batch_size={cfg.train.batch_size}"
                f" x data.max_len={cfg.data.max_len} x {rows:,} items x 4 bytes = {_size(need)} of logits, over the "
                f"{_size(limit)} available; use train.objective=sampled_softmax (or lower train.batch_size)")
    chunk = min(cfg.eval.chunk_size, rows)
    need = cfg.eval.batch_size * chunk * FLOAT_BYTES
    if need > limit:
        fit = max(1, limit // (cfg.eval.batch_size * FLOAT_BYTES))
        raise ConfigError(
            f"evaluation scores eval.batch_size={cfg.eval.batch_size} users x {chunk:,} items per chunk x 4 bytes "
            f"= {_size(need)}, over the {_size(limit)} available; lower eval.chunk_size (e.g. eval.chunk_size={fit}) "
            f"or eval.batch_size")
