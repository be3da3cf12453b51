#!/usr/bin/env bash
# Installs what Switchyard needs on Debian 12. Run as root (or with sudo).
#   scripts/setup.sh            C++ build and run dependencies (Debian packages)
#   scripts/setup.sh --python   also the Python reference environment (torch CPU,
#                               transformers, safetensors, numpy, pytest from PyPI)
#                               in $SWITCHYARD_VENV (default /opt/switchyard/venv)
set -euo pipefail

packages=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libdnnl-dev libhwloc-dev
          nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
          libopenblas-dev libblis-dev
          python3 python3-venv iproute2 util-linux clang-format fortunes)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ "${1:-}" == "--python" ]]; then
  venv="${SWITCHYARD_VENV:-/opt/switchyard/venv}"
  if ! "$venv/bin/python" -c "import torch, transformers, safetensors, numpy, pytest, matplotlib" 2>/dev/null; then
    echo "setup: creating the Python reference environment in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q torch transformers safetensors numpy pytest matplotlib
  fi
fi
