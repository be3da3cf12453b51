#pragma once
// Gradients of one MoE layer under the checkpoint's own tensor names: the
// collective glue around formats::name_layer_gradients. Every name, shape and
// slice comes from formats (moe_checkpoint.hpp); this file only moves
// gradients between ranks, by the parameters' own names and shapes.
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"

namespace switchyard::launch {

using formats::NamedTensor;

/// Collects the gradients of `layer` after backward(): all-reduces the
/// replicated ones (router, shared experts, shared gate), gathers every
/// other parameter's gradient (the experts') to rank 0 with its name and
/// shape, and has formats name them as `names` says (per-expert or fused, as
/// the checkpoint stores them). Collective and blocking; the result is filled
/// on rank 0 only. The selection bias is not trained by gradient and is not
/// included.
std::vector<NamedTensor> collect_layer_gradients(comm::Communicator& comm, layers::MoeLayer& layer,
                                                 const formats::MoeTensorNames& names);

}  // namespace switchyard::launch
