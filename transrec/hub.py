"""Save / load recommenders in `save_pretrained` format, with a model card and the item vocabulary.

A model folder holds `config.json` (constructor arguments + `model_type`), `model.safetensors`,
`README.md` (model card: data, protocol, metrics of the run) and `item_ids.json` (external item
ids in index order, so recommendations come back as the user's own ids).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from transrec.errors import CheckpointError, ConfigError

ITEM_IDS_NAME = "item_ids.json"

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A `transrec` {{ model_desc }} trained on **{{ dataset }}**.

## Use
```python
from transrec.hub import load_model
model = load_model("{{ repo_or_path }}")
```
or `transrec evaluate --model {{ repo_or_path }} --config CONFIG.yaml`.

## Data
{{ data_desc }}

## Evaluation protocol
{{ protocol }}

## Metrics (this run)
{{ metrics_table }}

## Training
{{ training_desc }}
"""


def protocol_text(eval_cfg) -> str:
    if eval_cfg.protocol == "full":
        masked = ("items the user already interacted with are excluded from the candidates (the target "
                  "stays rankable)" if eval_cfg.exclude_history else
                  "already-seen items are NOT excluded (RecBole's sequential full-ranking mode)")
        return ("Leave-one-out by time: per user the last item is test, the one before validation, the rest "
                "training. Model selection on validation NDCG@10; test read once. Exact full ranking over all "
                f"items (ties counted pessimistically); {masked}.")
    return (f"LEGACY sampled protocol: target ranked against {eval_cfg.num_negatives} random negatives "
            "(2020-era papers). Not comparable to full-ranking numbers.")


def metrics_markdown(metrics: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(metrics.values())).keys()) if metrics else []
    lines = ["| split | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for split, values in metrics.items():
        lines.append(f"| {split} | " + " | ".join(f"{values.get(n, float('nan')):.4f}" for n in names) + " |")
    return "\n".join(lines)


def save_model(model: nn.Module, out_dir: str | Path, item_ids: list[str], card: dict[str, Any] | None = None) -> Path:
    """`save_pretrained` + item vocabulary + model card, written into a temp folder then renamed."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    card = dict(card or {})
    model.save_pretrained(tmp)
    if hasattr(model, "export_assets"):
        model.export_assets(tmp)
    (tmp / ITEM_IDS_NAME).write_text(json.dumps(item_ids))
    data = ModelCardData(library_name="transrec", tags=["transrec", "recommendation", "sequential-recommendation"],
                         license="apache-2.0")
    ModelCard.from_template(data, template_str=CARD_TEMPLATE, title=card.pop("title", "transrec model"),
                            repo_or_path=card.pop("repo_or_path", str(out_dir)), **_card_defaults(card)
                            ).save(tmp / "README.md")
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def _card_defaults(card: dict[str, Any]) -> dict[str, Any]:
    defaults = {"model_desc": "sequential recommender", "dataset": "unknown data", "data_desc": "-",
                "protocol": "-", "metrics_table": "-", "training_desc": "-"}
    defaults.update(card)
    return defaults


def resolve_model_dir(path_or_repo: str | Path) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded (or read from the cache offline)."""
    path = Path(path_or_repo)
    if path.is_dir():
        return path
    if path.exists() or str(path_or_repo).startswith((".", "/")) or str(path_or_repo).count("/") != 1:
        raise CheckpointError(f"model folder not found: {path_or_repo}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(path_or_repo), allow_patterns=["*.json", "*.safetensors", "*.md", "*.txt"]))
    except LocalEntryNotFoundError:
        raise CheckpointError(f"{path_or_repo}: not a local folder and not in the Hub cache "
                              f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})") from None
    except Exception as err:
        raise CheckpointError(f"{path_or_repo}: cannot fetch from the Hub: {err}") from None


def load_model(path_or_repo: str | Path, allow_pickle: bool = False, fresh: bool = False) -> nn.Module:
    """Rebuild the model named by `config.json` and load its safetensors weights strictly.

    A folder with pickled weights only (`pytorch_model.bin`) is refused unless `allow_pickle=True`
    (then read with `torch.load(weights_only=True)`, local folders only). Config keys the model class
    does not take are an error, not silently dropped: they mean another library or version wrote it."""
    from transrec.models.recommender import MODEL_TYPES

    folder = resolve_model_dir(path_or_repo)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: no config.json (not a transrec model folder)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: invalid JSON: {err}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(f"{config_path}: unknown model_type {model_type!r} (known: {sorted(MODEL_TYPES)})")
    import inspect

    accepted = inspect.signature(MODEL_TYPES[model_type].__init__).parameters
    unknown = [k for k in config if k not in accepted]
    if unknown:
        raise CheckpointError(f"{config_path}: unknown config key(s) {', '.join(map(repr, unknown))} for model_type "
                              f"{model_type!r} (accepted: {', '.join(k for k in accepted if k != 'self')})")
    kwargs = {}
    if config.get("item_encoder_args"):  # content encoders rebuild tokenizer/transform from the saved assets
        kwargs["item_encoder_args"] = {**config["item_encoder_args"], "assets_dir": str(folder)}
    try:  # never trust_remote_code: only transrec's own classes are built, from their registries
        if fresh:  # the architecture only, randomly initialised (transfer's from-scratch reference)
            return MODEL_TYPES[model_type](**({k: v for k, v in config.items() if k in accepted} | kwargs))
        return MODEL_TYPES[model_type].from_pretrained(str(folder), allow_pickle=allow_pickle, **kwargs)
    except (TypeError, ValueError, OverflowError, RuntimeError, ConfigError) as err:
        raise CheckpointError(f"{config_path}: config does not fit {model_type}: {err}") from None


def load_item_ids(path_or_repo: str | Path) -> list[str]:
    folder = resolve_model_dir(path_or_repo)
    path = folder / ITEM_IDS_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {ITEM_IDS_NAME} (the model's item vocabulary)")
    return json.loads(path.read_text())
