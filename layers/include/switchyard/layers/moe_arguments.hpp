#pragma once
// What one call of the MoE layer works on: the arguments of its forward and
// backward, the schedule that cuts a step into pieces, and the shape of the
// workspace initialize() sizes (docs/operator-protocol.md).
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/runtime/phase_timer.hpp"
#include "switchyard/runtime/task_graph.hpp"

namespace switchyard::layers {

class MoeForwardContext;

/// How a step is cut into pieces and run. Results are bitwise the same for
/// every schedule (docs/task-graph.md) as long as no expert has a capacity:
/// a capacity applies per chunk.
struct StepSchedule {
  int chunks = 1;  // contiguous token chunks, each routed, exchanged and computed as its own pieces
  // On: the step's task graph runs on `executor` (exchanges on its ordered
  // communication thread, compute on its workers), so chunk c+1's dispatch
  // and chunk c-1's combine overlap chunk c's experts. Off: the same graph
  // strictly in sequence on the calling thread.
  bool overlap = false;
  // Required with overlap; when given with overlap off, it runs the sequence
  // (so its observers, e.g. a trace, see both).
  Executor* executor = nullptr;
  // Rows travel as bf16 (half the bytes; compute stays float32): every
  // exchanged row, forward and backward, is rounded to bf16 once.
  bool wire_bf16 = false;
};

/// What one forward call saw, summed over all ranks.
struct ForwardStats {
  std::int64_t num_tokens = 0;            // all ranks
  std::vector<std::int64_t> expert_load;  // [E] slots routed to each expert
  std::int64_t num_dropped = 0;           // slots dropped by capacity
  double aux_loss = 0.0;                  // unscaled load-balancing loss (same on every rank)
  double z_loss = 0.0;                    // unscaled router z-loss (same on every rank)
  double topology_loss = 0.0;             // unscaled topology loss; 0 without RouterConfig::link_cost
  double entropy_loss = 0.0;              // mean entropy of the router's softmax probabilities
  // Noisy gating's CV(importance)^2 and CV(load)^2 (0 without noise).
  double importance_loss = 0.0, load_loss = 0.0;
  // Tokens by the number of experts they use, [top_k + 1]: all at top_k
  // unless the router is top-p (RouterConfig::top_p).
  std::vector<std::int64_t> experts_per_token;
  // Gate mass: the router's scores (softmax probabilities, or sigmoid
  // scores) summed over every token's chosen experts, and over its k
  // highest scores (no bias, limit or penalty). Their ratio is the share of
  // the unconstrained gate mass that routing kept (gate_mass_kept()).
  double gate_mass = 0.0, gate_mass_top_k = 0.0;

  double gate_mass_kept() const { return gate_mass_top_k > 0 ? gate_mass / gate_mass_top_k : 1.0; }
  /// Mean experts per token (top_k unless top-p).
  double mean_experts_per_token() const {
    std::int64_t slots = 0, tokens = 0;
    for (std::size_t k = 0; k < experts_per_token.size(); ++k) {
      slots += static_cast<std::int64_t>(k) * experts_per_token[k];
      tokens += experts_per_token[k];
    }
    return tokens ? static_cast<double>(slots) / static_cast<double>(tokens) : 0.0;
  }
};

/// One forward: y[T, H] = MoE(x[T, H]) for this rank's `num_tokens` rows.
struct MoeForwardArguments {
  const float* x = nullptr;  // [num_tokens, hidden]; must stay unchanged until a backward returns
  std::int64_t num_tokens = 0;
  float* y = nullptr;  // [num_tokens, hidden]
  // Training: keeps what the backward needs (and its workspace). Null: an
  // inference call on the layer's own workspace.
  MoeForwardContext* context = nullptr;
  ForwardStats* stats = nullptr;  // filled when given (loads, drops, aux losses over all ranks)
  PhaseTimer* timer = nullptr;    // busy time per kind of task added when given
  StepSchedule schedule{};
  // Noisy gating (MoeLayerOptions::noisy_gating): draw this training step's
  // noise, keyed by `noise_key` (e.g. the step number). Every rank must
  // pass the same. Without it the router is noise-free (evaluation).
  bool gating_noise = false;
  std::uint64_t noise_key = 0;
};

/// One backward, after a forward that kept `context`.
struct MoeBackwardArguments {
  MoeForwardContext* context = nullptr;  // the forward's
  const float* grad_y = nullptr;         // [num_tokens, hidden] dL/dy
  float* grad_x = nullptr;               // [num_tokens, hidden] dL/dx, written
  PhaseTimer* timer = nullptr;
  StepSchedule schedule{};  // its chunk count must be the forward's
};

/// What a workspace is sized for: calls of up to `max_tokens` tokens on
/// this rank, cut into `chunks`, with (training) or without a backward.
struct MoeWorkspaceShape {
  std::int64_t max_tokens = 0;
  int chunks = 1;
  bool training = false;
  bool wire_bf16 = false;
};

/// What is wrong with a call's arguments: the argument's name (as the
/// library spells it, e.g. "schedule.chunks") and the problem, or nothing.
struct ArgumentCheck {
  std::string argument;
  std::string problem;
  bool ok() const { return argument.empty(); }
  std::string message() const { return argument + ": " + problem; }
};

}  // namespace switchyard::layers
