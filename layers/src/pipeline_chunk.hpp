#pragma once
// Private: what one token chunk of MoeLayer::forward_pipelined owns. Kept by
// the layer between calls so the buffers are reused, not reallocated.
#include <cstdint>
#include <vector>

#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/router.hpp"

namespace switchyard::layers {

struct PipelineChunk {
  std::int64_t begin = 0, rows = 0;
  std::vector<float> logits, send, recv, grouped, grouped_out, combined, saved, shared_out, shared_saved, shared_scale;
  RoutingPlan routing;
  DispatchPlan plan;
};

}  // namespace switchyard::layers
