#pragma once
// Private: what a MoeForwardContext holds. The step's buffers live here and
// are sized by MoeLayer::initialize, so a step that fits its shape only
// resizes them within their capacity.
#include <cstdint>
#include <vector>

#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/moe_arguments.hpp"
#include "switchyard/layers/router.hpp"

namespace switchyard::layers::detail {

/// What one token chunk of a step keeps, from its forward tasks to its
/// backward tasks.
struct MoeChunk {
  std::int64_t begin = 0, rows = 0;  // this rank's tokens [begin, begin + rows)
  bool routed = false;               // route ran this step (not after an earlier failure)
  RoutingPlan routing;
  DispatchPlan plan;
  RouterScratch router_scratch;                  // route()'s per-token space
  std::vector<float> token_scratch;              // [3 * E] the router backward's per-token space
  std::vector<float> noisy_scratch;              // [E] noisy gating's per-token dL/d(clean logits)
  std::vector<std::int32_t> noisy_top;           // [K + 1] its top noisy logits
  std::vector<float> send;                       // [num_send, H] rows in send order; in backward dy, then dL/dx parts
  std::vector<float> recv;                       // [num_recv, H] rows as received / partial sums sent back
  std::vector<float> expert_in;                  // [num_slots, H] grouped by local expert
  std::vector<float> expert_x;                   // [num_slots, H] the same unscaled (weight_scales_input)
  std::vector<float> expert_out;                 // [num_slots, H] grouped; in backward dL/d(expert output)
  std::vector<float> saved;                      // [num_slots, saved_per_row] expert activations
  std::vector<float> combined;                   // [num_send, H] each rank's partial output, in send order
  std::vector<float> grad_in;                    // [num_slots, H] grouped dL/d(expert input)
  std::vector<float> grad_saved;                 // [num_slots, grad_saved_per_row]
  std::vector<float> entry_grad_w;               // [num_recv * K] dL/d(routing weight) by received entry
  std::vector<float> slot_grad_w;                // [num_send * K] the same, back on the token side
  std::vector<float> grad_w;                     // [rows * K] dL/d(routing weight) by slot
  std::vector<float> sum_scratch;                // [H] one node's partial sum of a token
  std::vector<float> node_in, node_out;          // forwarder's rows: [num_in, H] node rows, [num_out, H] rank rows
  std::vector<float> node_in_w, node_out_w;      // forwarder's dL/dw: [num_in * K], [num_out * K]
  std::vector<std::uint16_t> wire_out, wire_in;  // bf16 rows on the wire (StepSchedule::wire_bf16)
};

/// The forward's results the backward needs, and the step's whole workspace.
/// Where each per-token sum lies in MoeStepState::stat_sums, after the 2E
/// per-expert ones (mean probabilities, top-k counts).
enum StatSum { kLseSquared, kTopologyLoss, kGateMass, kGateMassTopK, kEntropy, kNumStatSums };

struct MoeStepState {
  const float* x = nullptr;
  std::int64_t num_tokens = 0;
  std::int64_t global_tokens = 0;
  std::vector<MoeChunk> chunks;       // the step's token chunks, in token order
  std::vector<float> logits;          // [T, E]
  std::vector<float> shared_saved;    // [T, saved_per_row] shared-expert activations
  std::vector<float> shared_out;      // [T, H] shared expert output before gating
  std::vector<float> shared_scale;    // [T] sigmoid gate (Qwen2-MoE)
  std::vector<double> load_fraction;  // [E] f_e over all ranks (aux loss)
  // Global statistics' space: counts [E + 2 + K + 1] (loads, tokens, drops,
  // tokens by experts used), sums [2E + kNumStatSums],
  // probabilities and scores [E], top-k [K].
  std::vector<std::int64_t> stat_counts;
  std::vector<double> stat_sums;
  std::vector<float> stat_probs, stat_scores;
  std::vector<std::int32_t> stat_top;
  // Backward: dL/dlogits [T, E], the
  // shared expert's gradient and scratch, and the expert rows in the
  // one-chunk order (several chunks only) with each chunk's group cursors.
  std::vector<float> grad_logits, grad_shared, shared_scratch;
  std::vector<float> canon_in, canon_saved, canon_grad_out, canon_grad_saved;
  std::vector<std::int64_t> canon_counts, canon_next;  // [L], [C * L]

  // Noisy gating, in a step with noise: logits holds the noisy logits, and
  // these [T, E] the clean logits, x · W_noise, the draws and dL/d(x · W_noise);
  // dL/d(importance) and dL/d(load) [2E], coefficients applied.
  bool noisy = false;
  std::uint64_t noise_key = 0;
  std::vector<float> clean_logits, noise_logits, noise_eps, grad_noise;
  std::vector<double> noisy_sums, noisy_grads;

  bool forwarded = false;     // a forward ran on this state (a backward may follow)
  bool for_backward = false;  // that forward kept what a backward needs (a training context)
  bool initialized = false;
  MoeWorkspaceShape shape;  // what initialize sized it for
  bool warned_growth = false;
};

}  // namespace switchyard::layers::detail
