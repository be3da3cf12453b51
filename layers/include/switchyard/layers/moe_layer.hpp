#pragma once
// One expert-parallel MoE layer: route, plan, dispatch, experts, combine,
// unpermute (+ shared experts), forward and backward, following DESIGN.md.
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <utility>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/experts.hpp"
#include "switchyard/layers/moe_config.hpp"
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

/// What one token chunk of a step keeps, from its forward tasks to its
/// backward tasks. Buffers are reused across steps (they only grow).
struct MoeChunk {
  std::int64_t begin = 0, rows = 0;  // this rank's tokens [begin, begin + rows)
  bool routed = false;               // route ran this step (not after an earlier failure)
  RoutingPlan routing;
  DispatchPlan plan;
  std::vector<float> send;                       // [num_send, H] rows in send order; in backward dL/d(expert output)
  std::vector<float> recv;                       // [num_recv, H] rows as received / as sent back
  std::vector<float> expert_in;                  // [num_recv, H] grouped by local expert
  std::vector<float> expert_out;                 // [num_recv, H] grouped; in backward dL/d(expert output)
  std::vector<float> saved;                      // [num_recv, saved_per_row] expert activations
  std::vector<float> combined;                   // [num_send, H] expert outputs back in send order
  std::vector<float> grad_in;                    // [num_recv, H] grouped dL/d(expert input)
  std::vector<float> grad_saved;                 // [num_recv, grad_saved_per_row]
  std::vector<float> grad_w;                     // [rows * K] dL/d(routing weight)
  std::vector<std::uint16_t> wire_out, wire_in;  // bf16 rows on the wire (StepSchedule::wire_bf16)
};

/// What the backward needs from the forward. Filled by forward() when passed;
/// x must stay alive and unchanged until backward() returns.
struct MoeForwardContext {
  const float* x = nullptr;
  std::int64_t num_tokens = 0;
  std::int64_t global_tokens = 0;
  std::vector<MoeChunk> chunks;       // the step's token chunks, in token order
  std::vector<float> logits;          // [T, E]
  std::vector<float> shared_saved;    // [T, saved_per_row] shared-expert activations
  std::vector<float> shared_out;      // [T, H] shared expert output before gating
  std::vector<float> shared_scale;    // [T] sigmoid gate (Qwen2-MoE)
  std::vector<double> load_fraction;  // [E] f_e over all ranks (aux loss)

  /// Expert ids of every token's top-k slots ([T * K], token order).
  std::vector<std::int32_t> expert_idx() const;
};

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

class MoeLayer {
 public:
  /// `weights` must hold the experts `placement` gives to `rank`.
  MoeLayer(const MoeConfig& config, MoeWeights weights, const ExpertPlacement& placement, int rank,
           MoeLayerOptions options = {});
  ~MoeLayer();
  MoeLayer(MoeLayer&&) noexcept;

  /// y[T, H] = MoE(x[T, H]) for this rank's `num_tokens` rows. Collective:
  /// every rank of `comm` must call it (with its own tokens; zero is fine)
  /// with the same schedule. Phase times (busy time per kind of task) are
  /// added to `timer` if given; `ctx`, if given, keeps what backward() needs.
  /// A failure in any task is agreed across ranks: every rank throws it.
  /// With overlap, MPI must allow calls from the executor's communication
  /// thread (MPI_THREAD_SERIALIZED).
  void forward(comm::Communicator& comm, const float* x, std::int64_t num_tokens, float* y, ForwardStats* stats,
               PhaseTimer* timer = nullptr, MoeForwardContext* ctx = nullptr, const StepSchedule& schedule = {});

  /// Given dL/dy for this rank's rows, writes dL/dx and adds parameter
  /// gradients into parameters()' grad (replicated ones are this rank's
  /// partial sums; expert gradients are complete on their owner). With aux
  /// coefficients set, their gradients are included. Collective: reuses the
  /// forward's routing, plan and chunks, with the exchanges' roles swapped;
  /// the schedule's chunk count is the forward's. Weight gradients are sums
  /// over rows in one fixed order, whatever the schedule.
  void backward(comm::Communicator& comm, MoeForwardContext& ctx, const float* grad_y, float* grad_x,
                PhaseTimer* timer = nullptr, const StepSchedule& schedule = {});

