#pragma once
// What a forward keeps for its backward, and the workspace both run in.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace switchyard::layers {

namespace detail {
struct MoeStepState;
}

/// Rows one step moved and computed on this rank, summed over its chunks.
struct StepTraffic {
  // [R] rows this rank sent to each rank (dispatch): one per token and rank
  // (flat) or node (hierarchical, with the rows it forwarded in its node)
  std::vector<std::int64_t> send_rows;
  std::vector<std::int64_t> send_slots;  // [R] kept slots this rank sent to each rank (a per-slot exchange's rows)
  std::vector<std::int64_t> recv_rows;   // [R] rows this rank received from each rank (both hops)
  std::vector<std::int64_t> local_expert_rows;  // [num_local] rows each local expert computed
  std::vector<std::int64_t> expert_slots;       // [E] this rank's routed slots per expert (before capacity drops)

  /// Adds `other` element by element (a shorter vector grows with zeros):
  /// the traffic of several chunks, blocks or steps.
  StepTraffic& operator+=(const StepTraffic& other);
};

/// The routing handle of one forward: its routing, exchange plans and
/// activations, which the backward reuses, and the workspace they live in
/// (sized by MoeLayer::initialize). Move-only. Not thread-safe: one call at
/// a time.
class MoeForwardContext {
 public:
  MoeForwardContext();
  ~MoeForwardContext();
  MoeForwardContext(MoeForwardContext&&) noexcept;
  MoeForwardContext& operator=(MoeForwardContext&&) noexcept;

  /// This rank's tokens in the last forward.
  std::int64_t num_tokens() const;
  /// Expert ids and routing weights of every token's top-k slots
  /// ([T * K], token order) in the last forward; a top-p token's unused
  /// slots hold expert -1 and weight 0 (RoutingPlan).
  std::vector<std::int32_t> expert_idx() const;
  std::vector<float> routing_weights() const;
  /// The last forward's exchanges and expert rows on this rank.
  StepTraffic traffic() const;
  /// Bytes reserved for the step's buffers (what initialize sized).
  std::size_t workspace_bytes() const;

 private:
  friend class MoeLayer;
  std::unique_ptr<detail::MoeStepState> state_;
};

}  // namespace switchyard::layers
