#!/usr/bin/env bash
# Fails if any C++ source differs from .clang-format .
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  echo "check-format: error: clang-format is not installed (scripts/setup.sh --test installs it)" >&2
  exit 1
fi
files=$(git ls-files '*.cpp' '*.hpp')
clang-format --dry-run --Werror $files
echo "check-format: $(echo "$files" | wc -w) files formatted"