  /// The step's task graph as Graphviz DOT (`backward` for the backward's).
  void dump_graph(std::ostream& out, int chunks, bool backward);

  /// DeepSeek-V3 auxiliary-loss-free balancing: bias_e += speed * sign(mean
  /// load - load_e), from the global loads of one forward. Same on every rank.
  void update_selection_bias(const ForwardStats& stats, double speed);

  /// Trainable parameters: router, shared expert(s) and gate (replicated), then
  /// this rank's experts (not replicated). Pointers stay valid for the
  /// layer's lifetime; values may be updated in place between steps.
  std::vector<Parameter*> parameters();
  std::vector<float>& selection_bias() { return selection_bias_; }
  const MoeConfig& config() const { return config_; }
  const ExpertPlacement& placement() const { return placement_; }

 private:
  struct StepGraph;
  /// y[rows] += scale · shared(x[rows]) (scale = sigmoid(x · g) when gated, else
  /// 1), keeping the shared expert's output, activations and scales.
  void add_shared_experts(const float* x, std::int64_t rows, float* y, float* out, float* saved, float* scale) const;
  StepGraph& step_graph(int chunks, bool backward);
  void build_forward(StepGraph& g, int chunks);
  void build_backward(StepGraph& g, int chunks);
  void run_step(comm::Communicator& comm, StepGraph& g, const StepSchedule& schedule, PhaseTimer* timer);
  // The pieces of a step, each on one chunk (see moe_step.cpp).
  MoeChunk* wire(MoeChunk& k) const;  // k when rows travel as bf16, else null
  void route_chunk(MoeChunk& k);
  void plan_chunk(MoeChunk& k);
  void permute_chunk(MoeChunk& k);
  std::size_t dispatch_chunk(MoeChunk& k);
  void experts_chunk(MoeChunk& k);
  std::size_t combine_chunk(MoeChunk& k);
  void unpermute_chunk(MoeChunk& k);
  void unpermute_grad_chunk(MoeChunk& k);
  std::size_t combine_grad_chunk(MoeChunk& k);
  void experts_grad_chunk(MoeChunk& k);
  std::size_t dispatch_grad_chunk(MoeChunk& k);
  void permute_grad_chunk(MoeChunk& k);
  void expert_weight_grads();
  void router_and_shared_grads();
  void global_stats(comm::Communicator& comm, MoeForwardContext& c, ForwardStats* stats);

  // What the running step's tasks work on.
  struct Step {
    comm::Communicator* comm = nullptr;
    MoeForwardContext* ctx = nullptr;
    float* y = nullptr;
    const float* grad_y = nullptr;
    float* grad_x = nullptr;
    bool wire_bf16 = false;
  };

  MoeConfig config_;
  RouterConfig router_;
  ExpertPlacement placement_;
  MoeLayerOptions options_;
  std::vector<float> selection_bias_;
  Parameter router_weight_;
  std::unique_ptr<kernels::Linear> router_linear_;
  std::unique_ptr<ExpertBackend> experts_;
  std::unique_ptr<GatedMlp> shared_;
  Parameter shared_gate_;  // [1, H], empty unless gated
  Step step_;
  std::map<std::pair<int, bool>, std::unique_ptr<StepGraph>> graphs_;  // by (chunks, backward), built once
  MoeForwardContext inference_ctx_;                                    // reused when the caller keeps no context
  // Backward scratch, reused: dL/dlogits [T, E], ones for the dispatch
  // gradient's sum, and the expert rows in the one-chunk order.
  std::vector<float> grad_logits_, ones_, grad_shared_, shared_scratch_;
  std::vector<float> canon_in_, canon_saved_, canon_grad_out_, canon_grad_saved_;
};

}  // namespace switchyard::layers
