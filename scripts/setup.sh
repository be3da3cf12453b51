#!/usr/bin/env bash
# Installs what Switchyard needs on Debian 12. Run as root (or with sudo); no terminal needed.
#   scripts/setup.sh           build and run: compiler, CMake, Open MPI, oneDNN, JSON and CLI headers, Boost.Stacktrace,
#                              hwloc
#   scripts/setup.sh --test    also what the test suite needs: GoogleTest, clang-format, iproute2 (emulated
#                              cluster), munge and Slurm (a real Slurm cluster on it), fortunes (training corpus), and the Python reference environment
#                              (CPU-only torch, transformers, safetensors, numpy, pytest, matplotlib) in
#                              $SWITCHYARD_VENV (default /opt/switchyard/venv)
#   scripts/setup.sh --bench   also what bench/ compares against: OpenBLAS and BLIS (bench/gemm_libraries)
#                              and the Python environment (PyTorch baseline, plots)
# Every package is named: nothing relies on apt's recommends or on what a machine happens to have.
set -euo pipefail
cd "$(dirname "$0")/.."

# ocl-icd-opencl-dev: Debian's dnnl-config.cmake calls find_package(OpenCL) (libdnnl-dev only recommends it).
# libboost-stacktrace1.81-dev: the stack trace below an internal error (runtime/src/error.cpp).
# libhwloc-dev, pkg-config: each rank's cores and NUMA node (comm/src/topology_probe.cpp), found through pkg-config.
# libxxhash-dev: checksums of checkpoint and gradient files (layers/formats/src/checksum.cpp), through pkg-config.
run_packages=(g++ make cmake openmpi-bin libopenmpi-dev libdnnl-dev ocl-icd-opencl-dev
              nlohmann-json3-dev libboost-json1.81-dev libboost-stacktrace1.81-dev libcli11-dev
              libhwloc-dev pkg-config libxxhash-dev)
test_packages=(libgtest-dev clang-format iproute2 util-linux fortunes python3 python3-venv)
# clang-14, libclang-rt-14-dev: the libFuzzer harnesses of fuzz/ (scripts/fuzz-smoke.sh, bench/fuzz.sh).
test_packages+=(clang-14 libclang-rt-14-dev)
# A real Slurm cluster across the emulated nodes (launch/slurm/emulated-slurm, tests/cluster/test_slurm.py);
# slurm-wlm-basic-plugins holds the PMIx plugin that srun --mpi=pmix loads.
slurm_packages=(munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins)
# The plots of launch/scaling-study. python3-munkres: python3-fonttools (under
# matplotlib) needs python3-scipy or python3-munkres, and apt would otherwise
# pick scipy, whose python3-pythran wants libboost1.74-dev, which conflicts
# with the libboost1.81-dev installed above.
plot_packages=(python3-munkres python3-matplotlib)
bench_packages=(pkg-config libopenblas-dev libblis-dev)

groups=(run_packages)
python=0
for arg in "$@"; do
  case $arg in
    --test) groups+=(test_packages slurm_packages plot_packages); python=1 ;;
    --bench) groups+=(bench_packages plot_packages); python=1 ;;
    *) echo "setup: error: unknown argument '$arg' (expected --test or --bench)" >&2; exit 2 ;;
  esac
done

# NOTE: one apt-get call per group, so that one group's choices among
# alternatives cannot send apt's resolver into another's conflicts.
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
updated=0
for group in "${groups[@]}"; do
  declare -n packages=$group
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || continue
  echo "setup: installing ${missing[*]}"
  ((updated)) || { $SUDO apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
done

((python)) && scripts/setup-python.sh
exit 0
