#!/usr/bin/env bash
# Install transrec with its test extras, plus RecBole's wheel without dependencies (it ships the
# MovieLens-100k files our importer reads). torch 2.14.1 / torchvision 0.29.1 come from the
# machine's local wheel cache on the project's machines.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
python -m pip install --quiet --disable-pip-version-check --no-deps "recbole==1.2.1"
python -c "import transrec, torch, accelerate; print(f'transrec {transrec.__version__}, torch {torch.__version__}, accelerate {accelerate.__version__}')"
