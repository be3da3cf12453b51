#pragma once
// The set-up of multi-rank layer tests: a random checkpoint written for this
// rank and the MoE layer that holds this rank's experts of one of its layers.
#include <filesystem>
#include <string>
#include <utility>

#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/formats/random_checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"

namespace switchyard::test_support {

/// Writes `spec` as a random checkpoint in the directory `path` (one per
/// rank: each rank reads its own copy, as on nodes without a shared disk)
/// and builds the MoE layer of its layer `layer_index` (-1: the last) with
/// rank `rank`'s experts of `ranks`. Removes the checkpoint when destroyed.
struct RankLayer {
  RankLayer(std::string dir, const formats::RandomMoeSpec& spec, int ranks, int rank,
            layers::MoeLayerOptions options = {}, int layer_index = -1)
      : path((formats::write_random_moe_checkpoint(spec, dir), std::move(dir))),
        config(formats::load_model_config(path)),
        checkpoint(path),
        placement(config.num_experts, ranks),
        layer(formats::moe_config(config),
              formats::load_moe_weights(checkpoint, config, layer_index < 0 ? spec.layers - 1 : layer_index,
                                        placement.first_expert(rank), placement.num_local(rank)),
              placement, rank, std::move(options)) {}
  ~RankLayer() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  RankLayer(const RankLayer&) = delete;
  RankLayer& operator=(const RankLayer&) = delete;

  std::string path;
  formats::ModelConfig config;
  formats::Checkpoint checkpoint;  // the layer may read its weights from the mapped files
  layers::ExpertPlacement placement;
  layers::MoeLayer layer;
};

}  // namespace switchyard::test_support
