#pragma once
// One expert-parallel MoE layer: route, plan, dispatch, experts, combine,
// unpermute (+ shared experts), forward and backward, following DESIGN.md.
// The operator protocol (docs/operator-protocol.md): arguments struct ->
// can_implement -> workspace_size -> initialize (collective) -> run.
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/kernels/matmul.hpp"
#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/experts.hpp"
#include "switchyard/layers/moe_arguments.hpp"
#include "switchyard/layers/moe_config.hpp"
#include "switchyard/layers/moe_context.hpp"
#include "switchyard/layers/moe_weights.hpp"
#include "switchyard/layers/noisy_gating.hpp"
#include "switchyard/layers/router.hpp"
#include "switchyard/runtime/parameter.hpp"

namespace switchyard::layers {

namespace detail {
struct MoeChunk;
}

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
  // The topology loss (docs/topology.md): mean_t sum_e p_te * c_e, the
  // modelled link cost of the router's softmax distribution from each
  // token's rank (c = RouterConfig::link_cost, which it needs). It moves
  // probability toward cheap links, and the selection with it.
  double topology_loss_coef = 0.0;
  // The mean entropy of the router's softmax probabilities, -sum_e p_e log p_e
  // (the "dynamic loss" of top-p routing, Huang et al. 2024): it sharpens
  // the distribution, so a top-p router reaches its mass with fewer experts.
  double entropy_loss_coef = 0.0;
  // Noisy top-k gating (noisy_gating.hpp): learned Gaussian noise on the
  // router logits in steps that ask for it (MoeForwardArguments::gating_noise),
  // with the importance and load losses.
  NoisyGating noisy_gating{};
  // Flat or hierarchical, and the node of each rank (empty: one node, flat).
  // A token's partial results from several ranks are summed node by node,
  // so that both kinds give the same bits.
  ExchangeLayout exchange{};
};

class MoeLayer {
 public:
  /// `weights` must hold the experts `placement` gives to `rank`.
  MoeLayer(const MoeConfig& config, MoeWeights weights, const ExpertPlacement& placement, int rank,
           MoeLayerOptions options = {});
  ~MoeLayer();
  MoeLayer(MoeLayer&&) noexcept;

  /// What is wrong with `args` (local, not collective), naming the
  /// argument; ok() when run() can take them.
  ArgumentCheck can_implement(const MoeForwardArguments& args) const;
  ArgumentCheck can_implement(const MoeBackwardArguments& args) const;

  /// Bytes of workspace this rank needs for `shape` when the ranks of the
  /// job pass at most `tokens_per_rank[r]` tokens each ([R]): every buffer
  /// sized for the worst routing (all of a rank's slots on this rank's
  /// experts, or the capacity). Pages are touched only as steps use them.
  std::size_t workspace_size(const MoeWorkspaceShape& shape, const std::vector<std::int64_t>& tokens_per_rank) const;

  /// Sizes the workspace of `context` (null: the layer's own, for inference
  /// calls) for `shape`. Collective: every rank calls it, with its own
  /// max_tokens and the same chunks. Throws Error(kInvalidArgument) naming
  /// the field of `shape` that is wrong.
  void initialize(comm::Communicator& comm, const MoeWorkspaceShape& shape, MoeForwardContext* context = nullptr);

  /// Runs a forward. Collective: every rank of `comm` calls it (with its own
  /// tokens; zero is fine) with the same schedule. Allocates nothing when the
  /// call fits the shape its workspace was initialized for; a call that does
  /// not fit grows the buffers (logged once per workspace). Throws
  /// Error(kInvalidArgument) with can_implement's message, and before
  /// initialize(). A failure in any task is agreed across ranks: every rank
  /// throws it. With overlap, MPI must allow calls from the executor's
  /// communication thread (MPI_THREAD_SERIALIZED).
  void run(comm::Communicator& comm, const MoeForwardArguments& args);

  /// Runs a backward: writes dL/dx and adds parameter gradients into
  /// parameters()' grad (replicated ones are this rank's partial sums;
  /// expert gradients are complete on their owner). With aux coefficients
  /// set, their gradients are included. Collective: reuses the forward's
  /// routing, plan and chunks, with the exchanges' roles swapped. Weight
  /// gradients are sums over rows in one fixed order, whatever the schedule.
  void run(comm::Communicator& comm, const MoeBackwardArguments& args);

