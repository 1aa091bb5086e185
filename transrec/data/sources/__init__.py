"""Dataset importers, registered by name in `transrec.registry.DATASETS` for configs.

`load_source({"source": "movielens", "path": None, "variant": "ml-100k"})` calls the registered
loader with the remaining keys; a string names a source (default arguments) or a dataset folder.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from transrec.data.io import load_dataset_folder
from transrec.data.schema import RecDataset
from transrec.data.sources.movielens import load_movielens
from transrec.data.sources.peterrec_csv import (
    load_peterrec,
    load_peterrec_finetune,
    load_peterrec_pair,
    load_peterrec_pretrain,
)
from transrec.errors import ConfigError
from transrec.registry import DATASETS

__all__ = [
    "load_source",
    "load_dataset_folder",
    "load_movielens",
    "load_peterrec",
    "load_peterrec_pretrain",
    "load_peterrec_finetune",
    "load_peterrec_pair",
]


def load_source(spec: str | dict[str, Any]) -> RecDataset:
    """Load the dataset a config describes; bad keys are `ConfigError`, bad files `DataError`."""
    if isinstance(spec, (str, Path)):
        spec = {"source": str(spec)} if str(spec) in DATASETS else {"source": "folder", "path": spec}
    if not isinstance(spec, dict) or "source" not in spec:
        raise ConfigError(f"a dataset spec needs a 'source' key (one of {', '.join(DATASETS.names())}); got {spec!r}")
    kwargs = {k: v for k, v in spec.items() if k != "source"}
    loader = DATASETS.get(str(spec["source"]))
    params = inspect.signature(loader).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ConfigError(
            f"dataset source {spec['source']!r}: unknown key(s) {', '.join(unknown)} (accepted: {', '.join(params)})"
        )
    try:
        inspect.signature(loader).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"dataset source {spec['source']!r}: {e} (accepted keys: {', '.join(params)})") from None
    return loader(**kwargs)
