#pragma once
// One expert-parallel MoE layer: route, plan, dispatch, experts, combine,
// unpermute (+ shared experts), forward and backward, following DESIGN.md.
#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/experts.hpp"
#include "switchyard/layers/moe_weights.hpp"
#include "switchyard/layers/router.hpp"
#include "switchyard/runtime/parameter.hpp"
#include "switchyard/runtime/phase_timer.hpp"
#include "switchyard/runtime/task_graph.hpp"

namespace switchyard::layers {

struct MoeLayerOptions {
  CapacityPolicy capacity{};
  ExpertBackendOptions experts{};  // device, inference-only prepacking, bf16
  // Auxiliary losses, added to the training loss with these coefficients:
  // the Switch/GShard load-balancing loss E * sum_e f_e * P_e exactly as
  // transformers' load_balancing_loss_func computes it (P the mean softmax
  // probability of the router logits, f the fraction of top-k slots of those
  // same softmax probabilities, both over all ranks' tokens; for sigmoid
  // routers f therefore ignores the selection bias and groups) and the router
  // z-loss mean_t logsumexp(logits_t)^2.
  double aux_loss_coef = 0.0;
  double z_loss_coef = 0.0;
};

/// What one forward call saw, summed over all ranks.
struct ForwardStats {
  std::int64_t num_tokens = 0;            // all ranks
  std::vector<std::int64_t> expert_load;  // [E] slots routed to each expert
  std::int64_t num_dropped = 0;           // slots dropped by capacity
  double aux_loss = 0.0;                  // unscaled load-balancing loss (same on every rank)
  double z_loss = 0.0;                    // unscaled router z-loss (same on every rank)
};

/// What the backward needs from the forward. Filled by forward() when passed;
/// x must stay alive and unchanged until backward() returns.
struct MoeForwardContext {
  const float* x = nullptr;
  std::int64_t num_tokens = 0;
  std::int64_t global_tokens = 0;
  RoutingPlan routing;
  DispatchPlan plan;
  std::vector<float> logits;          // [T, E]
  std::vector<float> expert_in;       // [num_recv, H] grouped by local expert
  std::vector<float> expert_saved;    // activations the experts keep for backward
  std::vector<float> combined;        // [num_send, H] expert outputs back in send order
  std::vector<float> shared_saved;    // shared-expert activations
  std::vector<float> shared_out;      // [T, H] shared expert output before gating
  std::vector<float> shared_scale;    // [T] sigmoid gate (Qwen2-MoE)
  std::vector<double> load_fraction;  // [E] f_e over all ranks (aux loss)
};

/// How forward_pipelined cuts and schedules a step.
struct PipelineOptions {
  int chunks = 1;  // contiguous token chunks, each routed, exchanged and computed as its own piece
  // On: the pieces run as a task graph on `executor` (communication on its
  // ordered comm thread, compute on its workers), so chunk c+1's dispatch
  // and chunk c-1's combine overlap chunk c's experts. Off: the same pieces
  // strictly in sequence on the calling thread.
  bool overlap = false;
  Executor* executor = nullptr;  // required when overlap is on
};

struct PipelineChunk;

class MoeLayer {
 public:
  /// `weights` must hold the experts `placement` gives to `rank`.
  MoeLayer(const ModelConfig& config, MoeWeights weights, const ExpertPlacement& placement, int rank,
           MoeLayerOptions options = {});
  ~MoeLayer();
  MoeLayer(MoeLayer&&) noexcept;

  /// y[T, H] = MoE(x[T, H]) for this rank's `num_tokens` rows. Collective:
  /// every rank of `comm` must call it (with its own tokens; zero is fine).
  /// Phase times are added to `timer` if given; `ctx`, if given, keeps what
  /// backward() needs.
  void forward(comm::Communicator& comm, const float* x, std::int64_t num_tokens, float* y, ForwardStats* stats,
               PhaseTimer* timer = nullptr, MoeForwardContext* ctx = nullptr);

  /// Inference forward cut into token chunks (see PipelineOptions). Same
  /// result as forward() up to the GEMM's row-batching; fills stats'
  /// num_tokens, expert_load and num_dropped (not the aux losses). Collective;
  /// with overlap, MPI must allow calls from the executor's comm thread
  /// (MPI_THREAD_SERIALIZED). Phase times are not split by chunk.
  void forward_pipelined(comm::Communicator& comm, const float* x, std::int64_t num_tokens, float* y,
                         ForwardStats* stats, const PipelineOptions& options);

  /// Given dL/dy for this rank's rows, writes dL/dx and adds parameter
  /// gradients into parameters()' grad (replicated ones are this rank's
  /// partial sums; expert gradients are complete on their owner). With aux
  /// coefficients set, their gradients are included. Collective: reuses the
  /// forward's routing and dispatch plan, with the exchanges' roles swapped.
  void backward(comm::Communicator& comm, const MoeForwardContext& ctx, const float* grad_y, float* grad_x,
                PhaseTimer* timer = nullptr);

  /// DeepSeek-V3 auxiliary-loss-free balancing: bias_e += speed * sign(mean
  /// load - load_e), from the global loads of one forward. Same on every rank.
  void update_selection_bias(const ForwardStats& stats, double speed);

  /// Trainable parameters: router, shared expert(s) and gate (replicated), then
  /// this rank's experts (not replicated). Pointers stay valid for the
  /// layer's lifetime; values may be updated in place between steps.
  std::vector<Parameter*> parameters();
  std::vector<float>& selection_bias() { return selection_bias_; }
  const ModelConfig& config() const { return config_; }
  const ExpertPlacement& placement() const { return placement_; }
  std::int64_t first_local_expert() const { return first_expert_; }

 private:
  enum class Buffer { kSend, kRecv, kGroupedOut, kGroupedGrad, kCount };
  /// y[rows] += scale · shared(x[rows]) (scale = sigmoid(x · g) when gated, else
  /// 1), keeping the shared expert's output, activations and scales.
  void add_shared_experts(const float* x, std::int64_t rows, float* y, std::vector<float>* out,
                          std::vector<float>* saved, std::vector<float>* scale) const;
  /// A reusable buffer of at least `floats` floats (grows, never shrinks).
  std::vector<float>& buffer(Buffer which, std::int64_t floats);

  ModelConfig config_;
  RouterConfig router_;
  ExpertPlacement placement_;
  MoeLayerOptions options_;
  std::int64_t first_expert_ = 0;
  std::vector<float> selection_bias_;
  Parameter router_weight_;
  std::unique_ptr<kernels::Linear> router_linear_;
  std::unique_ptr<ExpertBackend> experts_;
  std::unique_ptr<GatedMlp> shared_;
  Parameter shared_gate_;  // [1, H], empty unless gated
  std::vector<float> buffers_[static_cast<std::size_t>(Buffer::kCount)];
  MoeForwardContext inference_ctx_;                       // reused when the caller keeps no context
  std::vector<std::unique_ptr<PipelineChunk>> pipeline_;  // forward_pipelined's chunks, reused
};

}  // namespace switchyard::layers
