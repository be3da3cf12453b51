#!/usr/bin/env bash
# The Python reference environment of the tests and benchmarks, from PyPI, in $SWITCHYARD_VENV
# (default /opt/switchyard/venv): torch, transformers, safetensors, numpy, pytest, matplotlib.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SWITCHYARD_VENV:-/opt/switchyard/venv}"
check='import torch, transformers, safetensors, numpy, pytest, matplotlib'
"$venv/bin/python" -c "$check" 2>/dev/null && exit 0
echo "setup: creating the Python reference environment in $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch transformers safetensors numpy pytest matplotlib
"$venv/bin/python" -c "$check"