  /// The step's task graph as Graphviz DOT (`backward` for the backward's).
  void dump_graph(std::ostream& out, int chunks, bool backward);

  /// DeepSeek-V3 auxiliary-loss-free balancing: bias_e += speed * sign(mean
  /// load - load_e), from the global loads of one forward. Same on every rank.
  void update_selection_bias(const ForwardStats& stats, double speed);

  /// Trainable parameters: router, shared expert(s) and gate (replicated), then
  /// this rank's experts (not replicated). Pointers stay valid for the
  /// layer's lifetime; values may be updated in place between steps.
  std::vector<Parameter*> parameters();
  /// parameters() without the copies of replicated experts that another
  /// rank owns (ExpertPlacement::owner): over the job, every parameter once.
  std::vector<Parameter*> reported_parameters();
  /// The last forward's exchanges and expert rows on this rank: those of
  /// `context`, or of the layer's own inference workspace when null. Not
  /// collective.
  StepTraffic traffic(const MoeForwardContext* context = nullptr) const;
  std::vector<float>& selection_bias() { return selection_bias_; }
  const MoeConfig& config() const { return config_; }
  const ExpertPlacement& placement() const { return placement_; }
  /// How this layer exchanges (flat without nodes).
  ExchangeKind exchange_kind() const {
    return options_.exchange.hierarchical() ? ExchangeKind::kHierarchical : ExchangeKind::kFlat;
  }

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
  detail::MoeChunk* wire(detail::MoeChunk& k) const;  // k when rows travel as bf16, else null
  bool round_node_sums(const detail::MoeChunk& k) const;
  void route_chunk(detail::MoeChunk& k);
  void plan_chunk(detail::MoeChunk& k);
  void permute_chunk(detail::MoeChunk& k);
  std::size_t dispatch_chunk(detail::MoeChunk& k);
  void experts_chunk(detail::MoeChunk& k);
  std::size_t combine_chunk(detail::MoeChunk& k);
  void unpermute_chunk(detail::MoeChunk& k);
  void unpermute_grad_chunk(detail::MoeChunk& k);
  std::size_t combine_grad_chunk(detail::MoeChunk& k);
  void experts_grad_chunk(detail::MoeChunk& k);
  void scaled_input_grads(detail::MoeChunk& k);
  std::size_t dispatch_grad_chunk(detail::MoeChunk& k);
  void permute_grad_chunk(detail::MoeChunk& k);
  void expert_weight_grads();
  void router_and_shared_grads();
  void noisy_route(detail::MoeChunk& k, float* logits);
  void noisy_stats(comm::Communicator& comm, detail::MoeStepState& c);
  void noisy_importance_grads(detail::MoeChunk& k);
  void noisy_load_grads(detail::MoeChunk& k);
  void sum_replica_grads(comm::Communicator& comm, std::vector<float>& before);
  void global_stats(comm::Communicator& comm, detail::MoeStepState& c, ForwardStats* stats);
  void token_stat_sums(detail::MoeStepState& c) const;
  detail::MoeStepState& state_of(MoeForwardContext* context);
  void split_into_chunks(detail::MoeStepState& c, std::int64_t num_tokens, int chunks) const;

  // What the running step's tasks work on.
  struct Step {
    comm::Communicator* comm = nullptr;
    detail::MoeStepState* ctx = nullptr;
    float* y = nullptr;
    const float* grad_y = nullptr;
    float* grad_x = nullptr;
    bool wire_bf16 = false;
    std::string failure;  // can_implement's message: the step runs empty, then every rank throws it
  };

  MoeConfig config_;
  RouterConfig router_;
  ExpertPlacement placement_;
  int rank_;
  MoeLayerOptions options_;
  std::vector<float> selection_bias_;
  Parameter router_weight_;
  std::unique_ptr<kernels::Linear> router_linear_;
  Parameter router_noise_;  // [E, H] noisy gating's W_noise, empty without it
  std::unique_ptr<kernels::Linear> noise_linear_;
  std::unique_ptr<ExpertBackend> experts_;
  std::unique_ptr<GatedMlp> shared_;
  Parameter shared_gate_;  // [1, H], empty unless gated
  Step step_;
  std::map<std::pair<int, bool>, std::unique_ptr<StepGraph>> graphs_;  // by (chunks, backward), built once
  MoeForwardContext inference_ctx_;                                    // inference calls' workspace
};

}  // namespace switchyard::layers
