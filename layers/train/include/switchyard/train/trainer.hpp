#pragma once
// Data-parallel tokens, expert-parallel experts: the training loop of the
// character language model. Every rank draws its own batch; the loss is the
// mean over all ranks' tokens; replicated gradients are all-reduced, expert
// gradients stay with their owner.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/train/char_lm.hpp"
#include "switchyard/train/optimizer.hpp"
#include "switchyard/train/text_corpus.hpp"
#include "switchyard/train/train_config.hpp"

namespace switchyard::train {

/// What one optimizer step saw (same on every rank).
struct StepReport {
  std::int64_t step = 0;       // steps done, including this one
  double loss = 0.0;           // mean cross-entropy over all ranks' tokens, nats per character
  double aux_loss = 0.0;       // sum over blocks of aux_loss_coef * aux + z_loss_coef * z + topology loss * its coef
  double topology_loss = 0.0;  // sum over blocks of the unscaled topology loss (0 without it)
  double lr = 0.0;
  double grad_norm = 0.0;                              // before clipping
  std::int64_t tokens = 0;                             // all ranks
  std::vector<double> load_imbalance;                  // per block: max / mean expert load
  std::vector<std::vector<std::int64_t>> expert_load;  // per block, per expert
  std::vector<double> experts_per_token;               // per block: mean experts per token (top_k unless top-p)
  std::vector<std::int64_t> experts_histogram;         // [top_k + 1] tokens by experts used, summed over blocks
  std::vector<layers::StepTraffic> traffic;            // per block: this rank's exchanges (forward)
};

/// How experts divide the held-out text.
struct ExpertSpecialisation {
  std::int64_t block = 0, expert = 0;
  double token_share = 0.0;  // share of all routed slots of this block
  struct Input {
    std::int32_t token = 0;
    std::int64_t count = 0;    // tokens this expert serves whose input (last context) character is `token`
    double share_of_char = 0;  // that count over all tokens with that input character (1: it serves all)
  };
  std::vector<Input> top_inputs;  // most served input characters, most first
};

struct EvalResult {
  double loss = 0.0;  // mean over the evaluated held-out characters
  std::int64_t tokens = 0;
  // Over every block: the share of the router's unconstrained top-k gate
  // mass that the routing kept (layers::ForwardStats::gate_mass_kept()).
  double gate_mass_kept = 1.0;
  std::vector<std::int64_t> experts_histogram;  // [top_k + 1] tokens by experts used, summed over blocks
  layers::StepTraffic traffic;                  // this rank's dispatch rows to each rank, over every block and chunk
  std::vector<ExpertSpecialisation> experts;    // when asked for
};

/// The job as topology-aware routing (TrainConfig::routing) sees it.
struct TrainTopology {
  std::optional<comm::Topology> topology;  // none: every rank on one node, no link costs
  bool wire_bf16 = false;                  // rows cross the links as bf16: the link penalty prices such rows
  layers::ExchangeKind exchange = layers::ExchangeKind::kFlat;  // hierarchical needs the topology
  // Expert placement per block (empty: contiguous blocks of experts for every block).
  std::vector<layers::ExpertPlacement> placements{};
};

class Trainer {
 public:
  /// Loads the corpus and builds the model (seeded), every block routed as
  /// `config.routing` on `where`, and the optimizer. Throws
  /// Error(kInvalidArgument) naming the field for a configuration that does
  /// not fit the corpus or rank count, and layers::apply_topology_routing's
  /// error (naming max_nodes, node_score_experts or the link penalty) for
  /// routing that does not fit the topology. Not collective.
  Trainer(const TrainConfig& config, comm::Communicator& comm, const TrainTopology& where = {});
  ~Trainer();

  /// One optimizer step: sample, forward/backward, all-reduce, clip, update,
  /// selection-bias update. Collective.
  StepReport train_step();

  /// Loss on held-out text: `max_tokens` evenly spaced characters (0: all),
  /// split over ranks. With `specialisation`, also how experts divide them
  /// (top `top_inputs` input characters each). Collective.
  EvalResult evaluate(std::int64_t max_tokens, bool specialisation, int top_inputs = 5);

  /// Checkpoints (see train_checkpoint.hpp). save is collective with agreed
  /// errors; resume is not collective (wrap it in an agreed step).
  void save(const std::string& dir);
  void resume(const std::string& dir);

  std::int64_t step() const { return step_; }
  const TrainConfig& config() const { return config_; }
  const TextCorpus& corpus() const { return corpus_; }
  CharLm& model() { return *model_; }
  Optimizer& optimizer() { return *optimizer_; }

 private:
  TrainConfig config_;
  comm::Communicator& comm_;
  TextCorpus corpus_;
  std::vector<layers::ExpertPlacement> placements_;  // per block, or one for all
  std::unique_ptr<CharLm> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::int64_t step_ = 0;
};

}  // namespace switchyard::train
