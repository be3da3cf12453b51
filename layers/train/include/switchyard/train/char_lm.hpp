#pragma once
// A small character-level language model around expert-parallel MoE blocks:
// embeddings of the C previous characters (concatenated) -> linear to hidden
// H -> N blocks h = h + MoE(RMSNorm(h)) -> RMSNorm -> linear to the
// vocabulary -> softmax cross-entropy on the next character.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/formats/model_config.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/layers/topology_routing.hpp"
#include "switchyard/runtime/parameter.hpp"

namespace switchyard::train {

struct CharLmConfig {
  formats::ModelConfig moe;  // hidden_size, experts, routing; num_layers is the number of blocks
  std::int64_t vocab_size = 0;
  std::int64_t context = 0;    // characters of context
  std::int64_t embed_dim = 0;  // embedding width per character
  double rms_eps = 1e-6;
  std::uint64_t seed = 0;  // initial weights
  layers::MoeLayerOptions moe_options;
  float top_p = 0.0f;  // top-p routing with moe.top_k experts at most (layers::RouterConfig::top_p); 0: top-k
  // Topology-aware routing of every block (layers::apply_topology_routing)
  // on `topology`'s nodes and link costs, pricing rows of `row_bytes` on the
  // wire. Without a topology every rank is on one node, with no link costs.
  layers::TopologyRouting routing;
  std::optional<comm::Topology> topology;
  layers::ExchangeKind exchange = layers::ExchangeKind::kFlat;  // how the blocks exchange tokens
  std::int64_t row_bytes = 0;                                   // 0: float32 rows of moe.hidden_size
};

/// A parameter with its checkpoint name (unique across the model and ranks:
/// expert tensors carry their global expert index).
struct NamedParameter {
  std::string name;
  Parameter* param = nullptr;
  bool saved = true;  // false for a copy of a replicated expert that another rank owns (and saves)
};

/// What one batch saw: this rank's summed loss and every block's global stats.
struct BatchResult {
  double loss_sum = 0.0;                     // sum of this rank's cross-entropies, nats
  std::vector<layers::ForwardStats> stats;   // one per block, summed over ranks
  std::vector<layers::StepTraffic> traffic;  // one per block: this rank's exchanges
  // Per block, when asked for: each local token's chosen experts ([T * top_k]).
  std::vector<std::vector<std::int32_t>> expert_idx;
};

class CharLm {
 public:
  /// Builds the model with seeded initial weights. Every weight is drawn from
  /// a stream keyed by (seed, tensor name, global expert index), so the model
  /// is the same for any rank count. Throws Error(kInvalidArgument) from
  /// layers::apply_topology_routing when `config.routing` does not fit the
  /// topology. `placements`: one per block, or one for every block. Not
  /// collective.
  CharLm(const CharLmConfig& config, const std::vector<layers::ExpertPlacement>& placements, int rank);
  ~CharLm();

  /// All trainable parameters of this rank: replicated dense ones, then per
  /// block its MoE's (router, shared experts, this rank's experts).
  const std::vector<NamedParameter>& parameters() const { return params_; }
  std::vector<Parameter*> parameter_ptrs() const;
  void zero_grad();

  /// Forward and backward over this rank's `T` examples (`contexts` [T, C],
  /// `targets` [T]): adds `grad_scale` * d(sum of cross-entropies)/dθ, plus
  /// the MoE auxiliary-loss gradients, into the parameters' grad. Collective.
  /// `step` keys a noisy router's noise (MoeLayerOptions::noisy_gating).
  BatchResult forward_backward(comm::Communicator& comm, const std::int32_t* contexts, const std::int32_t* targets,
                               std::int64_t T, float grad_scale, std::uint64_t step = 0);

  /// Forward only. With `keep_routing`, fills BatchResult::expert_idx.
  /// Collective (every rank calls it, with zero examples if it has none).
  BatchResult evaluate(comm::Communicator& comm, const std::int32_t* contexts, const std::int32_t* targets,
                       std::int64_t T, bool keep_routing);

  /// How every MoE block's steps are cut and run (default: one chunk, in sequence).
  void set_schedule(const layers::StepSchedule& schedule) { schedule_ = schedule; }

  std::int64_t num_blocks() const { return static_cast<std::int64_t>(blocks_.size()); }
  layers::MoeLayer& moe(std::int64_t block) { return *blocks_[static_cast<std::size_t>(block)].moe; }
  const CharLmConfig& config() const { return config_; }

 private:
  struct Block {
    Parameter norm;
    std::unique_ptr<layers::MoeLayer> moe;
  };
  // Runs the model on T examples; keeps activations in `acts` for backward.
  struct Activations;
  // `noise_step`: a training step's key for noisy routers; null: no noise.
  double forward(comm::Communicator& comm, const std::int32_t* contexts, const std::int32_t* targets, std::int64_t T,
                 float grad_scale, Activations* acts, BatchResult* result, const std::uint64_t* noise_step);

  CharLmConfig config_;
  Parameter embed_, in_proj_, in_bias_, final_norm_, head_, head_bias_;
  std::vector<Block> blocks_;
  std::vector<NamedParameter> params_;
  layers::StepSchedule schedule_;
};

}  // namespace switchyard::train
