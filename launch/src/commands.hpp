#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "switchyard/comm/communicator.hpp"

namespace switchyard::launch {

struct ForwardOptions {
  std::string model_dir;
  std::int64_t layer = -1;
  std::string input;
  std::string output;
  double capacity_factor = 0.0;
  std::string grad_output;  // dL/dy .npy: also run the backward
  std::string grads;        // where to write the gradients (safetensors)
  double aux_loss_coef = 0.0;
  double z_loss_coef = 0.0;
  bool quiet = false;
};

struct InspectOptions {
  std::string model_dir;
};

void add_forward_options(CLI::App& sub, ForwardOptions* opts);
void add_inspect_options(CLI::App& sub, InspectOptions* opts);

/// `switchyard forward`: collective over `comm`.
void run_forward(const ForwardOptions& opts, comm::Communicator& comm);
/// `switchyard inspect`: rank 0 prints; other ranks only agree on errors.
void run_inspect(const InspectOptions& opts, comm::Communicator& comm);

}  // namespace switchyard::launch
