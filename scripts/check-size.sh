#!/usr/bin/env bash
# Fails if a C++ source or header of the library, the program or the examples is past the size rule
# of docs/testing.md: a file over 800 lines, a function over 60 lines of code (lizard's NLOC: comment
# and blank lines do not count) or over 8 parameters. One line per offender, `path:line: ...`.
# tests/ and bench/ are measured too and printed as notes, never failing: a test body reads top to
# bottom beside the expected values derived by hand in it, and a benchmark's main is its table.
# Functions are measured by lizard (pinned in scripts/python-requirements.txt), run by the Python of
# the reference environment ($SWITCHYARD_VENV, default /opt/switchyard/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${SWITCHYARD_VENV:-/opt/switchyard/venv}/bin/python"
if ! "$python" -c 'import lizard' 2>/dev/null; then
  echo "check-size: error: lizard is not installed in ${python%/bin/python} (scripts/setup.sh --test installs it)" >&2
  exit 1
fi
"$python" - <<'EOF'
import os
import subprocess
import sys

import lizard

ENFORCED = ["runtime", "comm", "kernels", "layers", "launch", "examples"]
REPORTED = ["tests", "bench"]
PATTERNS = ["*.cpp", "*.hpp", "*.h", "*.cc", "*.cu", "*.cuh"]
MAX_FILE_LINES, MAX_FUNCTION_NLOC, MAX_PARAMETERS = 800, 60, 8


def sources(dirs):
    # Tracked and new files, not ignored ones (build trees).
    pathspecs = [f"{d}/{p}" for d in dirs for p in PATTERNS]  # "*" spans folders
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *pathspecs],
                         check=True, capture_output=True, text=True).stdout
    return sorted(p for p in set(out.split()) if os.path.isfile(p))


def display_name(fn):
    # GoogleTest bodies are all called TEST/TEST_F/TEST_P: name the test.
    if fn.name.startswith("TEST"):
        return fn.long_name.replace(" ", "")
    return fn.name


def offenders(path):
    with open(path, encoding="utf-8") as f:
        code = f.read()
    lines = code.count("\n") + (0 if code.endswith("\n") or not code else 1)
    if lines > MAX_FILE_LINES:
        yield f"{path}: file: {lines} lines (limit {MAX_FILE_LINES})"
    # NOTE: lizard picks its C/C++ reader for any extension it does not know (.cu, .cuh).
    for fn in lizard.analyze_file.analyze_source_code(path, code).function_list:
        if fn.nloc > MAX_FUNCTION_NLOC:
            yield f"{path}:{fn.start_line}: function {display_name(fn)}: {fn.nloc} lines (limit {MAX_FUNCTION_NLOC})"
        if fn.parameter_count > MAX_PARAMETERS:
            yield (f"{path}:{fn.start_line}: function {display_name(fn)}: {fn.parameter_count} parameters "
                   f"(limit {MAX_PARAMETERS})")


enforced = sources(ENFORCED)
failures = [line for path in enforced for line in offenders(path)]
reported = sources(REPORTED)
notes = [line for path in reported for line in offenders(path)]
for line in failures:
    print(line)
for line in notes:
    print(f"note: {line}")
print(f"check-size: {len(enforced)} files checked, {len(failures)} over the limits; "
      f"{len(reported)} files of {' and '.join(REPORTED)} measured, {len(notes)} over (not enforced)")
sys.exit(1 if failures else 0)
EOF
