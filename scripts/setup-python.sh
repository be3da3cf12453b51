#!/usr/bin/env bash
# The Python reference environment of the tests and benchmarks, from PyPI, in $SWITCHYARD_VENV
# (default /opt/switchyard/venv): torch (CPU use of PyPI's wheel), transformers, safetensors, numpy,
# pytest, matplotlib, pinned in scripts/python-requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SWITCHYARD_VENV:-/opt/switchyard/venv}"
requirements=scripts/python-requirements.txt
stamp="$venv/.switchyard-requirements"
check='import torch, transformers, safetensors, numpy, pytest, matplotlib; torch.ones(2) @ torch.ones(2)'
if cmp -s "$requirements" "$stamp" && "$venv/bin/python" -c "$check" 2>/dev/null; then exit 0; fi
echo "setup: creating the Python reference environment in $venv"
rm -rf "$venv"
python3 -m venv "$venv"
# --no-deps: the list is complete; it leaves out torch's GPU-only dependencies on purpose.
"$venv/bin/pip" install -q --no-deps -r "$requirements"
"$venv/bin/python" -c "$check" || { echo "setup: error: the Python environment in $venv does not import" >&2; exit 1; }
cp "$requirements" "$stamp"
