#pragma once
// The JSON configuration of `switchyard train`: data, model, optimizer,
// schedule and run settings, validated once with one-line errors that name
// the file and the field.
#include <cstdint>
#include <string>

#include "switchyard/formats/model_config.hpp"
#include "switchyard/layers/topology_routing.hpp"
#include "switchyard/train/optimizer.hpp"

namespace switchyard::train {

struct TrainConfig {
  std::string source;  // where it came from, for messages

  // "data"
  std::string data_dir = "/usr/share/games/fortunes";
  double val_fraction = 0.1;
  std::int64_t min_bytes = 1000000;

  // "model": router kind and sizes, as a Hugging Face-style formats::ModelConfig
  // assembled from the fields and parsed by formats::parse_model_config, so every
  // architecture's routing is available.
  formats::ModelConfig model;
  std::int64_t context = 16;    // characters of context
  std::int64_t embed_dim = 16;  // embedding width per character
  double capacity_factor = 0.0;
  std::string dtype = "f32";  // "model.dtype": expert GEMMs in f32, or bf16 (float32 master weights)
  std::string model_json;     // the "model" object as given (compact), kept in checkpoints
  // "model.router": "top-k" (top_k experts per token), "top-p" (experts
  // until their probability reaches "model.top_p", at most top_k of them) or
  // "noisy-top-k" (learned Gaussian noise on the logits in training, with
  // importance_loss_coef and load_loss_coef).
  std::string router = "top-k";
  double top_p = 0.0;

  OptimizerConfig optimizer;  // "optimizer" + "schedule"; total_steps = steps
  double grad_clip = 1.0;     // global L2 norm; 0 disables

  std::int64_t batch_tokens = 256;  // examples per rank and step
  std::int64_t steps = 1000;
  std::uint64_t seed = 0;
  std::int64_t log_interval = 10;
  std::int64_t eval_interval = 0;      // 0: only the final evaluation
  std::int64_t eval_tokens = 8192;     // held-out characters per periodic evaluation
  std::int64_t final_eval_tokens = 0;  // 0: all held-out text
  double aux_loss_coef = 0.0;
  double z_loss_coef = 0.0;
  double entropy_loss_coef = 0.0;  // mean router entropy (layers::MoeLayerOptions::entropy_loss_coef)
  double importance_loss_coef = 0.0, load_loss_coef = 0.0;  // noisy-top-k's losses (layers::NoisyGating)
  double bias_update_speed = 0.0;                           // DeepSeek-V3 auxiliary-loss-free balancing

  // "routing": topology-aware routing of every block (docs/topology.md):
  // max_nodes (0: no limit), node_score_experts, link_penalty.
  layers::TopologyRouting routing;

  std::string text;  // the whole configuration, re-serialised
};

/// Parses configuration JSON; `source` names it in messages. Throws
/// Error(kInvalidArgument) "SOURCE: field 'a.b' ..." for a missing required
/// field, an unknown field, a wrong type or an out-of-range value.
TrainConfig parse_train_config(const std::string& json_text, const std::string& source);

/// Throws Error(kInvalidArgument) if the router choice (top-p, noisy-top-k)
/// and its loss coefficients do not fit the model's router and routing. Not
/// part of parsing, so that command-line overrides apply first; the trainer
/// calls it.
void check_router(const TrainConfig& c);

/// Reads and parses the file at `path`.
TrainConfig load_train_config(const std::string& path);

}  // namespace switchyard::train
