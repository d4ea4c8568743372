#!/usr/bin/env bash
# A separate environment with verl and OpenRLHF, for tests/rewards/test_rl_engines.py: failtune's
# reward files loaded and called by the engines' own code. Not the project's .venv: verl pins
# transformers below 5.11 and OpenRLHF needs flash-attn, which does not build without CUDA, so
# OpenRLHF goes in without its dependencies (the reward path it exercises needs none of them).
#   bash scripts/setup_rl_engines.sh [DIR]      (default .venv-rl; about 25 minutes on 2 cores)
#   FAILTUNE_RL_PYTHON=DIR/bin/python .venv/bin/python -m pytest tests/rewards/test_rl_engines.py
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-.venv-rl}"
[ -x "$target/bin/python" ] || "${PYTHON:-python3}" -m venv "$target"
pip() { "$target/bin/python" -m pip "$@" --quiet --disable-pip-version-check; }
# torch first and pinned, as in setup.sh: verl's own requirement would admit a CUDA build.
"$target/bin/python" -c "import torch" 2>/dev/null || pip install "torch==${TORCH_VERSION:-2.13.0}"
pip install "verl==0.9.1"
pip install --no-deps "openrlhf==0.11.2"
# What failtune's grading path imports (failtune itself comes from the test's PYTHONPATH).
pip install "math-verify>=0.9,<0.10" "gguf>=0.19,<0.20" "trl>=1.16,<2" scipy pyyaml openai \
  matplotlib rich
