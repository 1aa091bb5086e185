#!/usr/bin/env bash
# A separate virtual environment for RecBole 1.2.1 (benchmarks/recbole_compare.py runs it), so its
# pinned dependencies never touch transrec's. RecBole's files are never edited; what it needs on
# current packages comes from pins here:
#   numpy<2                  RecBole uses np.float_ (removed in numpy 2)
#   setuptools>=77.0.3,<81   its quick-start imports ray, which imports pkg_resources (removed in
#                            setuptools 81); torch 2.14.1 itself requires setuptools>=77.0.3, so the
#                            older advice "setuptools<70" cannot be met next to this torch
#   pandas<2.2               RecBole's dataset code predates pandas 2.2
#   ray<=2.6.3               RecBole's own pin
# torch==2.14.1 comes from the machine's local wheel cache (the same build transrec uses).
# At run time set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: RecBole's checkpoints pickle its Config object,
# which torch >= 2.6 refuses to load by default.
# Usage: bash scripts/recbole_env.sh [VENV_DIR]   (default .venv-recbole, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-recbole}"
[ -x "$VENV/bin/python" ] || python -m venv "$VENV"
pip_install() {  # quiet; drops pip's notes about local index folders that lack a package
  "$VENV/bin/python" -m pip --disable-pip-version-check install --quiet "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
pip_install "torch==2.14.1"
pip_install "torch==2.14.1" "recbole==1.2.1" "numpy<2" "setuptools>=77.0.3,<81" "pandas<2.2" "ray<=2.6.3"
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$VENV/bin/python" - <<'PY'
import numpy, pandas, torch, recbole
from recbole.quick_start import run_recbole  # imports ray, which imports pkg_resources
from recbole.model.sequential_recommender import SASRec, GRU4Rec, NextItNet
print(f"RecBole {recbole.__version__}: torch {torch.__version__}, numpy {numpy.__version__}, pandas {pandas.__version__}")
PY
