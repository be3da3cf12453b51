#pragma once
// Gradients of one MoE layer under the checkpoint's own tensor names.
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"

namespace switchyard::launch {

/// A named float32 tensor that owns its data.
struct NamedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

/// Collects the gradients of `layer` after backward(): all-reduces the
/// replicated ones (router, shared experts, shared gate) and gathers every
/// expert's gradient to rank 0, then names and shapes them as `names` says
/// (per-expert or fused, as the checkpoint stores them). Collective; the
/// result is filled on rank 0 only. The selection bias is not trained by
/// gradient and is not included.
std::vector<NamedTensor> collect_layer_gradients(comm::Communicator& comm, layers::MoeLayer& layer,
                                                 const formats::MoeTensorNames& names);

}  // namespace switchyard::launch
