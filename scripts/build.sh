#!/usr/bin/env bash
# Configures and builds Switchyard into build/ (Release, -j2).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SWITCHYARD_VENV:-/opt/switchyard/venv}"
python_arg=()
[ -x "$venv/bin/python" ] && python_arg=(-DSWITCHYARD_PYTHON="$venv/bin/python")
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${python_arg[@]}" >/dev/null
cmake --build build -j2
