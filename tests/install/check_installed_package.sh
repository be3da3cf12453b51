#!/usr/bin/env bash
# The installed package, as a user gets it: `cmake --install` of the build
# tree into a fresh prefix; examples/embed built against it twice, through
# find_package(Switchyard) in a build tree of its own and through
# pkg-config; each run on 2 ranks (forward and backward of one layer of a
# random checkpoint) and compared bit for bit with the installed
# `switchyard forward` on the same tokens.
#   tests/install/check_installed_package.sh BUILD_DIR PYTHON
set -euo pipefail
build=$(cd "$1" && pwd)
python=$2
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

cmake --install "$build" --prefix "$work/prefix" > /dev/null
cmake -S "$src/examples/embed" -B "$work/embed" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release \
  > "$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/embed" -j2 > "$work/build.log" || { cat "$work/build.log"; exit 1; }
# shellcheck disable=SC2046  # pkg-config's flags are meant to split
g++ -O2 -o "$work/embed_pc" "$src/examples/embed/embed_moe_layer.cpp" \
  $(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs switchyard)

cd "$work"
"$build/examples/make_random_moe" --out m --arch qwen2_moe --hidden 32 --ffn 24 --experts 6 --top-k 2 --tokens 40 \
  --seed 5 > /dev/null
"$python" -c "import numpy as np; np.save('g.npy', np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32))"
mpirun --oversubscribe -np 2 prefix/bin/switchyard forward --model m --layer 1 --input m/x.npy --output y.npy \
  --grad-output g.npy --grads grads.safetensors --quiet
for program in embed/embed_moe_layer embed_pc; do
  rm -f y_embed.npy dx_embed.npy
  mpirun --oversubscribe -np 2 "$program" m 1 m/x.npy y_embed.npy g.npy dx_embed.npy
  cmp y.npy y_embed.npy
  "$python" - <<'PY'
import numpy as np
from safetensors.numpy import load_file
dx, want = np.load("dx_embed.npy"), load_file("grads.safetensors")["hidden_states"]
assert dx.tobytes() == want.tobytes(), f"dL/dx differs from switchyard forward's: max {np.abs(dx - want).max()}"
PY
  echo "check-installed-package: $program: output and dL/dx equal switchyard forward's"
done
